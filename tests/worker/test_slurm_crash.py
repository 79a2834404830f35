"""Issue 16, finding 7 on the real single-node SLURM and Postgres: a server killed during a SLURM
submission leaves no orphan and no lost job.

`ired-dcd serve` runs as a process of its own with an `sbatch` on its PATH that stands in front of the
real one. It SIGKILLs the server, its parent, right after the real sbatch accepted the job (before the
server could commit the answer: the window that orphaned SLURM jobs), or before the real sbatch ran;
or it holds sbatch's answer until the test has locked the runs, so that the server reads the answer
and then waits on the lock, where the test kills it. A second server on the same database then adopts
the SLURM job by its name when sbatch had accepted it (the script holds all its tasks need, so an
accepted job is complete), submits the intent when SLURM never had it, and the job trains to the end:
each run submitted once, nothing left in SLURM's queue.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, select

from ired_dcd.models import Run
from ired_dcd.services.change_feed import listen_url
from ired_dcd.services.slurm_jobs import INTENT_PREFIX, submission_name
from ired_dcd.slurm.cluster import SlurmExecutor
from ired_dcd.slurm.settings import SlurmSettings
from ired_dcd.states import State
from tests.conftest import service_env
from tests.utils.services import IRED_DCD, ServiceProcess, free_port, tiny, wait_for
from tests.utils.slurm import cancel_leftovers, cluster_problem, ended_in_slurm

pytestmark = [pytest.mark.slurm, pytest.mark.services]

CPU_TASK = {"gpus_per_task": 0, "cpus_per_task": 1, "mem_gb": None, "time_minutes": 5}
LIMIT_S = 120

WRAPPER = """#!/bin/bash
# Stands in for sbatch ({when}): SIGKILL the server calling it after or before the real sbatch, or
# hold the real sbatch's answer until the test says go.
server=$PPID
case "{when}" in
    after) {sbatch} "$@"; status=$?; kill -9 "$server"; exit $status ;;
    before) kill -9 "$server"; exit 1 ;;
    pause)
        answer=$({sbatch} "$@"); status=$?
        touch "{flags}/sbatch-done"
        while [ ! -e "{flags}/go" ]; do sleep 0.1; done
        echo "$answer"; exit $status ;;
