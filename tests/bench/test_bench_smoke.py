"""The benchmark scripts run end to end in their tiny CPU form (smoke only; nothing is timed)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _device_check(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "bench" / "device_check.sh"), "--cpu-smoke"],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        env={**os.environ, "OUT": str(out), "PYTHON": sys.executable, **env},
    )


def test_device_check_smoke_runs_every_part_and_keeps_a_summary(tmp_path):
    done = _device_check(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (tmp_path / "summary.md").read_text()
    assert summary.strip().endswith(f"0 part(s) failed or skipped; all output in {tmp_path}/summary.md")
    for part in ("environment", "throughput", "eval_time", "profile", "profile_compiled", "precision_tf32"):
        assert f"## {part} (limit" in summary and (tmp_path / f"{part}.log").exists()
    assert "device: cpu (" in summary  # the device beside the numbers
    assert "| S=2 eager | S=2 reuse | S=2 compiled |" in summary  # eager against both optimised engines
    assert sum(line.startswith(("| q100 |", "| q204s |")) for line in summary.splitlines()) == 2  # throughput rows
    assert "evaluation (ID + OOD held-out sets): 1 seed" in summary
    assert "# step profile — cpu (" in summary and "| `aten::" in summary
    assert "engine reuse, 2 steps" in summary and "engine compiled, 2 steps" in summary
    assert "steps reached: q100_denoise_only 60, q204s_full_stable 60" in summary


def test_device_check_keeps_what_it_measured_when_a_part_hangs(tmp_path):
    """A Python whose throughput benchmark never ends: that part times out, the parts after it are skipped
    when the budget is spent, and what came before stays in the summary."""
    hanging = tmp_path / "python"
    hanging.write_text(
        f'#!/bin/bash\ncase "$1" in *train_throughput.py) exec sleep 600 ;; esac\nexec {sys.executable} "$@"\n'
    )
    hanging.chmod(0o755)
    done = _device_check(tmp_path / "out", PYTHON=str(hanging), DEVICE_CHECK_BUDGET_S="30")
    assert done.returncode == 1
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "device: cpu (" in summary  # the environment part, before the hang
    assert "(exit 124 after" in summary and "timed out" in summary
    assert "## profile: skipped, the budget is spent" in summary
    assert "part(s) failed or skipped" in summary


@pytest.fixture(scope="module")
def pilot(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("pilot") / "run"
    return _bench("pilot.py", "--tiny", "--out", str(out)), out


def test_pilot_tiny_trains_every_default_config_at_equal_steps_and_prints_the_table(pilot):
    done, out = pilot
    assert done.returncode == 0, done.stderr
    configs = ("q100_denoise_only", "q201_dcd_baseline", "q202s_cd_stable", "q203s_replay_stable", "q204s_full_stable")
    assert "steps reached: " + ", ".join(f"{name} 60" for name in configs) in done.stdout
    assert "vs baseline q100_denoise_only (values: " in done.stdout and "measured here" in done.stdout
    assert "pilot on cpu" in done.stdout  # the device beside the numbers
    for name in configs:
        assert sorted(p.name for p in (out / name).iterdir() if p.is_dir()) == ["seed_0", "seed_1"]


def test_pilot_results_are_read_by_analyze_seed_pairing_and_the_stability_report(pilot):
    _, out = pilot
    analyzed = subprocess.run(
        [sys.executable, "-m", "ired_dcd", "analyze", "--dir", str(out), "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert analyzed.returncode == 0, analyzed.stderr
    assert analyzed.stdout.count("q100_denoise_only") >= 2  # its row, and the baseline column of every row
    pairing = _bench("seed_pairing.py", "--dir", str(out))
    assert pairing.returncode == 0, pairing.stderr
    assert "| q201_dcd_baseline | 2 |" in pairing.stdout  # against q100, paired over the 2 seeds
    report = _bench("stability_report.py", str(out), "--plots", str(out / "plots"))
    assert report.returncode == 0, report.stderr
    assert "| q202s_cd_stable | 2 | 2 succeeded |" in report.stdout
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["energy_neg.png", "loss_denoise.png", "val_mse.png"]


def test_heldout_size_tiny_reports_the_standard_error_per_size():
    done = _bench("heldout_size.py", "--tiny")
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 64 |") or line.startswith("| 256 |")]
    assert len(rows) == 2
    # 30 steps learn nothing: the bench says so rather than report an unrepresentative SE
    assert "has not learned" in done.stdout
