"""The job API over HTTP on the real Postgres and Redis (no worker here: runs stay queued)."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select, text

from ired_dcd.models import Job, JobTag, Metric, Run, User
from ired_dcd.services.execution import dispatch_next
from ired_dcd.services.runs import set_state, upsert_metrics
from ired_dcd.services.scheduler import WAITER_KEY, dispatch, lock
from ired_dcd.services.users import get_or_create_user
from ired_dcd.states import State
from tests.conftest import Lab
from tests.utils.results_factories import add_job
from tests.utils.services import ServiceProcess, free_port, job_body, tiny, wait_for

pytestmark = pytest.mark.services

TABLES = (User, Job, Run, JobTag, Metric)


def queued_tasks(lab: Lab) -> int:
    """Messages waiting in this module's Redis queue (all priority levels)."""
    broker = redis.Redis.from_url(lab.env["BROKER_URL"])
    return sum(broker.llen(key) for key in broker.keys(f"{lab.env['IRED_QUEUE']}*") if broker.type(key) == b"list")


def snapshot(lab: Lab) -> dict[str, int]:
    with lab.session() as session:
        counts = {model.__tablename__: session.scalar(select(func.count()).select_from(model)) for model in TABLES}
    return {**counts, "queued tasks": queued_tasks(lab)}


@pytest.fixture(scope="module", autouse=True)
def default_user(lab: Lab) -> None:
    """Create the default user up front, so that every table count below is stable."""
    with lab.session() as session:
        get_or_create_user(session=session, name="local")


def submit(lab: Lab, body: dict[str, Any]) -> dict[str, Any]:
    response = lab.http.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


INVALID = [
    ({"config": "q999"}, "config: unknown preset 'q999'; valid: q100_denoise_only"),
    ({"overrides": {"learning_rate": 0.1}}, "overrides: learning_rate: Extra inputs are not permitted"),
    ({"overrides": {"train_steps": "many"}}, "overrides: train_steps: Input should be a valid integer"),
    ({"overrides": {"train_steps": 0}}, "overrides: train_steps: Input should be greater than or equal to 1"),
    ({"overrides": {"lr": 2.0}}, "overrides: lr: Input should be less than or equal to 1"),
    (
        {"overrides": {"energy_t_min_frac": 0.9, "energy_t_max_frac": 0.1}},
        "overrides: config: Value error, energy_t_min_frac must not exceed energy_t_max_frac",
    ),
    ({"overrides": {"name": "mine"}}, "overrides: name: cannot be overridden"),
    ({"seeds": list(range(65))}, "seeds: at most 64 per job, got 65"),
    ({"seeds": {"start": 0, "count": 65}}, "seeds: count: Input should be less than or equal to 64"),
    ({"seeds": {"begin": 0, "count": 2}}, "seeds: begin: Extra inputs are not permitted"),
    ({"seeds": []}, "seeds: must not be empty"),
    ({"seeds": {"start": 3, "count": 0}}, "seeds: must not be empty"),
    ({"seeds": [1, 2, 1, 2]}, "seeds: duplicate seed(s) 1, 2"),
    ({"seeds": [0, -1]}, "seeds: -1 is out of range; seeds lie in [0, 2147483647]"),
    ({"seeds": [2**40]}, "seeds: 1099511627776 is out of range"),
    ({"seeds": "0-9"}, "seeds: Input should be a valid list"),
    ({"seeds": [0, "one"]}, "seeds.1: Input should be a valid integer, unable to parse string as an integer"),
    ({"priority": 10}, "priority: Input should be less than or equal to 9"),
    ({"tags": ["has space"]}, "tags.0: String should match pattern"),
    ({"executor": "mainframe"}, "executor: 'mainframe' is not available on this server; valid: celery"),
    ({"seed": [0]}, "seed: Extra inputs are not permitted"),
    ({"config": None}, "config: Input should be a valid string"),
]


