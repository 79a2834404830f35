"""Sweeps over HTTP on the real Postgres and Redis, trained by a real Celery worker: one job per grid point,
validated whole (a bad sweep stores nothing), cancelled whole, compared by setting; and `ired-dcd sweep`."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from ired_dcd.models import Job, JobTag, Run, Sweep
from ired_dcd.services.quotas import set_quota
from ired_dcd.services.users import add_user
from ired_dcd.states import TERMINAL
from tests.conftest import Lab
from tests.utils.services import IRED_DCD, LONG_STEPS, tiny, wait_for

pytestmark = pytest.mark.services

GRID = {"energy_reg_weight": [0.1, 1], "langevin_sigma_mult": [0.5, 1]}


def sweep_body(**changes: Any) -> dict[str, Any]:
    """A POST /sweeps body: q202 over the 2×2 GRID, two seeds each, at the tiny size."""
    return {"config": "q202", "grid": GRID, "seeds": [0, 1], "overrides": tiny(), **changes}


def stored(lab: Lab) -> dict[str, int]:
    with lab.session() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) for model in (Sweep, Job, Run)
        }


def follow(lab: Lab, sweep_id: int, timeout: float) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        status = lab.http.get(f"/sweeps/{sweep_id}").json()
        return status if status["state"] in TERMINAL else None

    return wait_for(ended, timeout=timeout, what=f"sweep {sweep_id} to end", interval=0.5)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"grid": {"energy_reg_weight": [0.1, -1]}},
            "grid: energy_reg_weight=-1: overrides: energy_reg_weight: Input ",
        ),
        ({"grid": {"energy_reg_wieght": [1]}}, "grid: energy_reg_wieght=1: overrides: energy_reg_wieght: Extra inputs"),
        ({"grid": {"energy_reg_weight": [1, 1]}}, "grid: energy_reg_weight: value(s) 1 given more than once"),
        ({"grid": {"energy_reg_weight": []}}, "grid: energy_reg_weight: needs a non-empty list of values"),
        ({"grid": {}}, "grid: no field to sweep"),
        ({"grid": {"lr": [1, 1.0]}}, "grid: lr=1.0 is the same setting as lr=1"),
        ({"grid": {"lr": list(range(1, 66))}}, "grid: 65 points; at most 64 per sweep"),
        ({"grid": {"batch_size": [8, 16]}}, "grid: batch_size is also in overrides"),
        ({"config": "q999"}, "config: unknown preset 'q999'"),
        ({"seeds": [0, 0]}, "seeds: duplicate seed(s) 0"),
    ],
)
def test_a_bad_sweep_is_422_naming_the_field_and_stores_nothing(lab: Lab, changes, message) -> None:
    before = stored(lab)
    response = lab.http.post("/sweeps", json=sweep_body(**changes))
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(message)
    assert stored(lab) == before


def test_a_sweep_over_the_quota_is_refused_whole(lab: Lab) -> None:
    with lab.session() as session:
        user, token = add_user(session=session, name=f"sweeper-{uuid.uuid4().hex[:8]}")
        set_quota(session=session, name=user.name, queued_jobs=3)  # the grid has 4 points
    before = stored(lab)
    response = lab.http.post("/sweeps", json=sweep_body(), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 429, response.text
    detail = response.json()["detail"]
    assert detail.startswith("quota: ") and "the sweep's 4 jobs together are over it, none was stored" in detail
    assert stored(lab) == before


def test_cancelling_a_sweep_cancels_every_job(lab: Lab) -> None:
    response = lab.http.post("/sweeps", json=sweep_body(overrides=tiny(train_steps=LONG_STEPS)))
    assert response.status_code == 201, response.text
    sweep_id = response.json()["id"]
    cancelled = lab.http.post(f"/sweeps/{sweep_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text

    def all_cancelled() -> bool:
        return lab.http.get(f"/sweeps/{sweep_id}").json()["runs"] == {"cancelled": 8}

    wait_for(all_cancelled, timeout=60, what="every run of the sweep cancelled")  # a running one within a heartbeat
    again = lab.http.post(f"/sweeps/{sweep_id}/cancel")
    assert again.status_code == 409 and again.json()["detail"].startswith(f"sweep {sweep_id} has no queued or running")
    assert lab.http.get("/sweeps/999999").status_code == 404


def test_a_2x2_sweep_over_2_seeds_trains_to_the_end_and_compares_by_setting(lab: Lab) -> None:
    lab.start_worker("sweep")
    response = lab.http.post("/sweeps", json=sweep_body())
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["config"], created["owner"], created["tag"]) == (
        "q202_dcd_cdloss",
        "local",
        f"sweep-{created['id']}",
    )
    assert [point["values"] for point in created["points"]] == [
        {"energy_reg_weight": 0.1, "langevin_sigma_mult": 0.5},
        {"energy_reg_weight": 0.1, "langevin_sigma_mult": 1},
        {"energy_reg_weight": 1, "langevin_sigma_mult": 0.5},
        {"energy_reg_weight": 1, "langevin_sigma_mult": 1},
    ]

    done = follow(lab, created["id"], timeout=600)
    assert done["state"] == "succeeded" and done["runs"] == {"succeeded": 8}
    assert done["steps_done"] == done["steps_total"] == 8 * tiny()["train_steps"]
    rows = {row["name"]: row for row in done["comparison"]["rows"]}
    assert sorted(rows) == sorted(
        f"q202_dcd_cdloss · energy_reg_weight={w} · langevin_sigma_mult={m}" for w in (0.1, 1) for m in (0.5, 1)
    )
    assert all(row["n"] == 2 for row in rows.values())

    # the jobs are plain jobs: the user's, tagged with the sweep, listed with their runs counted per state
    listed = lab.http.get("/jobs", params={"tag": created["tag"]}).json()
    assert listed["count"] == 4
    assert all(job["runs"] == {"succeeded": 2} and job["sweep_id"] == created["id"] for job in listed["data"])
    with lab.session() as session:
        tags = session.scalars(select(JobTag.tag).join(Job).where(Job.sweep_id == created["id"])).all()
    assert tags == [created["tag"]] * 4

    # the same comparison from GET /results/compare, against one of the sweep's settings
    baseline = "q202 · energy_reg_weight=0.1 · langevin_sigma_mult=1"
    params = {"tag": created["tag"], "group_by": "setting", "baseline": baseline}
    compared = lab.http.get("/results/compare", params=params).json()
    assert compared["baseline"]["name"] == "q202_dcd_cdloss · energy_reg_weight=0.1 · langevin_sigma_mult=1"
    assert {row["name"] for row in compared["rows"]} == set(rows)


def test_the_cli_submits_follows_and_cancels_a_sweep(lab: Lab) -> None:
    env = {**lab.env, "IRED_TOKEN": lab.token}
    sets = [arg for key, value in tiny(train_steps=LONG_STEPS).items() for arg in ("--set", f"{key}={value}")]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [*IRED_DCD, *args, "--server", lab.base_url]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    bad = cli("sweep", "q202", "--grid", "energy_reg_weight=0.1,-1", "--seeds", "0", *sets)
    assert bad.returncode == 1 and bad.stderr.startswith("error: grid: energy_reg_weight=-1: overrides:"), bad.stderr
    done = cli("sweep", "q202", "--grid", "energy_reg_weight=0.1,1,10", "--seeds", "0-1", "--tag", "cli-sweep", *sets)
    assert done.returncode == 0, done.stderr
    sweep_id = int(done.stdout.split()[1].rstrip(":"))
    assert done.stdout == f"sweep {sweep_id}: q202_dcd_cdloss, 3 point(s) × 2 seed(s), jobs tagged sweep-{sweep_id}\n"
    status = cli("sweep-status", str(sweep_id))
    assert status.returncode == 0 and status.stdout.startswith(f"sweep {sweep_id} "), status.stderr
    cancelled = cli("sweep-cancel", str(sweep_id))
    assert cancelled.returncode == 0 and cancelled.stdout.startswith(f"sweep {sweep_id} "), cancelled.stderr


def test_the_sweep_list_shows_a_users_sweeps_newest_first_with_their_progress(lab: Lab) -> None:
    name = f"lister-{uuid.uuid4().hex[:8]}"
    with lab.session() as session:
        _, token = add_user(session=session, name=name)
    signed = {"Authorization": f"Bearer {token}"}
    body = sweep_body(overrides=tiny(train_steps=LONG_STEPS))
    first, second = (lab.http.post("/sweeps", json=body, headers=signed).json()["id"] for _ in range(2))
    try:
        assert lab.http.post(f"/sweeps/{first}/cancel", headers=signed).status_code == 200

        def first_cancelled() -> dict[str, Any] | None:
            page = lab.http.get("/sweeps", params={"owner": name}).json()
            return page if page["data"][1]["state"] == "cancelled" else None

        listed = wait_for(first_cancelled, timeout=60, what="the first sweep cancelled")  # a running run: a heartbeat
        assert listed["count"] == 2 and [sweep["id"] for sweep in listed["data"]] == [second, first]
        for sweep in listed["data"]:
            assert (sweep["config"], sweep["owner"], sweep["tag"]) == ("q202_dcd_cdloss", name, f"sweep-{sweep['id']}")
            assert (sweep["grid"], sweep["seeds"], sum(sweep["runs"].values())) == (GRID, [0, 1], 8)
            assert sweep["steps_total"] == 8 * LONG_STEPS and "points" not in sweep and "comparison" not in sweep
        assert listed["data"][1]["runs"] == {"cancelled": 8}
        paged = lab.http.get("/sweeps", params={"owner": name, "limit": 1, "offset": 1}).json()
        assert (paged["count"], [sweep["id"] for sweep in paged["data"]]) == (2, [first])
        refused = lab.http.get("/sweeps", params={"limit": 0})
        assert refused.status_code == 422 and "limit" in refused.text

        cli = [*IRED_DCD, "sweep-list", "--owner", name, "--server", lab.base_url]
        shown = subprocess.run(cli, env={**lab.env, "IRED_TOKEN": token}, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].split() == ["SWEEP", "STATE", "CONFIG", "GRID", "SEEDS", "PROGRESS", "OWNER", "CREATED"]
        assert lines[2].split()[:7] == [
            str(first),
            "cancelled",
            "q202_dcd_cdloss",
            "energy_reg_weight=2,",
            "langevin_sigma_mult=2",
            "0-1",
            "0%",
        ]
        assert lines[-1] == "2 of 2 sweep(s)"
    finally:  # the shared worker is not kept busy by this test's long runs
        lab.http.post(f"/sweeps/{second}/cancel", headers=signed)
