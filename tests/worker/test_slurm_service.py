"""Executor `slurm` end to end: the HTTP API on Postgres submits array jobs to the real single-node SLURM,
the compute node trains into the shared artifacts directory, and the collector brings the results back.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from ired_core.trainer import VALIDATION_METRICS
from ired_dcd.models import Artifact, Job, Metric
from ired_dcd.settings import get_settings
from ired_dcd.slurm.cluster import SlurmExecutor
from ired_dcd.slurm.settings import SlurmSettings
from ired_dcd.states import State
from tests.conftest import Lab
from tests.utils.services import LONG_STEPS, ended, follow_states, wait_for
from tests.utils.slurm import (
    CPU_TASK,
    ended_in_slurm,
    slurm_body,
    submit_slurm_job,
    task_logs,
)

pytestmark = [pytest.mark.slurm, pytest.mark.services]

LIMIT_S = 90


def test_slurm_job_succeeds_with_metrics_in_the_database(slurm_lab: Lab, slurm_jobs: list[str]) -> None:
    job = submit_slurm_job(slurm_lab, slurm_body([0, 1]), slurm_jobs)
    array = job["executor_ref"]
    assert array.isdigit() and job["slurm"] == CPU_TASK
    assert [(run["state"], run["worker"], run["attempts"]) for run in job["runs"]] == [
        ("queued", f"slurm:{array}_0", 1),
        ("queued", f"slurm:{array}_1", 1),
    ]

    _, job = follow_states(lambda: slurm_lab.job(job["id"]), until=ended, timeout=LIMIT_S)
    assert job["state"] == "succeeded", f"{job}\n{task_logs(job['id'])}"
    # the tasks wrote their results before exiting: SLURM ends them a moment later, and must say COMPLETED
    # (teardown used to find them still running and cancel them)
    in_slurm = ended_in_slurm([f"{array}_0", f"{array}_1"], timeout=LIMIT_S)
    assert {status.slurm_state for status in in_slurm.values()} == {"COMPLETED"}, in_slurm
    for run in job["runs"]:
        assert (run["step"], run["attempts"], run["error"], run["worker"]) == (20, 1, None, None)
        assert set(run["final_metrics"]) == set(VALIDATION_METRICS)
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
    job = submit_slurm_job(slurm_lab, slurm_body([3], train_steps=LONG_STEPS, checkpoint_every=50), slurm_jobs)
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