@pytest.mark.parametrize(
    ("change", "message"), INVALID, ids=[f"{i}-{m.split(':')[0]}" for i, (_, m) in enumerate(INVALID)]
)
def test_invalid_submission_is_422_naming_the_field_and_stores_nothing(
    lab: Lab, change: dict[str, Any], message: str
) -> None:
    body = job_body()
    body["overrides"].update(change.get("overrides", {}))
    body.update({key: value for key, value in change.items() if key != "overrides"})
    before = snapshot(lab)
    response = lab.http.post("/jobs", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(message), detail
    assert snapshot(lab) == before


def test_missing_fields_and_bad_json_are_422(lab: Lab) -> None:
    before = snapshot(lab)
    response = lab.http.post("/jobs", json={"seeds": [0]})
    assert (response.status_code, response.json()) == (422, {"detail": "config: Field required"})
    response = lab.http.post("/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON decode error" in response.json()["detail"]
    assert snapshot(lab) == before


def test_submit_stores_job_and_runs_then_enqueues_one_task(lab: Lab) -> None:
    before = queued_tasks(lab)
    job = submit(
        lab,
        {**job_body("Q-204", seeds=[]), "seeds": {"start": 3, "count": 3}, "tags": ["pilot", "pilot"], "priority": 7},
    )
    assert job["config"] == "q204_dcd_full" and job["state"] == "queued" and job["owner"] == "local"
    assert job["seeds"] == [3, 4, 5] and [run["seed"] for run in job["runs"]] == [3, 4, 5]
    assert all(run["state"] == "queued" and run["total_steps"] == 40 for run in job["runs"])
    assert job["tags"] == ["pilot"] and job["priority"] == 7
    assert job["resolved_config"]["hidden_dim"] == 32 and job["resolved_config"]["replay"] is True
    assert job["overrides"] == tiny() and len(job["config_hash"]) == 16
    assert queued_tasks(lab) == before + 1  # one ensemble task for all three seeds
    assert lab.job(job["id"]) == job


def test_list_filters_and_pages(lab: Lab) -> None:
    q201 = submit(lab, {**job_body("q201"), "tags": ["list-test", "baseline"]})
    q204 = submit(lab, {**job_body("q204"), "tags": ["list-test"]})
    lab.http.post(f"/jobs/{q201['id']}/cancel")

    def ids(**params: Any) -> list[int]:
        response = lab.http.get("/jobs", params=params)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["data"]]

    assert ids(tag="list-test") == [q204["id"], q201["id"]]
    assert ids(tag="list-test", config="Q-201") == [q201["id"]]
    assert ids(tag="list-test", config=q204["config_hash"]) == [q204["id"]]
    assert ids(tag="list-test", state="cancelled") == [q201["id"]]
    assert ids(tag="list-test", owner="local") == [q204["id"], q201["id"]]
    assert ids(tag="list-test", owner="nobody") == []
    assert ids(tag="list-test", limit=1, offset=1) == [q201["id"]]
    page = lab.http.get("/jobs", params={"tag": "list-test", "limit": 1}).json()
    assert page["count"] == 2 and len(page["data"]) == 1
    for params, field in (({"state": "paused"}, "state"), ({"limit": 0}, "limit"), ({"offset": -1}, "offset")):
        response = lab.http.get("/jobs", params=params)
        assert response.status_code == 422 and response.json()["detail"].startswith(f"{field}: "), response.text


def test_the_job_list_counts_runs_per_state_and_view_full_lists_them(lab: Lab) -> None:
    job = submit(lab, {**job_body("q201", seeds=[0, 1, 2]), "tags": ["summary-test"]})
    lab.http.post(f"/jobs/{job['id']}/cancel")
    (summary,) = lab.http.get("/jobs", params={"tag": "summary-test"}).json()["data"]
    assert summary["runs"] == {"cancelled": 3} and summary["steps_total"] == 3 * tiny()["train_steps"]
    assert "resolved_config" not in summary and summary["config_hash"] == job["config_hash"]
    (full,) = lab.http.get("/jobs", params={"tag": "summary-test", "view": "full"}).json()["data"]
    assert full == lab.job(job["id"])


def test_a_submission_during_a_dispatch_pass_does_not_wait_for_it_and_the_next_pass_sends_it(lab: Lab) -> None:
    """Callers arriving while a pass runs share the next pass: one waits for the lock, the others answer
    at once (issue 14: 50 clients submitting together each waited for every pass before theirs)."""

    def waiting_for_the_lock() -> bool:
        with lab.session() as session:
            held = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :key AND granted")
            return bool(session.scalar(held, {"key": WAITER_KEY}))

    with lab.session() as pass_under_way:
        lock(pass_under_way)
        waiter = threading.Thread(target=dispatch_next)
        waiter.start()
        wait_for(waiting_for_the_lock, timeout=30, what="a caller waiting for the dispatch lock")
        job = submit(lab, job_body(seeds=[0]))  # answered while the lock is still held: it did not wait
        assert task_ids(lab, job["id"]) == [None]
        pass_under_way.commit()
    waiter.join(60)
    assert not waiter.is_alive()
    assert None not in task_ids(lab, job["id"])  # the waiter's pass sent it


def task_ids(lab: Lab, job_id: int) -> list[str | None]:
    with lab.session() as session:
        return list(session.scalars(select(Run.task_id).where(Run.job_id == job_id)))


def test_unknown_ids_are_404(lab: Lab) -> None:
    for method, path, detail in (
        ("GET", "/jobs/999999", "job 999999 not found"),
        ("POST", "/jobs/999999/cancel", "job 999999 not found"),
        ("POST", "/jobs/999999/retry", "job 999999 not found"),
        ("GET", "/runs/999999", "run 999999 not found"),
        ("GET", "/runs/999999/metrics", "run 999999 not found"),
    ):
        response = lab.http.request(method, path)
        assert (response.status_code, response.json()) == (404, {"detail": detail})
    response = lab.http.get("/jobs/abc")
    assert response.status_code == 422 and response.json()["detail"].startswith("job_id: ")


def test_cancel_queued_job_at_once_then_409(lab: Lab) -> None:
    job = submit(lab, job_body())
    response = lab.http.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["state"] == "cancelled" and {run["state"] for run in cancelled["runs"]} == {"cancelled"}
    assert cancelled["finished_at"] is not None
    response = lab.http.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 409
    assert response.json() == {"detail": f"job {job['id']} has already ended (cancelled); nothing to cancel"}


def test_retry_only_failed_and_diverged_runs_from_scratch(lab: Lab) -> None:
    job = submit(lab, job_body(seeds=[0, 1, 2]))
    response = lab.http.post(f"/jobs/{job['id']}/retry")
    assert response.status_code == 409 and "no failed or diverged runs" in response.json()["detail"]
    run_ids = [run["id"] for run in job["runs"]]
    with lab.session() as session:  # seed 0 diverges, seed 1 fails, seed 2 succeeds
        runs = [session.get(Run, run_id) for run_id in run_ids]
        for run, outcome in zip(runs, (State.DIVERGED, State.FAILED, State.SUCCEEDED), strict=True):
            assert run is not None
            set_state(run, State.RUNNING)
            run.attempts, run.step = 1, 40
            set_state(run, outcome, error=None if outcome is State.SUCCEEDED else f"{outcome} here")
        upsert_metrics(session=session, rows=[(run_ids[0], 5, "loss", 1.0), (run_ids[2], 5, "loss", 0.5)])
        session.commit()
    assert lab.job(job["id"])["state"] == "failed"
    assert lab.job(job["id"])["error"] == "seed 0: diverged here; seed 1: failed here"
    before = queued_tasks(lab)
    response = lab.http.post(f"/jobs/{job['id']}/retry")
    assert response.status_code == 200, response.text
    retried = response.json()
    assert [run["state"] for run in retried["runs"]] == ["queued", "queued", "succeeded"]
    assert retried["state"] == "running" and retried["error"] is None and retried["finished_at"] is None
    assert [(run["step"], run["attempts"], run["error"]) for run in retried["runs"][:2]] == [(0, 0, None)] * 2
    assert queued_tasks(lab) == before + 1
    assert lab.http.get(f"/runs/{run_ids[0]}/metrics").json()["series"] == []  # old curve dropped
    assert lab.http.get(f"/runs/{run_ids[2]}/metrics").json()["series"] != []  # kept


def test_learning_curves_upsert_filter_and_non_finite(lab: Lab) -> None:
    run_id = submit(lab, job_body(seeds=[0]))["runs"][0]["id"]
    rows = [(run_id, step, name, step / 10) for step in (5, 10, 15) for name in ("loss", "val_mse")]
    with lab.session() as session:
        upsert_metrics(session=session, rows=rows)
        upsert_metrics(session=session, rows=[*rows[:2], (run_id, 20, "loss", float("nan"))])  # replay + NaN
        session.commit()
        assert session.scalar(select(func.count()).where(Metric.run_id == run_id)) == 7
    curves = lab.http.get(f"/runs/{run_id}/metrics").json()
    assert curves["run_id"] == run_id
    assert curves["series"] == [
        {"name": "loss", "steps": [5, 10, 15, 20], "values": [0.5, 1.0, 1.5, None]},
        {"name": "val_mse", "steps": [5, 10, 15], "values": [0.5, 1.0, 1.5]},
    ]
    only = lab.http.get(f"/runs/{run_id}/metrics", params={"names": "val_mse,nothing", "after_step": 5}).json()
    assert only["series"] == [{"name": "val_mse", "steps": [10, 15], "values": [1.0, 1.5]}]
    repeated = lab.http.get(f"/runs/{run_id}/metrics?names=loss&names=val_mse").json()
    assert [series["name"] for series in repeated["series"]] == ["loss", "val_mse"]
    run = lab.http.get(f"/runs/{run_id}").json()
    assert run["state"] == "queued" and run["worker"] is None and run["final_metrics"] is None


def test_configs_lists_presets_and_fields(lab: Lab) -> None:
    body = lab.http.get("/configs").json()
    presets = {preset["short"]: preset for preset in body["presets"]}
    assert {"q100", "q200", "q201", "q202", "q203", "q204"} <= set(presets)
    assert presets["q204"]["name"] == "q204_dcd_full"
    assert presets["q204"]["differences"]["sampler"] == "langevin"
    assert presets["q204"]["config"]["train_steps"] == 100_000
    assert body["fields"]["train_steps"]["minimum"] == 1 and body["max_seeds"] == 64


def test_health_reports_the_lab_server_without_workers(lab: Lab) -> None:
    response = lab.http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "mode": "lab-server", "database": "ok", "broker": "ok", "workers": 0}


