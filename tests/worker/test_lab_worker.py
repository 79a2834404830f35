"""Lab-server mode end to end: HTTP API on Postgres, Redis queue, a real Celery worker subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from ired_core.trainer import VALIDATION_METRICS
from ired_dcd.models import Artifact
from ired_dcd.settings import get_settings
from tests.conftest import Lab
from tests.utils.services import LONG_STEPS, ServiceProcess, ended, follow_states, job_body, wait_for

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def worker(lab: Lab) -> ServiceProcess:
    return lab.start_worker("worker")


def submit(lab: Lab, body: dict[str, Any]) -> dict[str, Any]:
    response = lab.http.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def curves(lab: Lab, run_id: int) -> dict[str, list[int]]:
    body = lab.http.get(f"/runs/{run_id}/metrics").json()
    return {series["name"]: series["steps"] for series in body["series"]}


def test_job_goes_queued_running_succeeded_with_metrics(lab: Lab, worker: ServiceProcess) -> None:
    job = submit(lab, job_body(seeds=[0, 1], train_steps=60))
    states, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=120)
    assert (states if states[0] == "queued" else ["queued", *states]) == ["queued", "running", "succeeded"]

    for run in job["runs"]:
        assert (run["state"], run["step"], run["attempts"], run["error"]) == ("succeeded", 60, 1, None)
        assert set(run["final_metrics"]) == set(VALIDATION_METRICS)
        assert run["device"].startswith("cpu") and run["precision"] == "fp32"
        assert run["torch_version"] and run["code_version"] and run["worker"] is None
        steps = curves(lab, run["id"])
        assert steps["loss"] == list(range(5, 61, 5))
        assert steps["val_mse"] == [20, 40, 60]
        assert {"loss_denoise", "loss_energy", "energy_gap", "filtered_frac", "steps_per_s"} <= set(steps)
        final = lab.http.get(f"/runs/{run['id']}/metrics", params={"names": "val_mse"}).json()["series"][0]
        assert final["values"][-1] == pytest.approx(run["final_metrics"]["val_mse"])

    with lab.session() as session:
        artifact = session.scalars(select(Artifact).where(Artifact.job_id == job["id"])).one()
        assert artifact.kind == "checkpoint" and artifact.size_bytes
        assert (get_settings().artifacts_path / artifact.path).is_file()
    # /health reports the health monitor's latest check (every IRED_HEALTH_SECONDS), not a ping per call
    wait_for(lambda: lab.http.get("/health").json()["workers"] == 1, timeout=30, what="/health to count the worker")


def test_cancel_stops_a_running_job_mid_training_and_frees_the_worker(lab: Lab, worker: ServiceProcess) -> None:
    job = submit(lab, job_body(seeds=[0, 1], train_steps=LONG_STEPS, checkpoint_every=50))
    wait_for(lambda: lab.job(job["id"])["runs"][0]["step"] > 0, timeout=120, what="training to start")

    response = lab.http.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    assert all(run["cancel_requested"] for run in response.json()["runs"])
    _, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=120)
    assert job["state"] == "cancelled" and job["finished_at"]
    assert all(run["state"] == "cancelled" and 0 < run["step"] < LONG_STEPS for run in job["runs"])

    # the worker is free again
    again = submit(lab, job_body(seeds=[3]))
    _, again = follow_states(lambda: lab.job(again["id"]), until=ended, timeout=120)
    assert again["state"] == "succeeded"


@pytest.fixture
def split_seeds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The API process plans one task per seed (IRED_SPLIT_SEEDS=true)."""
    monkeypatch.setenv("IRED_SPLIT_SEEDS", "true")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_split_seeds_train_as_separate_tasks(lab: Lab, worker: ServiceProcess, split_seeds: None) -> None:
    job = submit(lab, job_body(seeds=[0, 1]))
    _, job = follow_states(lambda: lab.job(job["id"]), until=ended, timeout=120)
    assert job["state"] == "succeeded"
    with lab.session() as session:
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job["id"])).all()
    assert sorted(artifact.run_id for artifact in artifacts) == [run["id"] for run in job["runs"]]
