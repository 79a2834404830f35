"""Issue 16, finding 3 on the real services: `/health` answers from the health monitor's latest report.

Before: every call pinged the Celery workers (~2 s) holding a thread and a database connection; 40
unauthenticated pollers stalled signed-in reads for up to 10 s. The lab here checks health once an hour,
so any check a request made would show in the monitor's count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from api.main import app
from tests.conftest import Lab, lab_server

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def quiet_lab(create_database: Callable[[], str], redis_url: str, tmp_path_factory: Any) -> Iterator[Lab]:
    from ired_dcd.db import migrate

    url = create_database()
    migrate(url)
    tmp = tmp_path_factory.mktemp("health")
    with lab_server(database_url=url, redis_url=redis_url, tmp=tmp, IRED_HEALTH_SECONDS="3600") as lab:
        yield lab


def test_forty_pollers_cost_no_check_and_signed_in_reads_go_on(quiet_lab: Lab) -> None:
    monitor = app.state.health
    checks = monitor.checks
    assert checks == 1  # the one at start

    def poll(_: int) -> httpx.Response:
        return httpx.get(f"{quiet_lab.base_url}/health", timeout=30)  # no token: a public endpoint

    with ThreadPoolExecutor(40) as pool:
        polled = pool.map(poll, range(400))
        reads = [quiet_lab.http.get("/jobs").status_code for _ in range(20)]
        answers = [response.json() for response in polled]
    assert reads == [200] * 20
    assert all(answer == answers[0] for answer in answers)
    assert answers[0]["status"] == "ok" and answers[0]["database"] == "ok" and answers[0]["workers"] == 0
    assert monitor.checks == checks  # 400 requests, no ping and no database round among them


def test_a_monitor_that_stopped_checking_reports_degraded(quiet_lab: Lab) -> None:
    monitor = app.state.health
    saved = monitor._checked_at
    monitor._checked_at -= 10 * monitor.interval  # as if the checks had stopped coming
    try:
        response = httpx.get(f"{quiet_lab.base_url}/health", timeout=30)
    finally:
        monitor._checked_at = saved
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["database"].startswith("unknown: no health check")
