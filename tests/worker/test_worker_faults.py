"""Worker faults with the real services: a duplicate delivery, a SIGKILLed worker, a stopped worker,
a task that keeps killing its training process. Leases last 3 s, a run gets 2 attempts (tests/conftest.py)."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from sqlalchemy import func, select

from ired_core.trainer import VALIDATION_METRICS
from ired_dcd.models import Metric, Run
from ired_dcd.services.celery_app import TRAIN_TASK
from ired_dcd.services.celery_app import app as celery_app
from ired_dcd.settings import get_settings
from tests.conftest import Lab
from tests.utils.services import LONG_STEPS, ended, follow_states, job_body, wait_for

pytestmark = pytest.mark.services

STEPS = 200
RESUMABLE = {"train_steps": STEPS, "checkpoint_every": 20, "log_every": 5, "eval_every": 100}


def submit(lab: Lab, body: dict[str, Any]) -> dict[str, Any]:
    response = lab.http.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def first_run(lab: Lab, job_id: int) -> dict[str, Any]:
    return lab.job(job_id)["runs"][0]


def assert_complete_curves(lab: Lab, job: dict[str, Any]) -> None:
    """Every logged step exactly once: nothing lost, nothing duplicated by the replay after a resume."""
    for run in job["runs"]:
        series = {s["name"]: s["steps"] for s in lab.http.get(f"/runs/{run['id']}/metrics").json()["series"]}
        assert series["loss"] == list(range(5, STEPS + 1, 5))
        assert series["val_mse"] == [100, 200]
        with lab.session() as session:
            rows = session.scalar(select(func.count()).where(Metric.run_id == run["id"]))
        assert rows == sum(len(steps) for steps in series.values())


def test_duplicate_delivery_of_a_live_run_is_dropped(lab: Lab) -> None:
    workers = [lab.start_worker("live-a"), lab.start_worker("live-b")]
    job = submit(lab, job_body(seeds=[0, 1], train_steps=LONG_STEPS))
    wait_for(lambda: first_run(lab, job["id"])["step"] > 0, timeout=120, what="training to start")
    holder = first_run(lab, job["id"])["worker"]

    # what Redis does after the visibility timeout: the same task again, while the first still runs
    celery_app.send_task(TRAIN_TASK, args=[[run["id"] for run in job["runs"]]], queue=lab.env["IRED_QUEUE"])
    wait_for(
        lambda: any("dropping this duplicate delivery" in w.log() for w in workers),
        timeout=60,
        what="the duplicate to be dropped",
    )
    job = lab.job(job["id"])
    assert job["state"] == "running"
    assert all(run["attempts"] == 1 and run["worker"] == holder for run in job["runs"])
    assert lab.http.post(f"/jobs/{job['id']}/cancel").status_code == 200
    _, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=30)
    assert job["state"] == "cancelled"
    for worker in workers:
        worker.kill()


def test_sigkilled_worker_run_resumes_from_checkpoint_on_another(lab: Lab) -> None:
    quick_redelivery = {"IRED_VISIBILITY_TIMEOUT": "2"}  # Redis hands a dead worker's task out after 2 s
    doomed = lab.start_worker("doomed", **quick_redelivery)
    job = submit(lab, job_body(seeds=[0, 1], **RESUMABLE))
    wait_for(lambda: first_run(lab, job["id"])["step"] >= 60, timeout=120, what="two checkpoints")
    doomed.kill()
    killed_at = first_run(lab, job["id"])["step"]
    assert killed_at < STEPS and first_run(lab, job["id"])["state"] == "running"

    rescuer = lab.start_worker("rescuer", **quick_redelivery)
    _, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=180)
    assert job["state"] == "succeeded", job
    for run in job["runs"]:
        assert (run["state"], run["step"], run["attempts"]) == ("succeeded", STEPS, 2)
        assert 20 <= run["resume_step"] <= killed_at and run["resume_step"] % 20 == 0  # from its last checkpoint
        assert set(run["final_metrics"]) == set(VALIDATION_METRICS)
    assert "resume from step" in rescuer.log()
    assert_complete_curves(lab, job)
    rescuer.kill()


def test_worker_stopped_with_sigquit_hands_its_runs_back_at_once(lab: Lab) -> None:
    leaving = lab.start_worker("leaving")  # default visibility timeout: a lost task would wait a week
    job = submit(lab, job_body(seeds=[0, 1], **RESUMABLE))
    wait_for(lambda: first_run(lab, job["id"])["step"] >= 40, timeout=120, what="two checkpoints")
    leaving.stop(signal.SIGQUIT)  # how docker compose stops a worker (stop_signal)
    for run in lab.job(job["id"])["runs"]:  # handed back, and the stop is not counted as an attempt
        assert (run["state"], run["worker"], run["attempts"]) == ("running", None, 0)

    arriving = lab.start_worker("arriving")
    _, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=180)
    assert job["state"] == "succeeded"
    assert all(run["attempts"] == 1 and run["resume_step"] >= 20 for run in job["runs"])
    assert_complete_curves(lab, job)
    arriving.kill()


def test_run_that_keeps_killing_its_worker_fails_after_max_attempts(lab: Lab) -> None:
    worker = lab.start_worker("oom")
    job = submit(lab, job_body(seeds=[0], train_steps=LONG_STEPS))
    for attempt in (1, 2):  # max_attempts = 2
        run = wait_for(
            lambda attempt=attempt: (r := first_run(lab, job["id"]))["attempts"] == attempt and r["worker"] and r,
            timeout=60,
            what=f"attempt {attempt}",
        )
        os.kill(int(run["worker"].rsplit(":", 1)[1]), signal.SIGKILL)  # as the kernel's OOM killer would

    _, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=60)
    run = job["runs"][0]
    assert (job["state"], run["state"], run["attempts"]) == ("failed", "failed", 2)
    assert run["error"].startswith("gave up after 2 attempts: the worker training it was lost each time")
    assert worker.process.poll() is None  # the worker itself lives on


def test_training_error_fails_the_runs_and_retry_starts_over(lab: Lab) -> None:
    job = submit(lab, job_body(seeds=[0, 1]))  # no worker yet: it waits in the queue
    with lab.session() as session:
        checkpoint = get_settings().artifacts_path / session.get(Run, job["runs"][0]["id"]).checkpoint_path
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"not a checkpoint")

    worker = lab.start_worker("errors")
    _, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=120)
    assert job["state"] == "failed"
    assert all(run["state"] == "failed" and run["error"] for run in job["runs"])
    assert job["error"].startswith("seed 0: ")

    response = lab.http.post(f"/jobs/{job['id']}/retry")
    assert response.status_code == 200, response.text
    _, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=120)
    assert job["state"] == "succeeded" and job["error"] is None
    assert all((run["attempts"], run["resume_step"]) == (1, None) for run in job["runs"])
    worker.kill()
