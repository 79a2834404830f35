"""The reconciler: makes the broker agree with the database, the queue of record.

A task in flight (sent to the broker, or training) that no worker holds is *lost* when the broker has
not had it for `lease_seconds`: neither waiting in the queue nor taken by a worker within that time,
and no live worker reports it as running. That is a task dropped by a Redis flush or restart, or
the task of a worker that vanished (kill -9, machine lost: its lease ran out and its message stays
unacknowledged until the visibility timeout, a week). For each lost task:

- runs whose cancellation was asked for are cancelled;
- runs already claimed `max_attempts` times are failed ("gave up after N attempts …");
- the other runs are sent again as a new task, and resume from their checkpoint.

Then a dispatch pass hands out pending tasks. Passes run in the API server every `reconcile_seconds`,
when a worker starts and when the embedded server starts; they are serialised by the dispatch lock.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from ired_dcd.db import new_session
from ired_dcd.models import Run, utcnow
from ired_dcd.services.broker import BrokerTasks, broker_tasks, tasks_in_training
from ired_dcd.services.runs import give_up, set_state
from ired_dcd.services.scheduler import Task, broker_tasks_of_database, dispatch, load_runs, lock, mark_sent, send
from ired_dcd.settings import Settings, get_settings
from ired_dcd.states import ACTIVE, State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reconciled:
    """What a pass did: tasks sent again, runs failed or cancelled, pending tasks dispatched."""

    resent: int = 0
    failed: int = 0
    cancelled: int = 0
    dispatched: int = 0

    def __bool__(self) -> bool:
        return any((self.resent, self.failed, self.cancelled, self.dispatched))


def _lost(task: Task, broker: BrokerTasks, *, read_at: float, now: datetime, settings: Settings) -> bool:
    """In flight, not held by a worker, and out of the broker's hands for `lease_seconds`."""
    if task.pending or task.held(now) or task.task_id in broker.waiting:
        return False
    taken_at = broker.taken.get(task.task_id or "")
    if taken_at is not None and read_at - taken_at < settings.lease_seconds:
        return False  # a worker took it a moment ago and is claiming it
    sent_at = max((run.dispatched_at for run in task.runs if run.dispatched_at is not None), default=None)
    # sent after the broker was read, or too recently to tell
    return sent_at is None or now - sent_at >= timedelta(seconds=settings.lease_seconds)


def reconcile(*, session: Session, settings: Settings | None = None) -> Reconciled:
    """One pass (see the module docstring); raises when the database or the broker cannot be reached."""
    settings = settings or get_settings()
    broker = broker_tasks(settings)  # read first: a task sent after this is too recent to be judged lost
    read_at = time.time()
    lock(session)
    now = utcnow()
    lost = [
        task
        for task in broker_tasks_of_database(session)
        if _lost(task, broker, read_at=read_at, now=now, settings=settings)
    ]
    if any(run.state == State.RUNNING for task in lost for run in task.runs):
        training = tasks_in_training()  # a live worker whose lease lapsed while the database was away
        lost = [task for task in lost if task.task_id not in training]
    resend: list[list[Run]] = []
    failed = cancelled = 0
    for task in lost:
        runs = load_runs(session, task)
        for run in runs:
            if run.cancel_requested:
                set_state(run, State.CANCELLED, now=now)
                cancelled += 1
            elif run.state == State.RUNNING and run.attempts >= settings.max_attempts:
                give_up(run, max_attempts=settings.max_attempts)
                failed += 1
        remaining = [run for run in runs if run.state in ACTIVE]
        if remaining:
            mark_sent(remaining, now)
            resend.append(remaining)
    session.commit()
    if resend:
        log.warning("re-sending %d lost task(s): jobs %s", len(resend), sorted({runs[0].job_id for runs in resend}))
    resent = send(session, resend)
    return Reconciled(resent, failed, cancelled, dispatch(session=session, settings=settings))


def reconcile_once() -> Reconciled | None:
    """A pass in a session of its own; None (logged) when the database or broker is unreachable."""
    try:
        with new_session() as session:
            done = reconcile(session=session)
    except Exception as exc:  # keep the caller (API server, worker start) alive; the next pass tries again
        log.warning("reconcile pass failed: %s: %s", type(exc).__name__, exc)
        return None
    if done:
        log.info("reconciled: %s", done)
    return done


class Reconciler:
    """Runs `reconcile_once` every `interval` seconds on a daemon thread (the API server keeps one)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ired-reconciler", daemon=True)

    def start(self) -> Reconciler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            reconcile_once()
