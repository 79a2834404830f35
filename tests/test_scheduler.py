"""The fair-share rule (`choose`) and the reconciler's notion of a lost task, on plain objects (no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ired_dcd.services.broker import BrokerTasks
from ired_dcd.services.reconciler import _lost
from ired_dcd.services.scheduler import RunState, Task, choose
from ired_dcd.settings import Settings
from ired_dcd.states import State

NOW = datetime(2026, 1, 1, tzinfo=UTC)
_ids = iter(range(1, 10_000))


def task(owner: int, *, priority: int = 5, state: str = "pending") -> Task:
    """One single-run task of `owner`: pending (database only), waiting (in the broker) or training."""
    run_id = next(_ids)
    sent = state != "pending"
    run = RunState(
        id=run_id,
        state=State.RUNNING if state == "training" else State.QUEUED,
        task_id=f"task-{run_id}" if sent else None,
        dispatched_at=NOW if sent else None,
    )
    return Task(job_id=next(_ids), owner_id=owner, priority=priority, runs=[run])


def owners(tasks: list[Task]) -> list[int]:
    return [t.owner_id for t in tasks]


def test_a_user_alone_gets_up_to_the_limit_and_the_backlog():
    tasks = [task(1) for _ in range(10)]
    assert len(choose(tasks, user_task_limit=4, dispatch_backlog=100)) == 4
    assert len(choose(tasks, user_task_limit=100, dispatch_backlog=3)) == 3
    busy = [task(1, state="training") for _ in range(3)] + tasks
    assert len(choose(busy, user_task_limit=4, dispatch_backlog=100)) == 1  # training tasks count


def test_users_are_served_round_robin_from_the_least_served():
    # user 1 submitted first and has two tasks in flight; users 2 and 3 arrive with none
    tasks = [task(1, state="training"), task(1, state="training"), *[task(1) for _ in range(5)]]
    tasks += [task(2) for _ in range(3)] + [task(3) for _ in range(3)]
    chosen = choose(tasks, user_task_limit=10, dispatch_backlog=8)
    assert owners(chosen) == [2, 3, 2, 3, 1, 2, 3, 1]


def test_priorities_order_a_users_own_tasks_only():
    low, high, mid = task(1, priority=1), task(1, priority=9), task(1, priority=5)
    other = task(2, priority=0)
    chosen = choose([low, high, mid, other], user_task_limit=10, dispatch_backlog=10)
    assert chosen[0] is high and owners(chosen) == [1, 2, 1, 1]  # user 2's priority-0 task is not last
    assert [t.priority for t in chosen if t.owner_id == 1] == [9, 5, 1]


def test_nothing_goes_out_while_the_broker_holds_the_backlog():
    tasks = [task(1, state="waiting"), task(2, state="waiting"), task(3)]
    assert choose(tasks, user_task_limit=10, dispatch_backlog=2) == []
    assert owners(choose(tasks, user_task_limit=10, dispatch_backlog=3)) == [3]


SETTINGS = Settings(lease_seconds=3, heartbeat_seconds=0.5)


@pytest.mark.parametrize(
    ("case", "lost"),
    [
        ("waiting in the broker", False),
        ("taken by a worker a moment ago", False),
        ("taken by a worker long ago", True),
        ("in neither, sent long ago", True),
        ("in neither, sent a moment ago", False),
        ("held by a live lease", False),
        ("pending: not sent yet", False),
    ],
)
def test_lost_tasks(case: str, lost: bool):
    read_at = NOW.timestamp()
    task_id = "task-1"
    broker = BrokerTasks(waiting=frozenset())
    if case == "waiting in the broker":
        broker = BrokerTasks(waiting=frozenset({task_id}))
    elif case.startswith("taken"):
        broker = BrokerTasks(waiting=frozenset(), taken={task_id: read_at - (1 if "moment" in case else 60)})
    run = RunState(
        id=1,
        state=State.RUNNING if case == "held by a live lease" else State.QUEUED,
        task_id=None if case.startswith("pending") else task_id,
        dispatched_at=None if case.startswith("pending") else NOW - timedelta(seconds=1 if "sent a" in case else 60),
        lease_expires_at=NOW + timedelta(seconds=2) if case == "held by a live lease" else None,
    )
    assert _lost(Task(1, 1, 5, [run]), broker, read_at=read_at, now=NOW, settings=SETTINGS) is lost
