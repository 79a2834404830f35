"""Executor `slurm` end to end: the HTTP API on Postgres submits array jobs to the real single-node SLURM,
the compute node trains into the shared artifacts directory, and the collector brings the results back.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from ired_dcd.models import Artifact, Job, Metric
from ired_dcd.services.slurm import SlurmCollector
from ired_dcd.settings import get_settings
from ired_dcd.states import State
from tests.conftest import Lab, lab_server
from tests.utils.services import LONG_STEPS, ended, follow_states, tiny, wait_for
from tests.utils.slurm import cancel_leftovers, cluster_problem
from worker.slurm import SlurmExecutor, SlurmSettings

pytestmark = [pytest.mark.slurm, pytest.mark.services]

# the server's SLURM defaults: the nodes run this repository's interpreter; poll every second
SERVER_SLURM = {"IRED_SLURM__PYTHON": sys.executable, "IRED_SLURM__POLL_INTERVAL_S": "1"}
# the job's overrides: one CPU, no GPU, no memory limit
CPU_TASK = {"gpus_per_task": 0, "cpus_per_task": 1, "mem_gb": None, "time_minutes": 5}
LIMIT_S = 90


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def slurm_lab(
    cluster: None, postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    """The lab server with SLURM settings and a running collector (what `ired-dcd serve` starts)."""
    tmp = tmp_path_factory.mktemp("slurm")
    with lab_server(database_url=postgres_url, redis_url=redis_url, tmp=tmp, **SERVER_SLURM) as lab:
        collector = SlurmCollector()
        collector.start()
        try:
            yield lab
        finally:
            collector.stop()


@pytest.fixture
def slurm_jobs() -> Iterator[list[str]]:
    """SLURM job ids to scancel after the test if they still wait or run (a failed test)."""
    ids: list[str] = []
    yield ids
    cancel_leftovers(ids)


def slurm_body(seeds: list[int], **overrides: Any) -> dict[str, Any]:
    return {
        "config": "q204",
        "seeds": seeds,
        "overrides": tiny(**{"train_steps": 20, "eval_every": 10, **overrides}),
        "executor": "slurm",
        "slurm": CPU_TASK,
    }


def submit(lab: Lab, body: dict[str, Any], slurm_jobs: list[str]) -> dict[str, Any]:
    response = lab.http.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    job = response.json()
    slurm_jobs.append(job["executor_ref"])
    return job


def task_logs(job_id: int) -> str:
    """The job's SLURM task logs, for assertion messages."""
    root = get_settings().artifacts_path / f"job-{job_id}"
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(root.glob("*/slurm/*.err")))


def test_slurm_job_succeeds_with_metrics_in_the_database(slurm_lab: Lab, slurm_jobs: list[str]) -> None:
    job = submit(slurm_lab, slurm_body([0, 1]), slurm_jobs)
    array = job["executor_ref"]
    assert array.isdigit() and job["slurm"] == CPU_TASK
    assert [(run["state"], run["worker"], run["attempts"]) for run in job["runs"]] == [
        ("queued", f"slurm:{array}_0", 1),
        ("queued", f"slurm:{array}_1", 1),
    ]

    _, job = follow_states(lambda: slurm_lab.job(job["id"]), until=ended, timeout=LIMIT_S)
    assert job["state"] == "succeeded", f"{job}\n{task_logs(job['id'])}"
    for run in job["runs"]:
        assert (run["step"], run["attempts"], run["error"], run["worker"]) == (20, 1, None, None)
        assert set(run["final_metrics"]) == {"val_mse", "val_mse_x0", "val_mse_ood"}
        assert run["device"].startswith("cpu") and run["precision"] == "fp32" and run["code_version"]
        assert run["train_seconds"] > 0 and run["started_at"] and run["finished_at"]

    with slurm_lab.session() as session:
        for run in job["runs"]:
            steps = dict(
                session.execute(
                    select(Metric.name, func.array_agg(Metric.step))
                    .where(Metric.run_id == run["id"])
                    .group_by(Metric.name)
                ).all()
            )
            assert sorted(steps["loss"]) == [5, 10, 15, 20]
            assert sorted(steps["val_mse"]) == [10, 20]
            final = session.scalar(
                select(Metric.value).where(Metric.run_id == run["id"], Metric.name == "val_mse", Metric.step == 20)
            )
            assert final == pytest.approx(run["final_metrics"]["val_mse"])
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job["id"])).all()
        assert sorted(a.run_id for a in artifacts) == [run["id"] for run in job["runs"]]  # one checkpoint per seed
        assert all(a.size_bytes and (get_settings().artifacts_path / a.path).is_file() for a in artifacts)


def test_cancel_through_the_api_cancels_the_slurm_job(slurm_lab: Lab, slurm_jobs: list[str]) -> None:
    job = submit(slurm_lab, slurm_body([3], train_steps=LONG_STEPS, checkpoint_every=50), slurm_jobs)
    running = wait_for(
        lambda: (j := slurm_lab.job(job["id"]))["runs"][0]["step"] > 0 and j,
        timeout=LIMIT_S,
        what="training on SLURM to report progress",
        interval=0.5,
    )
    run = running["runs"][0]
    assert run["state"] == "running" and run["heartbeat_at"]
    task_id = run["worker"].removeprefix("slurm:")

    response = slurm_lab.http.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"

    # SLURM cancelled the task: ask it the way a fresh server would
    executor = SlurmExecutor(SlurmSettings(poll_interval_s=0))
    status = wait_for(
        lambda: (s := executor.status([task_id]).get(task_id)) and s.source != "submitted" and s.change.final and s,
        timeout=30,
        what=f"SLURM to report task {task_id} ended",
        interval=0.5,
    )
    assert status.change.state is State.CANCELLED, status
    job = slurm_lab.job(job["id"])
    assert job["state"] == "cancelled" and job["runs"][0]["state"] == "cancelled"
    assert 0 < job["runs"][0]["step"] < LONG_STEPS


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"slurm": {"time_minutes": 0}}, "slurm: time_minutes: Input should be greater than or equal to 1"),
        ({"slurm": {"python": "/bin/false"}}, "slurm: python: set by the server, cannot be overridden per job"),
        ({"slurm": {"array": "0-9"}}, "slurm: array: Extra inputs are not permitted"),
        ({"slurm": {"extra_sbatch_lines": ["--export=ALL"]}}, "slurm: extra_sbatch_lines: Value error, '--export=ALL'"),
        ({"executor": "celery"}, "slurm: settings for executor 'slurm' only; this job's executor is 'celery'"),
    ],
)
def test_bad_slurm_settings_are_refused_naming_the_field(slurm_lab: Lab, change: dict[str, Any], detail: str) -> None:
    with slurm_lab.session() as session:
        before = session.scalar(select(func.count()).select_from(Job))
    response = slurm_lab.http.post("/jobs", json={**slurm_body([0]), **change})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(detail)
    with slurm_lab.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == before
