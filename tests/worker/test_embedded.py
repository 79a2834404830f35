"""The embedded default end to end: `ired-dcd serve` with no database or broker configured runs the API
on SQLite with a local worker on a filesystem queue, through the same task code. No external service."""

from __future__ import annotations

import argparse
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from ired_dcd.cli.service import WORKER_STOP_SECONDS, register
from ired_dcd.models import Run
from tests.conftest import service_env
from tests.utils.services import (
    LONG_STEPS,
    ServiceProcess,
    ended,
    follow_states,
    free_port,
    job_body,
    server_process,
    wait_for,
)


class Embedded:
    """One data directory and the `ired-dcd serve` currently running on it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.env = service_env(
            IRED_DATA_DIR=str(self.data),
            IRED_LEASE_SECONDS="3",
            IRED_HEARTBEAT_SECONDS="0.5",
            IRED_DEVICE="cpu",
            OMP_NUM_THREADS="1",
        )
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.starts += 1
        self.server, self.http = server_process(self.env, self.tmp / f"serve-{self.starts}.log", free_port())

    def stop(self) -> int:
        self.http.close()
        return self.server.stop(signal.SIGTERM, timeout=WORKER_STOP_SECONDS + 30)

    def ensure_running(self) -> None:
        """Start the server again when an earlier test stopped it and failed before starting it."""
        if self.server.process.poll() is not None:
            self.start()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: int) -> dict[str, Any]:
        return self.http.get(f"/jobs/{job_id}").json()

    def runs_in_database(self, job_id: int) -> list[Run]:
        engine = create_engine(f"sqlite:///{self.data / 'ired-dcd.db'}")
        try:
            with engine.connect() as connection:
                return list(connection.execute(select(Run).where(Run.job_id == job_id).order_by(Run.seed)))
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def embedded_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    service = Embedded(tmp_path_factory.mktemp("embedded"))
    yield service
    service.stop()


@pytest.fixture
def embedded(embedded_service: Embedded) -> Embedded:
    """The module's server, running: one test's failure mid-restart does not fail the tests after it."""
    embedded_service.ensure_running()
    return embedded_service


def local_worker_pid(server: ServiceProcess) -> int:
    match = re.search(r"local worker started \(pid (\d+)\)", server.log())
    assert match, server.log()
    return int(match[1])


def gone(pid: int) -> bool:
    """The process has ended: no such pid, or a zombie nobody has reaped yet (an orphan's new parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def test_health_reports_embedded_mode_on_sqlite(embedded: Embedded) -> None:
    body = embedded.http.get("/health").json()
    assert body == {"status": "ok", "mode": "embedded", "database": "ok", "broker": "ok", "workers": 1}
    assert (embedded.data / "ired-dcd.db").is_file() and (embedded.data / "queue").is_dir()
    assert "embedded mode: database sqlite:///" in embedded.server.log()


def test_job_goes_queued_running_succeeded_with_metrics(embedded: Embedded) -> None:
    job = embedded.submit(job_body(seeds=[0, 1], train_steps=60))
    assert job["state"] == "queued"
    states, job = follow_states(lambda: embedded.job(job["id"]), until=ended, timeout=120)
    assert (states if states[0] == "queued" else ["queued", *states]) == ["queued", "running", "succeeded"]
    for run in job["runs"]:
        assert (run["state"], run["step"], run["attempts"]) == ("succeeded", 60, 1)
        series = {s["name"]: s for s in embedded.http.get(f"/runs/{run['id']}/metrics").json()["series"]}
        assert series["loss"]["steps"] == list(range(5, 61, 5))
        assert series["val_mse"]["steps"] == [20, 40, 60]
        assert series["val_mse"]["values"][-1] == pytest.approx(run["final_metrics"]["val_mse"])
    assert list((embedded.data / "artifacts" / f"job-{job['id']}").glob("*.pt"))


def test_cancel_stops_a_running_job_mid_training(embedded: Embedded) -> None:
    job = embedded.submit(job_body(seeds=[0], train_steps=LONG_STEPS))
    wait_for(lambda: embedded.job(job["id"])["runs"][0]["step"] > 0, timeout=120, what="training to start")
    assert embedded.http.post(f"/jobs/{job['id']}/cancel").status_code == 200
    _, job = follow_states(lambda: embedded.job(job["id"]), until=ended, timeout=120)
    assert job["state"] == "cancelled" and job["runs"][0]["state"] == "cancelled"
    assert 0 < job["runs"][0]["step"] < LONG_STEPS


def test_restart_resumes_an_interrupted_run_from_its_checkpoint(embedded: Embedded) -> None:
    steps = 200
    job = embedded.submit(job_body(seeds=[0, 1], train_steps=steps, checkpoint_every=20, eval_every=100))
    wait_for(lambda: embedded.job(job["id"])["runs"][0]["step"] >= 40, timeout=120, what="two checkpoints")
    worker_pid = local_worker_pid(embedded.server)
    assert embedded.stop() == 143
    assert re.search(r"^local worker stopped in [\d.]+ s$", embedded.server.log(), re.M), embedded.server.log()
    wait_for(lambda: gone(worker_pid), timeout=30, what="the local worker to stop with the server")
    for run in embedded.runs_in_database(job["id"]):  # released, not failed: a stop is not a lost attempt
        assert (run.state, run.lease_owner, run.attempts) == ("running", None, 0)
        assert 0 < run.step < steps

    embedded.start()
    _, job = follow_states(lambda: embedded.job(job["id"]), until=ended, timeout=180)
    assert job["state"] == "succeeded"
    for run in job["runs"]:
        assert (run["step"], run["attempts"]) == (steps, 1)
        assert run["resume_step"] is not None and run["resume_step"] >= 20
        loss = embedded.http.get(f"/runs/{run['id']}/metrics", params={"names": "loss"}).json()["series"][0]
        assert loss["steps"] == list(range(5, steps + 1, 5))


def test_the_local_worker_ends_when_its_server_is_killed(embedded: Embedded) -> None:
    """Issue 16: a server killed outright (SIGKILL, the OOM killer) cannot stop its worker; the worker
    notices it was orphaned and stops by itself."""
    worker_pid = local_worker_pid(embedded.server)
    embedded.http.close()
    os.kill(embedded.server.pid, signal.SIGKILL)  # the server only, not its process group
    embedded.server.process.wait(10)
    wait_for(lambda: gone(worker_pid), timeout=60, what="the orphaned local worker to stop")
    embedded.start()  # the module's server, for the tests after this one


def cli(*argv: str) -> int:
    """Run an `ired-dcd` service subcommand in this process."""
    parser = argparse.ArgumentParser(prog="ired-dcd")
    register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_submit_wait_status_cancel_retry(embedded: Embedded, capsys: pytest.CaptureFixture[str]) -> None:
    server = ["--server", str(embedded.http.base_url)]
    sets = [arg for key, value in job_body()["overrides"].items() for arg in ("--set", f"{key}={value}")]
    assert cli("submit", "Q-201", "--seeds", "3-4", *sets, "--tag", "cli", "--wait", *server) == 0
    out = capsys.readouterr().out
    job_id = int(re.search(r"^job (\d+) queued: q201_dcd_baseline × 2 seed\(s\) \[3-4\]", out, re.M)[1])
    assert f"job {job_id} succeeded" in out and out.count("succeeded  40/40") == 2

    assert cli("status", *server, "--tag", "cli") == 0
    assert re.search(rf"^{job_id}\s+succeeded\s+q201_dcd_baseline\s+3-4\s+100%\s+local", capsys.readouterr().out, re.M)
    assert cli("status", str(job_id), *server) == 0
    assert "RUN  SEED  STATE" in capsys.readouterr().out

    assert cli("cancel", str(job_id), *server) == 1
    refused = f"error: job {job_id} has already ended (succeeded); nothing to cancel (HTTP 409)\n"
    assert capsys.readouterr().err == refused
    assert cli("retry", str(job_id), *server) == 1
    assert "no failed or diverged runs" in capsys.readouterr().err
    assert cli("submit", "q999", *server) == 1
    assert capsys.readouterr().err.startswith("error: config: unknown preset 'q999'")
    assert cli("submit", "q204", "--set", "train_steps=0", *server) == 1
    assert "overrides: train_steps: Input should be greater than or equal to 1 (HTTP 422)" in capsys.readouterr().err
    assert cli("status", "--server", f"http://127.0.0.1:{free_port()}") == 1
    assert capsys.readouterr().err.startswith("error: cannot reach http://127.0.0.1:")


def test_cli_rejects_bad_seeds_before_sending(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli("submit", "q204", "--seeds", "5-1")
    assert exit_info.value.code == 2
    assert "argument --seeds: seeds: range '5-1' is empty" in capsys.readouterr().err
