"""The service benchmarks run end to end in a short form (smoke only; their numbers are not checked)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.services, pytest.mark.usefixtures("postgres_admin", "redis_url")]  # skip without them


@pytest.mark.parametrize(
    ("script", "args", "last_line"),
    [
        ("api_load.py", ["--tiny"], "| POST /jobs | 2 |"),
        ("abuse.py", ["--tiny"], "5xx answers: 0"),
        ("faults.py", ["--repeat", "1", "--fault", "flush-redis"], "1 fault(s) injected, 0 thing(s) lost"),
    ],
)
def test_service_benchmark_short_form_runs(script: str, args: list[str], last_line: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith(last_line), done.stdout[-2000:]
