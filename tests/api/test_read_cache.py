"""Cached reads (api/cache.py, ired_dcd/services/change_feed.py) on the real Postgres.

The job list, comparisons and signed-in users are answered from memory until the database notifies a
change. Changes below are made with plain SQL on a connection of the test's own, as another process
would: only the database's notification can tell the server about them.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from api import cache as cache_module
from api.cache import ReadCache
from ired_dcd.models import Job
from ired_dcd.services.change_feed import CHANNEL, Version, listen_url
from tests.conftest import Lab
from tests.utils.services import IRED_DCD, job_body, wait_for, wait_for_async

pytestmark = pytest.mark.services

WAIT_S = 30  # a hang guard, not a latency claim: how fast changes arrive is for bench/, not for tests
SENTINEL = "ired_test_sentinel"  # a channel of the tests' own; see `heard` below
LOOKUP_LINE = re.compile(r'^ired_read_cache_lookups_total\{cache="(\w+)",outcome="(\w+)"\} (\S+)$', re.MULTILINE)


def lookups(lab: Lab) -> dict[tuple[str, str], float]:
    """The server's read-cache counters from GET /metrics: (cache, outcome) → lookups."""
    response = lab.http.get("/metrics")
    assert response.status_code == 200
    return {(cache, outcome): float(n) for cache, outcome, n in LOOKUP_LINE.findall(response.text)}


def counted(lab: Lab, action: Any) -> dict[tuple[str, str], float]:
    """How the counters moved while `action()` ran."""
    before = lookups(lab)
    action()
    after = lookups(lab)
    return {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}


def settle(lab: Lab, read: Any) -> None:
    """Read until the answer comes from memory (the notification of the last write has been heard)."""
    wait_for(lambda: counted(lab, read).get(("answers", "hit")) == 1, timeout=WAIT_S, what="a read from memory")


@pytest.fixture
def sql(lab: Lab) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection to the lab's database, outside SQLAlchemy (like another process)."""
    url = listen_url(lab.env["DATABASE_URL"])
    assert url is not None
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