GAUGE_LINE = re.compile(r'^(ired_jobs|ired_runs|ired_running_steps)(?:\{state="(\w+)"\})? (\S+)$', re.MULTILINE)


def gauges(lab: Lab) -> dict[str, float]:
    """The job and run gauges of GET /metrics: 'ired_jobs{queued}' → value, 'ired_running_steps' → value."""
    response = lab.http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = {
        f"{name}{{{state}}}" if state else name: float(value)
        for name, state, value in GAUGE_LINE.findall(response.text)
    }
    assert {"ired_jobs{cancelled}", "ired_runs{queued}", "ired_running_steps"} <= set(found), response.text
    return found


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def test_prometheus_gauges_follow_submit_cancel_and_training_progress(lab: Lab) -> None:
    start = gauges(lab)
    job = submit(lab, job_body(seeds=[0, 1]))
    assert moved(start, gauges(lab)) == {"ired_jobs{queued}": 1, "ired_runs{queued}": 2}

    assert lab.http.post(f"/jobs/{job['id']}/cancel").status_code == 200
    assert moved(start, gauges(lab)) == {"ired_jobs{cancelled}": 1, "ired_runs{cancelled}": 2}

    cancelled = gauges(lab)
    with lab.session() as session:  # a job half way: its three runs at step 200 (no worker in this module)
        add_job(session, "q204", {0: None, 1: None, 2: None}, state=State.RUNNING)
    assert moved(cancelled, gauges(lab)) == {
        "ired_jobs{running}": 1,
        "ired_runs{running}": 3,
        "ired_running_steps": 600,
    }


