"""`ired-dcd import` and `ired-dcd study` as a researcher runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from ired_dcd.models import ImportedResult
from tests.conftest import TEST_SETTINGS, Lab, service_env
from tests.utils.results_factories import unique_tag
from tests.utils.services import TINY, free_port

TINY_SETS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
PLAN_ROWS = ("q100_denoise_only", "q201_dcd_baseline", "q202_dcd_cdloss", "q203_dcd_replay", "q204_dcd_full")
STABILISED_ROWS = (
    "q100_denoise_only",
    "q201_dcd_baseline",
    "q202s_cd_stable",
    "q203s_replay_stable",
    "q204s_full_stable",
)


def ired_dcd(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "ired_dcd", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    """The embedded default in a fresh data dir, on a port of its own (never a developer's server)."""
    return service_env(IRED_DATA_DIR=str(tmp_path / "data"), IRED_PORT=str(free_port()), **TEST_SETTINGS)


def imported_count(env: dict[str, str]) -> int:
    with sqlite3.connect(Path(env["IRED_DATA_DIR"]) / "ired-dcd.db") as db:
        return db.execute("SELECT count(*) FROM imported_results").fetchone()[0]


# ---------------------------------------------------------------------------------------------
# import


def test_import_into_the_embedded_database_twice_then_analyze(tmp_path, embedded_env):
    rows = tmp_path / "slurm-runs.csv"
    rows.write_text("config,seed,val_mse,val_mse_ood,tags\nQ-204,0,0.00951,0.23,slurm\nq204,1,0.00949,,slurm\n")
    first = ired_dcd("import", str(rows), env=embedded_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("slurm-runs.csv: 2 row(s) stored, 0 already stored")
    again = ired_dcd("import", str(rows), env=embedded_env)
    assert again.stdout.startswith("slurm-runs.csv: 0 row(s) stored, 2 already stored")
    assert imported_count(embedded_env) == 2

    analyze = ired_dcd("analyze", "--configs", "q204", "--format", "csv", env=embedded_env)
    assert analyze.returncode == 0, analyze.stderr
    assert analyze.stdout.splitlines()[1].startswith("val_mse,plan,q204_dcd_full,2,0.0095,")


def test_import_json_from_stdin(embedded_env):
    document = json.dumps([{"config": "q201", "seed": 3, "val_mse": 0.0097, "tags": ["lab-b"]}])
    done = ired_dcd("import", "-", "--format", "json", "--source", "lab B", env=embedded_env, stdin=document)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("lab B: 1 row(s) stored")


def test_the_labs_phase1_runs_import_under_their_own_names_and_compare(tmp_path, embedded_env):
    rows = tmp_path / "phase1.csv"
    rows.write_text("config,seed,val_mse\nbaseline,0,0.0097\nbaseline,1,0.0098\nrandom mining,0,0.0095\n")
    refused = ired_dcd("import", str(rows), env=embedded_env)
    assert refused.returncode == 2 and "row 1, field 'config': unknown preset 'baseline'" in refused.stderr
    done = ired_dcd("import", str(rows), "--custom-configs", env=embedded_env)
    assert done.returncode == 0, done.stderr
    compare = ("analyze", "--configs", "baseline,random mining", "--baseline", "baseline", "--format", "csv")
    analyze = ired_dcd(*compare, env=embedded_env)
    assert analyze.returncode == 0, analyze.stderr
    lines = analyze.stdout.splitlines()
    assert lines[1].startswith("val_mse,baseline,baseline,2,0.00975,")
    assert lines[2].startswith("val_mse,baseline,random mining,1,")
    by_setting = ired_dcd(*compare, "--group-by", "setting", env=embedded_env)
    assert by_setting.returncode == 0 and by_setting.stdout == analyze.stdout  # a custom config is its own setting


@pytest.mark.parametrize(
    ("name", "text", "args", "message"),
    [
        ("bad.csv", "config,seed,val_mse\nq204,0,0.0095\nq204,-1,0.0095\n", [], "row 2, field 'seed': must be"),
        ("bad.json", '[{"config": "q999", "seed": 0, "val_mse": 1}]', [], "row 1, field 'config': unknown preset"),
        ("rows.txt", "config,seed,val_mse\n", [], "--format: cannot tell from 'rows.txt'"),
        ("missing.csv", None, [], "No such file or directory"),
        ("stdin", None, ["-"], "--format: required when reading rows from stdin"),
    ],
)
def test_import_errors_exit_2_with_a_message_and_store_nothing(tmp_path, embedded_env, name, text, args, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    done = ired_dcd("import", *(args or [str(path)]), env=embedded_env, stdin="")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("ired-dcd import: error: ") and message in done.stderr
    assert "Traceback" not in done.stderr
    database = Path(embedded_env["IRED_DATA_DIR"]) / "ired-dcd.db"
    assert not database.exists() or imported_count(embedded_env) == 0


@pytest.mark.services
def test_import_through_a_server(lab: Lab, tmp_path):
    tag = unique_tag()
    rows = tmp_path / "rows.csv"
    rows.write_text(f"config,seed,val_mse,tags\nq203,0,0.0096,{tag}\nq203,1,0.0097,{tag}\n")
    env = service_env(IRED_SERVER=lab.base_url, IRED_TOKEN=lab.token)  # no database settings: only the server
    done = ired_dcd("import", str(rows), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"rows.csv: 2 row(s) stored, 0 already stored ({lab.base_url})\n"
    with lab.session() as session:
        stored = session.scalars(select(ImportedResult).where(ImportedResult.source == "rows.csv")).all()
    assert sorted((r.config, r.seed) for r in stored if r.tags == [tag]) == [
        ("q203_dcd_replay", 0),
        ("q203_dcd_replay", 1),
    ]
    bad = ired_dcd("import", str(rows), "--server", lab.base_url, "--format", "json", env=env)
    assert bad.returncode == 2 and "row 0, field 'document': invalid JSON" in bad.stderr and "(HTTP 422)" in bad.stderr


# ---------------------------------------------------------------------------------------------
# study


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """config → cells of the text table's rows."""
    names = {*PLAN_ROWS, *STABILISED_ROWS}
    return {
        line.split()[0]: line.split() for line in stdout.splitlines() if line.split()[:1] and line.split()[0] in names
    }


@pytest.mark.services
def test_study_through_a_server(lab: Lab):
    lab.start_worker("study")
    tag = unique_tag()
    env = service_env(IRED_TOKEN=lab.token)
    done = ired_dcd(
        "study",
        "--server",
        lab.base_url,
        "--seeds",
        "0-1",
        "--tag",
        tag,
        "--poll",
        "0.2",
        "--arms",
        "stabilised",
        *TINY_SETS,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = _table_rows(done.stdout)
    assert list(rows) == list(STABILISED_ROWS) and all(cells[1] == "2" for cells in rows.values())
    assert done.stdout.startswith("val_mse vs baseline q100_denoise_only (values: ")  # the study's own q100
    assert "with the stabilised arms (q202s_cd_stable, q203s_replay_stable, q204s_full_stable):" in done.stdout
    assert f"study {tag}: jobs " in done.stderr and re.search(r"q100 succeeded · q201 succeeded", done.stderr)
    jobs = lab.http.get("/jobs", params={"tag": tag, "view": "full"}).json()
    assert jobs["count"] == 5 and {job["state"] for job in jobs["data"]} == {"succeeded"}
    assert {job["resolved_config"]["train_steps"] for job in jobs["data"]} == {TINY["train_steps"]}


def test_study_on_the_embedded_default(embedded_env):
    done = ired_dcd(
        "study",
        "--seeds",
        "0",
        "--device",
        "cpu",
        "--poll",
        "0.5",
        "--arms",
        "plan",
        *TINY_SETS,
        env=embedded_env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "started the embedded server at http://127.0.0.1:" in done.stderr
    rows = _table_rows(done.stdout)
    assert list(rows) == list(PLAN_ROWS) and all(cells[1] == "1" for cells in rows.values())
    pid = int(re.search(r"\(pid (\d+),", done.stderr)[1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the server the study started is gone
    log = Path(embedded_env["IRED_DATA_DIR"]) / "study-serve.log"
    assert "local worker started" in log.read_text()


def test_study_refuses_a_bad_override_before_starting_anything(embedded_env):
    done = ired_dcd("study", "--set", "lr=5", env=embedded_env)
    assert done.returncode == 2 and "lr: Input should be less than or equal to 1" in done.stderr
    assert "started" not in done.stderr and "Traceback" not in done.stderr


def test_study_device_is_for_the_embedded_server_only(embedded_env):
    done = ired_dcd("study", "--server", "http://127.0.0.1:9", "--device", "cuda", env=embedded_env)
    assert done.returncode == 2 and "--device: the workers of the server at http://127.0.0.1:9" in done.stderr
