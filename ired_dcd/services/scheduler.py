"""Fair-share dispatch: the database is the queue of record; tasks go to the broker a few at a time.

A task is the group of runs that train together (one job's seeds, or one seed with IRED_SPLIT_SEEDS);
its runs share a checkpoint path. A task is *pending* (queued in the database only), *waiting*
(handed to the broker, not yet claimed by a worker) or *training* (its runs are running). Waiting and
training tasks are their owner's tasks *in flight*.

One dispatch pass repeats, while fewer than `dispatch_backlog` tasks wait in the broker:

1. among the users with pending tasks and fewer than `user_task_limit` tasks in flight, take the user
   with the fewest in flight (ties: the user whose next task was submitted first);
2. hand that user's next task to the broker: highest job priority first, then the oldest job.

So a user alone may train `user_task_limit` tasks at once; when several users wait, the broker is
filled round-robin from the least served, whatever their priorities; priorities order a user's own
tasks only. Passes run after every submit, retry, cancel, claim and end of a task, and in the
reconciler; a lock makes them one at a time across processes, and callers that arrive while a pass
runs share the next one (`dispatch`). Only broker (Celery) jobs are dispatched here: SLURM has a
scheduler of its own.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import false, func, select, update
from sqlalchemy.orm import Session

from ired_dcd.models import Job, Run, lease_live, utcnow
from ired_dcd.services.executors import DISPATCHED, executor_of
from ired_dcd.settings import Settings, get_settings
from ired_dcd.states import ACTIVE, State

log = logging.getLogger(__name__)

LOCK_KEY = 0x1BED_DCD
"""Postgres advisory lock held by a dispatch or reconcile pass."""
WAITER_KEY = LOCK_KEY + 1
"""Postgres advisory lock held by the one caller waiting for LOCK_KEY to run the next pass."""


@dataclass(frozen=True)
class RunState:
    """What dispatching and reconciling look at in an active run (read without loading the ORM object)."""

    id: int
    state: str
    attempts: int = 0
    cancel_requested: bool = False
    task_id: str | None = None
    dispatched_at: datetime | None = None
    lease_expires_at: datetime | None = None


@dataclass
class Task:
    """The active runs of one task, with their job's owner and priority."""

    job_id: int
    owner_id: int
    priority: int
    runs: list[RunState] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return all(run.state == State.QUEUED and run.dispatched_at is None for run in self.runs)

    @property
    def waiting(self) -> bool:
        return not self.pending and all(run.state == State.QUEUED for run in self.runs)

    @property
    def task_id(self) -> str | None:
        return self.runs[0].task_id

    def held(self, now: datetime) -> bool:
        """Whether a worker holds a live lease on any of the runs."""
        return any(lease_live(run.lease_expires_at, now) for run in self.runs)


def lock(session: Session) -> None:
    """Make this transaction's dispatch or reconcile pass the only one, across processes, until commit."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
    else:  # SQLite has one writer at a time: take the write lock now, before reading
        session.execute(update(Run).where(false()).values(task_id=None))


def broker_tasks_of_database(session: Session) -> list[Task]:
    """The active runs of broker jobs, grouped into tasks (job, checkpoint), in job and run order."""
    query = (
        select(
            Run.job_id,
            Run.checkpoint_path,
            Job.owner_id,
            Job.priority,
            Run.id,
            Run.state,
            Run.attempts,
            Run.cancel_requested,
            Run.task_id,
            Run.dispatched_at,
            Run.lease_expires_at,
        )
        .join(Run.job)
        .where(Run.state.in_(list(ACTIVE)), Job.executor.in_(DISPATCHED))
        .order_by(Run.job_id, Run.id)
    )
    tasks: dict[tuple[int, str | None], Task] = {}
    for job_id, checkpoint, owner_id, priority, *run in session.execute(query):
        task = tasks.setdefault((job_id, checkpoint), Task(job_id, owner_id, priority))
        task.runs.append(RunState(*run))
    return list(tasks.values())


def load_runs(session: Session, task: Task) -> list[Run]:
    """The task's runs as ORM objects (with their job), to change them."""
    return list(session.scalars(select(Run).where(Run.id.in_([run.id for run in task.runs])).order_by(Run.id)))