@pytest.fixture(scope="module")
def api_without_broker(lab: Lab) -> Iterator[httpx.Client]:
    """The API in its own process, on the same database, with a broker that refuses connections."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port)]
    env = {**lab.env, "BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    server = ServiceProcess(argv, env=env, log_path=lab.tmp / "api-without-broker.log")
    server.wait_for_log("Application startup complete", timeout=60)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=lab.auth_headers) as http:
        yield http
    server.stop()


def test_queue_unreachable_keeps_the_job_queued_in_the_database(lab: Lab, api_without_broker: httpx.Client) -> None:
    response = api_without_broker.post("/jobs", json=job_body())
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["state"] == "queued" and lab.job(job["id"])["state"] == "queued"
    with lab.session() as session:  # waiting in the database, the queue of record, for the broker
        runs = session.scalars(select(Run).where(Run.job_id == job["id"])).all()
        assert [(run.task_id, run.dispatched_at) for run in runs] == [(None, None)] * len(runs)
    before = queued_tasks(lab)
    with lab.session() as session:  # the broker is back: the next dispatch pass hands the job over
        assert dispatch(session=session) == 1
    assert queued_tasks(lab) == before + 1


def test_health_is_503_when_the_broker_is_down(api_without_broker: httpx.Client) -> None:
    response = api_without_broker.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"], body["workers"]) == ("degraded", "ok", None)
    assert body["broker"].startswith("error: ")


def test_openapi_documents_every_endpoint(lab: Lab) -> None:
    schema = lab.http.get("/openapi.json").json()
    for path in (
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/retry",
        "/sweeps",
        "/sweeps/{sweep_id}",
        "/sweeps/{sweep_id}/cancel",
        "/runs/{run_id}",
        "/runs/{run_id}/metrics",
        "/configs",
        "/health",
        "/metrics",
    ):
        operations = schema["paths"][path].values()
        assert all(operation.get("description") for operation in operations), path
    assert lab.http.get("/docs").status_code == 200