def submit(lab: Lab, seeds: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    response = lab.http.post("/jobs", json=job_body(seeds=seeds))
    assert response.status_code == 201, response.text
    return response.json()


def listed_priority(lab: Lab, job_id: int) -> int:
    page = lab.http.get("/jobs", params={"limit": 500}).json()
    return next(job["priority"] for job in page["data"] if job["id"] == job_id)


def test_job_list_is_served_from_memory_until_another_process_changes_a_job(
    lab: Lab, sql: psycopg.Connection[Any]
) -> None:
    job = submit(lab)
    assert listed_priority(lab, job["id"]) == 5  # its own write is read back at once
    settle(lab, lambda: listed_priority(lab, job["id"]))
    moved = counted(lab, lambda: [listed_priority(lab, job["id"]) for _ in range(5)])
    assert moved[("answers", "hit")] == 5

    sql.execute("UPDATE jobs SET priority = 8 WHERE id = %s", (job["id"],))
    wait_for(lambda: listed_priority(lab, job["id"]) == 8, timeout=WAIT_S, what="the change in the job list")


def test_this_process_reads_its_writes_at_once_and_a_commit_without_writes_changes_nothing(lab: Lab) -> None:
    job = submit(lab)
    settle(lab, lambda: listed_priority(lab, job["id"]))
    with lab.session() as session:  # the server runs in this process: its sessions are this process's
        session.execute(select(func.count()).select_from(Job))
        session.commit()
    assert counted(lab, lambda: listed_priority(lab, job["id"])).get(("answers", "hit")) == 1
    with lab.session() as session:
        session.get_one(Job, job["id"]).priority = 7
        session.commit()
    assert listed_priority(lab, job["id"]) == 7  # no waiting for the notification


def test_progress_of_a_run_notifies_jobs_and_success_notifies_results(lab: Lab, sql: psycopg.Connection[Any]) -> None:
    run_id = submit(lab)["runs"][0]["id"]
    url = listen_url(lab.env["DATABASE_URL"])
    assert url is not None
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        listener.execute(f"LISTEN {SENTINEL}")

        def heard(statement: str) -> set[str]:
            """The topics the statement's commit notified: everything before a later commit's sentinel
            (Postgres delivers notifications in commit order), so no fixed wait for stragglers."""
            sql.execute(statement, (run_id,))
            sql.execute(f"NOTIFY {SENTINEL}")
            topics = set()
            for note in listener.notifies(timeout=WAIT_S):
                if note.channel == SENTINEL:
                    return topics
                topics.add(note.payload)
            raise AssertionError(f"no sentinel within {WAIT_S} s after {statement!r} (heard {topics})")

        assert heard("UPDATE runs SET state = 'running', step = 10 WHERE id = %s") == {"jobs"}
        assert heard("UPDATE runs SET step = 20 WHERE id = %s") == {"jobs"}
        assert heard("UPDATE runs SET state = 'succeeded', final_metrics = '{\"val_mse\": 0.01}' WHERE id = %s") == {
            "jobs",
            "results",
        }
        assert heard("UPDATE runs SET final_metrics = '{\"val_mse\": 0.02}' WHERE id = %s") == {"jobs", "results"}
        assert heard("UPDATE runs SET heartbeat_at = now() WHERE id = %s") == {"jobs"}
        assert heard("DELETE FROM runs WHERE id = %s") == {"jobs", "results"}


def test_comparison_is_served_from_memory_until_a_run_succeeds(lab: Lab, sql: psycopg.Connection[Any]) -> None:
    job = submit(lab, seeds=(7301, 7302))  # seeds no other test succeeds with: the comparison counts them once
    params = {"configs": "q204", "baseline": "plan"}

    def q204_seeds() -> int:
        response = lab.http.get("/results/compare", params=params)
        assert response.status_code == 200, response.text
        return next(row["n"] for row in response.json()["rows"] if row["name"].startswith("q204"))

    seeds = q204_seeds()
    settle(lab, q204_seeds)
    moved = counted(lab, lambda: [q204_seeds() for _ in range(3)])
    assert moved[("answers", "hit")] == 3
    sql.execute("UPDATE runs SET step = 5 WHERE job_id = %s", (job["id"],))  # progress: the comparison stands
    assert counted(lab, q204_seeds).get(("answers", "hit")) == 1

    sql.execute(
        "UPDATE runs SET state = 'succeeded', final_metrics = '{\"val_mse\": 0.0095}' WHERE job_id = %s", (job["id"],)
    )
    wait_for(lambda: q204_seeds() == seeds + 2, timeout=WAIT_S, what="the two new results in the comparison")


def test_a_token_revoked_by_another_process_is_refused(lab: Lab) -> None:
    name = f"leaving-{uuid.uuid4().hex[:8]}"

    def users(*args: str) -> str:  # the real command in a process of its own, as an admin would run it
        done = subprocess.run([*IRED_DCD, "users", *args], env=lab.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    client = httpx.Client(base_url=lab.base_url, headers={"Authorization": f"Bearer {users('add', name)}"})
    assert counted(lab, lambda: [client.get("/jobs").status_code for _ in range(2)])[("identities", "hit")] >= 1
    users("revoke", name)
    wait_for(lambda: client.get("/jobs").status_code == 401, timeout=WAIT_S, what="the revoked token refused")


def test_reads_stay_right_while_the_change_feed_reconnects(lab: Lab, sql: psycopg.Connection[Any]) -> None:
    job = submit(lab)
    listed_priority(lab, job["id"])
    terminated = sql.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
        "AND query = %s AND pid <> pg_backend_pid()",
        (f"LISTEN {CHANNEL}",),
    ).fetchall()
    assert terminated == [(True,)]  # the server's one listener
    sql.execute("UPDATE jobs SET priority = 2 WHERE id = %s", (job["id"],))  # while nobody listens
    wait_for(lambda: listed_priority(lab, job["id"]) == 2, timeout=WAIT_S, what="the change made while nobody listened")

    settle(lab, lambda: listed_priority(lab, job["id"]))  # the feed is back
    sql.execute("UPDATE jobs SET priority = 3 WHERE id = %s", (job["id"],))
    wait_for(lambda: listed_priority(lab, job["id"]) == 3, timeout=WAIT_S, what="the change heard after reconnecting")


class _Feed:
    """A feed whose version the test sets (unit tests of the cache alone)."""

    def __init__(self) -> None:
        self.current = Version(own=0, heard=(0,))

    def version(self, topics: Any) -> Version:
        return self.current


def unit_cache(feed: _Feed | None = None, clock: Callable[[], float] = time.monotonic) -> ReadCache:
    """A cache with a name of its own (its lookup counters are this test's alone) on a feed the test sets."""
    return ReadCache(f"unit-{uuid.uuid4().hex[:8]}", feed or _Feed(), capacity=2, clock=clock)  # type: ignore[arg-type]


def lookups_of(cache: ReadCache, outcome: str) -> float:
    return (
        cache_module.REGISTRY.get_sample_value(
            "ired_read_cache_lookups_total", {"cache": cache.name, "outcome": outcome}
        )
        or 0.0
    )


def never() -> str:
    raise AssertionError("computed again: the value in memory should have been served")


def test_one_computation_serves_every_request_that_arrives_while_it_runs() -> None:
    cache = unit_cache()
    release, calls = threading.Event(), []

    def compute() -> str:
        calls.append(1)
        release.wait(WAIT_S)
        return "page"

    async def many() -> list[str]:
        requests = [asyncio.ensure_future(cache.get("key", ("jobs",), compute)) for _ in range(20)]

        async def all_arrived() -> bool:  # one computes, the 19 others wait for that same computation
            return lookups_of(cache, "miss") == 1 and lookups_of(cache, "shared") == 19

        await wait_for_async(all_arrived, timeout=WAIT_S, what="all 20 requests to arrive")
        assert not any(request.done() for request in requests)  # the computation is still running
        release.set()
        return await asyncio.gather(*requests)

    assert asyncio.run(many()) == ["page"] * 20
    assert len(calls) == 1


async def served(cache: ReadCache, expected: str) -> str:
    """Wait until the cache serves `expected` from memory (a background computation has stored it)."""

    async def serves() -> bool:
        return await cache.get("key", ("jobs",), never) == expected

    await wait_for_async(serves, timeout=WAIT_S, what=f"{expected!r} from memory")
    return expected


def test_a_change_heard_serves_the_previous_value_while_one_of_this_process_waits_for_the_new() -> None:
    feed, clock = _Feed(), [1000.0]
    cache = unit_cache(feed=feed, clock=lambda: clock[0])
    pages = iter(["first", "second", "third"])

    async def scenario() -> list[str]:
        seen = [await cache.get("key", ("jobs",), lambda: next(pages))]
        feed.current = Version(own=0, heard=(1,))  # another process wrote
        seen.append(await cache.get("key", ("jobs",), never))  # at once, the previous value
        clock[0] += cache_module.MIN_REFRESH_SECONDS
        seen.append(await cache.get("key", ("jobs",), lambda: next(pages)))  # still; the new one is computed
        seen.append(await served(cache, "second"))
        feed.current = Version(own=1, heard=(1,))  # this process wrote: read back at once
        seen.append(await cache.get("key", ("jobs",), lambda: next(pages)))
        return seen

    assert asyncio.run(scenario()) == ["first", "first", "first", "second", "third"]


def test_a_value_in_use_is_refreshed_in_the_background_and_an_old_one_is_never_served() -> None:
    clock = [1000.0]
    cache = unit_cache(clock=lambda: clock[0])
    pages = iter(["first", "second", "third"])

    async def scenario() -> list[str]:
        seen = [await cache.get("key", ("jobs",), lambda: next(pages))]
        clock[0] += cache_module.REFRESH_SECONDS  # due for a refresh: served while it runs
        seen.append(await cache.get("key", ("jobs",), lambda: next(pages)))
        seen.append(await served(cache, "second"))
        clock[0] += cache_module.MAX_AGE_SECONDS  # nobody asked for too long: wait for a new value
        seen.append(await cache.get("key", ("jobs",), lambda: next(pages)))
        return seen

    assert asyncio.run(scenario()) == ["first", "first", "second", "third"]
