"""Fair use with the real services: a database of this module's own, a Redis queue, one real worker.

One task per user in flight (IRED_USER_TASK_LIMIT=1), two tasks waiting in the broker at most
(IRED_DISPATCH_BACKLOG=2). User A submits four jobs, B two, before any worker runs: A's tasks would all
run first in a plain queue; here the worker alternates between them, A's in priority order.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from ired_dcd.models import Run
from ired_dcd.services.users import add_user
from tests.conftest import Lab, lab_server
from tests.utils.services import ended, job_body, wait_for

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def fair_lab(create_database, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    from ired_dcd.db import migrate

    url = create_database()
    migrate(url)
    limits = {"IRED_USER_TASK_LIMIT": "1", "IRED_DISPATCH_BACKLOG": "2"}
    with lab_server(database_url=url, redis_url=redis_url, tmp=tmp_path_factory.mktemp("fair"), **limits) as lab:
        yield lab


def client(lab: Lab, name: str) -> httpx.Client:
    with lab.session() as session:
        _user, token = add_user(session=session, name=name)
    return httpx.Client(base_url=lab.base_url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def dispatched(lab: Lab) -> dict[int, bool]:
    """job id → whether its task was handed to the broker."""
    with lab.session() as session:
        return {job_id: sent is not None for job_id, sent in session.execute(select(Run.job_id, Run.dispatched_at))}


def test_users_take_turns_and_priorities_order_a_users_own_jobs(fair_lab: Lab) -> None:
    alice, bob = client(fair_lab, "alice"), client(fair_lab, "bob")

    def submit(http: httpx.Client, priority: int) -> int:
        response = http.post("/jobs", json={**job_body(seeds=[0], train_steps=10), "priority": priority})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    a1, a2, a3, a4 = (submit(alice, priority) for priority in (1, 5, 9, 5))
    assert dispatched(fair_lab) == {a1: True, a2: False, a3: False, a4: False}  # alice's limit, not the backlog
    b1, b2 = submit(bob, 5), submit(bob, 5)
    assert dispatched(fair_lab) == {a1: True, a2: False, a3: False, a4: False, b1: True, b2: False}
    assert alice.get(f"/jobs/{b1}").json()["state"] == "queued"  # pending or sent, both are "queued"

    fair_lab.start_worker("fair")
    jobs = [a1, a2, a3, a4, b1, b2]
    wait_for(lambda: all(ended(fair_lab.job(j)) for j in jobs), timeout=300, what="every job to end")
    with fair_lab.session() as session:
        started = session.execute(select(Run.job_id).order_by(Run.started_at)).scalars().all()
    assert started == [a1, b1, a3, b2, a2, a4]  # alternating; alice's priority 9 before her earlier 5s
    assert all(fair_lab.job(j)["state"] == "succeeded" for j in jobs)
