"""`ired-dcd analyze` through its own `register`, on a local argparse parser."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ired_dcd.cli.analyze import register

MEANS = {"q201_dcd_baseline": 0.00972, "q202_dcd_cdloss": 0.00968, "q204_dcd_full": 0.00950}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="ired-dcd")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["analyze", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Five succeeded seeds per config and one diverged run, as `ired-dcd train` lays them out."""
    rng = np.random.default_rng(0)
    for config, mean in MEANS.items():
        for seed in range(5):
            path = tmp_path / config / f"seed_{seed}" / "result.json"
            path.parent.mkdir(parents=True)
            metrics = {"val_mse": mean + 2e-5 * rng.standard_normal(), "val_mse_ood": 0.2}
            path.write_text(
                json.dumps({"config": config, "seed": seed, "status": "succeeded", "metrics": metrics, "tags": []})
            )
    diverged = tmp_path / "q204_dcd_full" / "seed_9" / "result.json"
    diverged.parent.mkdir()
    diverged.write_text(json.dumps({"config": "q204_dcd_full", "seed": 9, "status": "diverged", "metrics": {}}))
    return tmp_path


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_text_table_from_a_results_directory(results, capsys):
    code, out, err = run(["--dir", str(results)], capsys)
    assert (code, err) == (0, "")
    assert "baseline plan (constant 0.0096761, measured elsewhere, on another held-out set)" in out
    for config in MEANS:
        assert config in out
    assert "level: " in out and "CD loss + Langevin" in out


def test_csv_with_aliases_selects_and_orders_configs(results, capsys):
    code, out, _ = run(["--dir", str(results), "--configs", "Q-204,q201", "--format", "csv"], capsys)
    rows = csv_rows(out)
    assert code == 0
    assert [r["config"] for r in rows] == ["q204_dcd_full", "q201_dcd_baseline"]
    assert [r["n"] for r in rows] == ["5", "5"]  # the diverged seed is not counted


def test_a_requested_config_without_results_is_an_empty_row(results, capsys):
    code, out, _ = run(["--dir", str(results), "--configs", "q203", "--format", "csv"], capsys)
    assert code == 0
    assert csv_rows(out)[0]["n"] == "0" and csv_rows(out)[0]["notes"] == "no values"


def test_config_baseline_uses_its_raw_values(results, capsys):
    code, out, _ = run(["--dir", str(results), "--baseline", "q201", "--format", "csv"], capsys)
    rows = {r["config"]: r for r in csv_rows(out)}
    assert code == 0
    assert rows["q201_dcd_baseline"]["is_baseline"] == "true"
    assert rows["q204_dcd_full"]["mannwhitney_p"] != ""  # raw values allow the rank test
    assert rows["q204_dcd_full"]["baseline"] == "q201_dcd_baseline"


def test_config_baseline_outside_the_selection_is_not_a_row(results, capsys):
    argv = ["--dir", str(results), "--baseline", "Q-201", "--configs", "q204", "--format", "markdown"]
    code, out, _ = run(argv, capsys)
    assert code == 0
    assert "| q201_dcd_baseline |" not in out and "| q204_dcd_full |" in out
    assert "baseline q201_dcd_baseline (values" in out


def test_summary_baseline_and_another_metric(results, capsys):
    code, out, _ = run(
        ["--dir", str(results), "--baseline", "lab10", "--metric", "val_mse_ood", "--format", "csv"], capsys
    )
    rows = csv_rows(out)
    assert code == 0
    assert {r["metric"] for r in rows} == {"val_mse_ood"} and {r["baseline"] for r in rows} == {"lab10"}
    assert float(rows[0]["mean"]) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--configs", "q999"], "unknown preset 'q999'"),
        (["--configs", " , "], "--configs: no config given"),
        (["--baseline", "lab11"], "--baseline: 'lab11' is neither a built-in baseline (plan, lab10, ired_published)"),
        (["--baseline", "q203"], "config q203_dcd_replay has no succeeded val_mse results"),
        (["--tag", "x"], "--tag: needs the database"),
        (["--metric", "loss"], "no finite metrics.loss"),
    ],
)
def test_user_errors_exit_2_with_a_message(results, capsys, argv, message):
    code, out, err = run(["--dir", str(results), *argv], capsys)
    assert code == 2 and out == ""
    assert err.startswith("ired-dcd analyze: error: ") and message in err
    assert "Traceback" not in err


def test_a_missing_directory_exits_2(tmp_path, capsys):
    code, _, err = run(["--dir", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "not a directory" in err


def _ired_dcd(argv: list[str], data_dir: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real `ired-dcd` on the embedded default's SQLite database in `data_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRED_") and "DATABASE_URL" not in k}
    env["IRED_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "ired_dcd", *argv], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


def test_without_dir_reads_the_database_with_the_in_house_baseline(tmp_path):
    rows = ["config,seed,val_mse,tags"]
    rows += [f"q100,{seed},{0.00970 + seed * 1e-6},study" for seed in range(4)]
    rows += [f"q204,{seed},{0.00950 + seed * 1e-6},study" for seed in range(4)]
    imported = _ired_dcd(["import", "-", "--format", "csv"], tmp_path, stdin="\n".join(rows) + "\n")
    assert imported.returncode == 0, imported.stderr
    analyzed = _ired_dcd(["analyze", "--tag", "study", "--format", "csv"], tmp_path)
    assert analyzed.returncode == 0, analyzed.stderr
    table = {row["config"]: row for row in csv_rows(analyzed.stdout)}
    assert table["q100_denoise_only"]["is_baseline"] == "true"
    assert {row["baseline"] for row in table.values()} == {"q100_denoise_only"}
    assert table["q204_dcd_full"]["paired_n"] == "4"  # imported rows carry their seeds


def test_database_errors_exit_2_with_a_message(tmp_path):
    missing = _ired_dcd(["analyze"], tmp_path)
    assert missing.returncode == 2 and "no results database at" in missing.stderr
    imported = _ired_dcd(["import", "-", "--format", "csv"], tmp_path, stdin="config,seed,val_mse\nq201,0,0.0097\n")
    assert imported.returncode == 0, imported.stderr
    analyzed = _ired_dcd(["analyze", "--baseline", "q203"], tmp_path)
    assert analyzed.returncode == 2 and analyzed.stdout == ""
    assert "baseline: config q203_dcd_replay has no succeeded val_mse results" in analyzed.stderr
    assert "Traceback" not in analyzed.stderr