esac
"""


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture
def database(create_database: Callable[[], str]) -> str:
    from ired_dcd.db import migrate

    url = create_database()
    migrate(url)
    return url


@pytest.fixture
def database_sql(database: str) -> Callable[[], Any]:
    """Plain connections to the test's database (a session of the test's own, outside the server)."""
    url = listen_url(database)
    assert url is not None
    return lambda: psycopg.connect(url, autocommit=True)


@pytest.fixture
def slurm_jobs() -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    cancel_leftovers(ids)


class Server:
    """`ired-dcd serve` on the test's database; `sbatch_kills` puts the killing sbatch on its PATH."""

    def __init__(self, tmp: Path, database: str, redis_url: str) -> None:
        self.tmp, self.port = tmp, free_port()
        self.env = service_env(
            DATABASE_URL=database,
            BROKER_URL=redis_url,
            IRED_QUEUE=f"ired-test-{uuid.uuid4().hex[:10]}",
            IRED_DATA_DIR=str(tmp / "data"),
            IRED_AUTH_REQUIRED="false",
            IRED_RECONCILE_SECONDS="0",
            IRED_SLURM__PYTHON=sys.executable,
            IRED_SLURM__POLL_INTERVAL_S="1",
            IRED_MAX_ATTEMPTS="2",
            OMP_NUM_THREADS="1",
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        self.process: ServiceProcess | None = None

    def start(self, name: str, *, sbatch_kills: str | None = None) -> None:
        env = dict(self.env)
        if sbatch_kills is not None:
            folder = self.tmp / f"bin-{name}"
            folder.mkdir()
            wrapper = folder / "sbatch"
            wrapper.write_text(WRAPPER.format(when=sbatch_kills, sbatch=shutil.which("sbatch"), flags=folder))
            wrapper.chmod(0o755)
            env["PATH"] = f"{folder}:{env['PATH']}"
        argv = [*IRED_DCD, "serve", "--port", str(self.port)]
        self.process = ServiceProcess(argv, env=env, log_path=self.tmp / f"serve-{name}.log")
        self.process.wait_for_log("SLURM: executor 'slurm' available", timeout=60)
        wait_for(self._answers, timeout=60, what=f"server {name} to answer")

    def _answers(self) -> bool:
        try:
            return self.http.get("/health").status_code in (200, 503)
        except httpx.HTTPError:
            return False

    def runs(self, database: str) -> list[Run]:
        engine = create_engine(database)
        try:
            with engine.connect() as connection:
                return list(connection.execute(select(Run).order_by(Run.job_id, Run.seed)))
        finally:
            engine.dispose()

    def close(self) -> None:
        if self.process is not None and self.process.process.poll() is None:
            self.process.stop(signal.SIGTERM)
        self.http.close()


@pytest.fixture
def server(tmp_path: Path, database: str, redis_url: str, cluster: None) -> Iterator[Server]:
    server = Server(tmp_path, database, redis_url)
    yield server
    server.close()


def slurm_job(seeds: list[int]) -> dict[str, Any]:
    overrides = tiny(train_steps=20, eval_every=10)
    return {"config": "q204", "seeds": seeds, "overrides": overrides, "executor": "slurm", "slurm": CPU_TASK}


def intent_left(server: Server, database: str) -> tuple[int, str, list[str]]:
    """(job id, intent token, SLURM tasks under the submission's name) after the first server died."""
    assert server.process is not None
    server.process.process.wait(30)
    runs = server.runs(database)
    assert len(runs) == 2 and all(run.state == "queued" for run in runs)
    assert {run.lease_owner for run in runs} == {runs[0].lease_owner} and runs[0].lease_owner.startswith(INTENT_PREFIX)
    token = runs[0].lease_owner.removeprefix(INTENT_PREFIX)
    tasks = SlurmExecutor(SlurmSettings(poll_interval_s=0)).find(submission_name(runs[0].job_id, token))
    return runs[0].job_id, token, tasks


def killed_while_submitting(server: Server, database: str, when: str) -> tuple[int, str, list[str]]:
    """Submit through a server whose sbatch kills it (`when`: after or before the real sbatch)."""
    server.start("first", sbatch_kills=when)
    with pytest.raises(httpx.HTTPError):  # the server died answering
        server.http.post("/jobs", json=slurm_job([0, 1]))
    return intent_left(server, database)


def trained_once(server: Server, database: str, job_id: int, token: str, slurm_jobs: list[str]) -> list[str]:
    """Start a second server; the job ends succeeded, each run submitted once; the SLURM tasks."""
    server.start("second")

    def ended() -> dict[str, Any] | None:
        job = server.http.get(f"/jobs/{job_id}").json()
        if job.get("executor_ref"):
            slurm_jobs.append(job["executor_ref"])
        return job if job["state"] in ("succeeded", "failed", "cancelled", "diverged") else None

    job = wait_for(ended, timeout=LIMIT_S, what="the job to end after the restart", interval=1)
    assert job["state"] == "succeeded", (job, server.process.log()[-3000:] if server.process else "")
    assert [run["attempts"] for run in job["runs"]] == [1, 1]  # one submission, whoever made it
    tasks = SlurmExecutor(SlurmSettings(poll_interval_s=0)).find(submission_name(job_id, token))
    assert {task.split("_")[0] for task in tasks} == {job["executor_ref"]}  # one SLURM job by that name
    return tasks


def test_killed_right_after_sbatch_the_next_server_adopts_the_slurm_job(
    server: Server, database: str, slurm_jobs: list[str]
) -> None:
    job_id, token, submitted = killed_while_submitting(server, database, "after")
    assert len(submitted) == 2, submitted  # SLURM has an array the dead server never recorded
    slurm_jobs.append(submitted[0].split("_")[0])
    assert trained_once(server, database, job_id, token, slurm_jobs) == submitted  # adopted, not sent again
    in_slurm = ended_in_slurm(submitted, timeout=LIMIT_S)
    assert {status.change.state for status in in_slurm.values()} == {State.SUCCEEDED}


def test_killed_after_the_submission_completed_the_next_server_adopts_the_slurm_job(
    server: Server, database: str, database_sql: Callable[[], Any], slurm_jobs: list[str]
) -> None:
    server.start("first", sbatch_kills="pause")
    flags = server.tmp / "bin-first"
    thread = threading.Thread(target=lambda: _post_expecting_death(server), daemon=True)
    thread.start()
    wait_for(lambda: (flags / "sbatch-done").exists(), timeout=60, what="the real sbatch to answer")
    with database_sql() as sql, sql.transaction():
        sql.execute("SELECT id FROM runs FOR UPDATE")  # the server's record of the tasks waits for this
        (flags / "go").touch()
        wait_for(lambda: _waiting_on_a_lock(sql), timeout=60, what="the server to wait on the runs' lock")
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.process.wait(30)
    thread.join(30)
    job_id, token, submitted = intent_left(server, database)
    assert len(submitted) == 2, submitted
    slurm_jobs.append(submitted[0].split("_")[0])
    assert trained_once(server, database, job_id, token, slurm_jobs) == submitted  # adopted, not sent again


def test_killed_before_sbatch_the_next_server_submits_the_intent(
    server: Server, database: str, slurm_jobs: list[str]
) -> None:
    job_id, token, submitted = killed_while_submitting(server, database, "before")
    assert submitted == []  # SLURM never had it
    assert len(trained_once(server, database, job_id, token, slurm_jobs)) == 2


def _post_expecting_death(server: Server) -> None:
    with pytest.raises(httpx.HTTPError):
        server.http.post("/jobs", json=slurm_job([0, 1]))


def _waiting_on_a_lock(sql: Any) -> bool:
    """Whether another session of this database waits on a row lock (the server recording the tasks)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
    )
    return sql.execute(query).fetchone()[0] > 0
