"""Issue 16, finding 6 (quotas) on the real Postgres: per-user limits on estimated GPU-hours and on jobs
queued or running, set by an admin with `ired-dcd users quota`, refused with a 429 that states the numbers.

Before: any user could submit 64 seeds × 10⁷ steps at batch 65,536.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from ired_dcd.models import Job
from ired_dcd.services.quotas import gpu_hours
from ired_dcd.services.users import add_user
from tests.conftest import Lab
from tests.utils.services import IRED_DCD, job_body

pytestmark = pytest.mark.services


def cli(lab: Lab, *args: str) -> str:
    """`ired-dcd users …` in a process of its own, as an admin runs it on the server."""
    done = subprocess.run([*IRED_DCD, "users", *args], env=lab.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def user(lab: Lab) -> Iterator[tuple[str, httpx.Client]]:
    """A new user of this test and an HTTP client signed in as them."""
    name = f"q-{uuid.uuid4().hex[:8]}"
    with lab.session() as session:
        _user, token = add_user(session=session, name=name)
    with httpx.Client(base_url=lab.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        yield name, client


def jobs_of(lab: Lab, name: str) -> int:
    with lab.session() as session:
        return session.scalar(select(func.count()).select_from(Job).where(Job.owner.has(name=name))) or 0


def test_the_issues_job_is_refused_with_its_estimate_and_nothing_is_stored(lab: Lab, user) -> None:
    name, client = user
    overrides = {"train_steps": 10**7, "batch_size": 65536}
    huge = {"config": "q204", "seeds": {"start": 0, "count": 64}, "overrides": overrides}
    response = client.post("/jobs", json=huge)
    assert response.status_code == 429, response.text
    estimate = gpu_hours("q204_dcd_full", seeds=64, steps=10**7, batch_size=65536)
    detail = response.json()["detail"]
    assert detail.startswith(f"quota: this job needs an estimated {estimate:.4g} GPU-hours (64 seed(s) × 10000000")
    assert f"{name} has 0 GPU-hours queued or training and a limit of 100" in detail
    assert jobs_of(lab, name) == 0


def test_an_admin_sets_the_limits_and_submissions_beyond_them_are_refused(lab: Lab, user) -> None:
    name, client = user
    one = gpu_hours("q204_dcd_full", seeds=2, steps=40, batch_size=16)  # a tiny job: job_body()
    assert "(default)" in cli(lab, "quota", name)
    cli(lab, "quota", name, "--queued-jobs", "2", "--gpu-hours", str(2.5 * one))
    shown = cli(lab, "quota", name)
    assert "jobs queued or running: 0 of 2\n" in shown and f"of {2.5 * one:g}\n" in shown

    assert [client.post("/jobs", json=job_body()).status_code for _ in range(2)] == [201, 201]
    third = client.post("/jobs", json=job_body())
    assert third.status_code == 429
    assert third.json()["detail"].startswith(f"quota: {name} has 2 job(s) queued or running, the limit is 2")

    cli(lab, "quota", name, "--queued-jobs", "10")
    over = client.post("/jobs", json=job_body())  # the third job's 2 seeds would make 3 × `one` > 2.5 × `one`
    assert over.status_code == 429
    used = f"{name} has {2 * one:.4g} GPU-hours queued or training and a limit of {2.5 * one:.4g}"
    assert used in over.json()["detail"]
    assert jobs_of(lab, name) == 2

    first = client.get("/jobs", params={"owner": name}).json()["data"][-1]
    assert client.post(f"/jobs/{first['id']}/cancel").status_code == 200  # room again: a cancelled job ends
    assert client.post("/jobs", json=job_body()).status_code == 201
    assert "GPU-HOURS" in cli(lab, "list") and cli(lab, "quota", name, "--default").count("(default)") == 2


def test_admins_have_no_limit(lab: Lab) -> None:
    name = f"qa-{uuid.uuid4().hex[:8]}"
    with lab.session() as session:
        _user, token = add_user(session=session, name=name, admin=True)
    headers = {"Authorization": f"Bearer {token}"}
    huge = job_body(seeds=range(64), train_steps=10**7, batch_size=65536)
    response = httpx.post(f"{lab.base_url}/jobs", json=huge, headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    assert httpx.post(f"{lab.base_url}/jobs/{response.json()['id']}/cancel", headers=headers).status_code == 200
    assert "(admin: no limits)" in cli(lab, "quota", name)
