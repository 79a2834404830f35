"""The benchmark scripts run end to end in their tiny CPU form (smoke only; nothing is timed)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["train_throughput.py", "eval_time.py"])
def test_benchmark_tiny_form_runs(script):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--tiny"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "seed" in done.stdout
    if script == "train_throughput.py":
        assert sum(line.startswith("| q20") for line in done.stdout.splitlines()) == 4
