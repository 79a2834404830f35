"""Fault scenarios on real services of their own, shared by tests/worker/test_service_faults.py (each fault
once) and bench/faults.py (each fault in a loop). A scenario injects its fault into a running lab and
returns what was lost, which must be nothing: every run succeeds with its final metrics, and every
logged step of its learning curve is stored exactly once.

The lab runs on a Postgres cluster and a redis-server of its own (they are stopped and flushed), with
the reconciler every second, 3 s leases and 2 attempts per run (tests/conftest.py TEST_SETTINGS).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import func, select

from ired_dcd.db import migrate
from ired_dcd.models import Metric
from tests.conftest import Lab, lab_server
from tests.utils.services import PrivatePostgres, PrivateRedis, job_body, wait_for

STEPS = 200
RESUMABLE = {"train_steps": STEPS, "checkpoint_every": 20, "log_every": 5, "eval_every": 100}
FAULT_SETTINGS = {"IRED_RECONCILE_SECONDS": "1", "IRED_USER_TASK_LIMIT": "4", "IRED_DISPATCH_BACKLOG": "2"}
OUTAGE_SECONDS = 5.0
JOB_TIMEOUT = 300


@dataclass
class PrivateLab:
    lab: Lab
    redis: PrivateRedis
    postgres: PrivatePostgres


@dataclass(frozen=True)
class Outcome:
    fault: str
    injected: int
    runs: int
    lost: list[str]


@contextmanager
def private_lab(tmp: Path) -> Iterator[PrivateLab]:
    """A lab on a Postgres and a Redis of its own, with the fair-use and reconciler settings above."""
    postgres = PrivatePostgres()
    private_redis = PrivateRedis(tmp)
    try:
        migrate(postgres.url)
        with lab_server(database_url=postgres.url, redis_url=private_redis.url, tmp=tmp, **FAULT_SETTINGS) as lab:
            yield PrivateLab(lab, private_redis, postgres)
    finally:
        private_redis.stop()
        postgres.destroy()


def submit(lab: Lab, **changes: Any) -> int:
    response = lab.http.post("/jobs", json=job_body(**changes))
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def job_or_none(lab: Lab, job_id: int) -> dict[str, Any] | None:
    """The job, or None while the API cannot answer (its database is away)."""
    try:
        response = lab.http.get(f"/jobs/{job_id}")
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def wait_until(lab: Lab, job_id: int, done: Callable[[dict[str, Any]], bool], what: str) -> None:
    wait_for(lambda: (job := job_or_none(lab, job_id)) is not None and done(job), timeout=JOB_TIMEOUT, what=what)


def ended(job: dict[str, Any]) -> bool:
    return job["state"] in {"succeeded", "failed", "cancelled", "diverged"}


def lost_by(lab: Lab, job_id: int) -> list[str]:
    """What the ended job lost: runs that did not succeed or lack final metrics, curve steps missing or repeated."""
    job = lab.job(job_id)
    log_every, steps = job["resolved_config"]["log_every"], job["resolved_config"]["train_steps"]
    expected = list(range(log_every, steps + 1, log_every))
    lost = []
    for run in job["runs"]:
        if run["state"] != "succeeded" or not run["final_metrics"]:
            lost.append(f"job {job_id} run {run['id']}: {run['state']} ({run['error']})")
        series = {s["name"]: s["steps"] for s in lab.http.get(f"/runs/{run['id']}/metrics").json()["series"]}
        if series.get("loss") != expected:
            missing = sorted(set(expected) - set(series.get("loss", [])))
            lost.append(f"job {job_id} run {run['id']}: loss steps missing {missing}")
        with lab.session() as session:
            rows = session.scalar(select(func.count()).where(Metric.run_id == run["id"]))
        if rows != sum(len(s) for s in series.values()):
            lost.append(f"job {job_id} run {run['id']}: {rows} metric rows for {len(series)} curves")
    return lost


def kill_worker(private: PrivateLab) -> Outcome:
    """kill -9 the worker (its whole process group) mid-run; another worker resumes the run."""
    lab = private.lab
    doomed = lab.start_worker("doomed")
    job_id = submit(lab, seeds=[0, 1], **RESUMABLE)
    wait_until(lab, job_id, lambda job: job["runs"][0]["step"] >= 60, "two checkpoints")
    doomed.kill()
    rescuer = lab.start_worker("rescuer")
    wait_until(lab, job_id, ended, "the job to end after the kill")
    rescuer.kill()
    lost = lost_by(lab, job_id)
    lost += [f"run {run['id']} started over" for run in lab.job(job_id)["runs"] if run["resume_step"] is None]
    return Outcome("kill -9 worker mid-run", 1, 2, lost)


def flush_redis(private: PrivateLab) -> Outcome:
    """FLUSHALL while one job trains and others wait in the broker; the reconciler sends them again."""
    lab = private.lab
    worker = lab.start_worker("flushed")
    job_ids = [submit(lab, seeds=[0], train_steps=60) for _ in range(4)]
    wait_until(lab, job_ids[0], lambda job: job["runs"][0]["step"] > 0, "the first job to train")
    redis.Redis.from_url(private.redis.url).flushall()
    for job_id in job_ids:
        wait_until(lab, job_id, ended, f"job {job_id} to end after the flush")
    worker.kill()
    return Outcome("Redis FLUSHALL with jobs queued", 1, len(job_ids), [x for j in job_ids for x in lost_by(lab, j)])


def restart_postgres(private: PrivateLab) -> Outcome:
    """Stop Postgres for OUTAGE_SECONDS while a job trains, then start it again."""
    lab = private.lab
    worker = lab.start_worker("outage")
    job_id = submit(lab, seeds=[0, 1], **RESUMABLE)
    wait_until(lab, job_id, lambda job: job["runs"][0]["step"] >= 40, "training to start")
    private.postgres.stop()
    time.sleep(OUTAGE_SECONDS)
    private.postgres.start()
    wait_until(lab, job_id, ended, "the job to end after the outage")
    worker.kill()
    return Outcome(f"Postgres stopped {OUTAGE_SECONDS:.0f} s mid-run", 1, 2, lost_by(lab, job_id))


SCENARIOS: dict[str, Callable[[PrivateLab], Outcome]] = {
    "kill-worker": kill_worker,
    "flush-redis": flush_redis,
    "restart-postgres": restart_postgres,
}
