"""Helpers for tests against the single-node SLURM that `.ci/slurm-setup.sh` starts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ired_dcd.services.slurm_jobs import SlurmCollector
from ired_dcd.settings import get_settings
from ired_dcd.slurm.cluster import SlurmExecutor, SlurmTaskStatus
from ired_dcd.slurm.settings import SlurmSettings
from tests.conftest import Lab, lab_server
from tests.utils.gates import unavailable
from tests.utils.services import tiny, wait_for

# the server's SLURM settings in the service tests: the nodes run this interpreter; poll every second
SERVER_SLURM = {"IRED_SLURM__PYTHON": sys.executable, "IRED_SLURM__POLL_INTERVAL_S": "1"}
# a service job's SLURM overrides: one CPU, no GPU, no memory limit
CPU_TASK: dict[str, Any] = {"gpus_per_task": 0, "cpus_per_task": 1, "mem_gb": None, "time_minutes": 5}


def cluster_problem() -> str | None:
    """Why the local SLURM cannot run jobs (the reason to skip), or None when it can."""
    if shutil.which("sinfo") is None:
        return "SLURM is not installed (no sinfo): run .ci/slurm-setup.sh as root"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: is slurmctld up? run .ci/slurm-setup.sh"
    if done.returncode != 0:
        return f"SLURM is not up ({done.stderr.strip()}): run .ci/slurm-setup.sh as root"
    if not {"idle", "mixed", "allocated", "completing"} & set(done.stdout.split()):
        return f"no usable SLURM node (sinfo states: {done.stdout.split()}): run .ci/slurm-setup.sh"
    return None


def require_cluster() -> None:
    """Skip (fail under IRED_TEST_REQUIRE_SERVICES=1) unless the local SLURM can run jobs."""
    problem = cluster_problem()
    if problem:
        unavailable(problem)


def require_sacct() -> None:
    """Skip (fail under IRED_TEST_REQUIRE_SERVICES=1) unless `sacct` answers (slurmdbd runs)."""
    if subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, timeout=15).returncode != 0:
        unavailable("sacct does not answer (no slurmdbd): .ci/slurm-setup.sh without IRED_SLURM_ACCOUNTING=no")


def cancel_leftovers(job_ids: Iterable[str]) -> None:
    """scancel the SLURM jobs that still wait or run (what a failed test left behind)."""
    for job_id in job_ids:
        waiting = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-t", "PD,R", "-o", "%i"], capture_output=True, timeout=30
        )
        if waiting.stdout.strip():
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


@contextmanager
def slurm_lab_server(*, database_url: str, redis_url: str, tmp: Path, **settings: str) -> Iterator[Lab]:
    """The lab server with SERVER_SLURM (and `settings`) and a running collector, as `ired-dcd serve` has."""
    with lab_server(database_url=database_url, redis_url=redis_url, tmp=tmp, **SERVER_SLURM, **settings) as lab:
        collector = SlurmCollector()
        collector.start()
        try:
            yield lab
        finally:
            collector.stop()


def slurm_body(seeds: list[int], *, slurm: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """A POST /jobs body: a tiny 20-step job on SLURM with CPU_TASK (updated by `slurm`)."""
    return {
        "config": "q204",
        "seeds": seeds,
        "overrides": tiny(**{"train_steps": 20, "eval_every": 10, **overrides}),
        "executor": "slurm",
        "slurm": {**CPU_TASK, **(slurm or {})},
    }


def submit_slurm_job(lab: Lab, body: dict[str, Any], slurm_jobs: list[str]) -> dict[str, Any]:
    """POST /jobs; the SLURM job is added to `slurm_jobs` (cancelled after the test if left behind)."""
    response = lab.http.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    job = response.json()
    slurm_jobs.append(job["executor_ref"])
    return job


def task_logs(job_id: int) -> str:
    """The job's SLURM task logs, for assertion messages."""
    root = get_settings().artifacts_path / f"job-{job_id}"
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(root.glob("*/slurm/*.err")))


def settled_in_slurm(status: SlurmTaskStatus) -> bool:
    """Final, and from SLURM itself (sacct, squeue or scontrol), not from the grace period's end (lost)."""
    return status.change.final and status.source in ("sacct", "squeue", "scontrol")


def ended_in_slurm(task_ids: Sequence[str], *, timeout: float) -> dict[str, SlurmTaskStatus]:
    """Wait until SLURM itself (sacct, squeue or scontrol) reports every task ended.

    A task writes its results before its process exits: a job the database already shows ended can
    still hold SLURM tasks for a few seconds, which a test's teardown must not find running.
    """
    executor = SlurmExecutor(SlurmSettings(poll_interval_s=0))

    def ended() -> dict[str, SlurmTaskStatus] | None:
        settled = {t: s for t, s in executor.status(task_ids).items() if settled_in_slurm(s)}
        return settled if len(settled) == len(task_ids) else None

    return wait_for(ended, timeout=timeout, what=f"SLURM to report tasks {list(task_ids)} ended", interval=0.5)