def choose(tasks: Sequence[Task], *, user_task_limit: int, dispatch_backlog: int) -> list[Task]:
    """The pending tasks to hand to the broker now, in order (the rule of this module's docstring)."""
    in_flight: Counter[int] = Counter()
    pending: defaultdict[int, list[Task]] = defaultdict(list)
    waiting = 0
    for task in tasks:
        if task.pending:
            pending[task.owner_id].append(task)
        else:
            in_flight[task.owner_id] += 1
            waiting += task.waiting
    for queue in pending.values():
        queue.sort(key=lambda task: (-task.priority, task.job_id, task.runs[0].id))
    chosen: list[Task] = []
    while waiting < dispatch_backlog:
        eligible = [owner for owner, queue in pending.items() if queue and in_flight[owner] < user_task_limit]
        if not eligible:
            break
        owner = min(eligible, key=lambda user: (in_flight[user], pending[user][0].job_id))
        chosen.append(pending[owner].pop(0))
        in_flight[owner] += 1
        waiting += 1
    return chosen


def mark_sent(runs: Sequence[Run], now: datetime) -> None:
    """Give the runs of one task a new broker id; a worker that may still hold an expired lease loses it."""
    task_id = uuid.uuid4().hex
    for run in runs:
        run.task_id, run.dispatched_at = task_id, now
        run.lease_owner = run.lease_expires_at = None


def send(session: Session, tasks: Sequence[Sequence[Run]]) -> int:
    """Hand marked (and committed) tasks to the broker; a task it refuses waits in the database again."""
    sent = 0
    for runs in tasks:
        job, task_id = runs[0].job, runs[0].task_id
        try:
            executor_of(job).start(job, list(runs))
            sent += 1
        except Exception as exc:  # broker down or refusing: the reconciler sends it once the broker is back
            log.warning("job %d: broker refused task %s (%s); it waits in the database", job.id, task_id, exc)
            session.execute(
                update(Run)
                .where(Run.task_id == task_id, Run.state == State.QUEUED)
                .values(task_id=None, dispatched_at=None)
            )
            session.commit()
    return sent


def _take_turn(session: Session) -> bool:
    """Whether this caller runs a pass (then holding the lock until commit), or a pass that starts later
    will do its work.

    A pass reads every pending task when it starts, so the callers that arrive while one runs need one
    more pass after it, not one each: the first of them waits for the lock (holding WAITER_KEY until it
    has it), the others return at once, since the waiting pass reads the database after their commits.
    Without this, many clients submitting at once each waited for every pass queued before theirs.
    """
    if session.get_bind().dialect.name != "postgresql":
        lock(session)  # SQLite: one writer at a time anyway
        return True
    if session.scalar(select(func.pg_try_advisory_xact_lock(LOCK_KEY))):
        return True
    if not session.scalar(select(func.pg_try_advisory_lock(WAITER_KEY))):
        return False  # a caller is waiting for the lock: its pass has not read the database yet
    try:
        lock(session)
    finally:  # released once the lock is ours, before the pass reads: later callers need a pass after this one
        session.execute(select(func.pg_advisory_unlock(WAITER_KEY)))
    return True


def dispatch(*, session: Session, settings: Settings | None = None) -> int:
    """One dispatch pass: choose and mark tasks under the lock, commit, then send; returns how many went
    (0 when a pass that starts after this call will send them: `_take_turn`).

    The caller's changes must be committed: the pass that dispatches them may be another caller's.
    """
    settings = settings or get_settings()
    if not _take_turn(session):
        session.rollback()  # nothing read or written; end the transaction the lock attempts opened
        return 0
    chosen = choose(
        broker_tasks_of_database(session),
        user_task_limit=settings.user_task_limit,
        dispatch_backlog=settings.dispatch_backlog,
    )
    now = utcnow()
    marked = [load_runs(session, task) for task in chosen]
    for runs in marked:
        mark_sent(runs, now)
    session.commit()
    return send(session, marked)
