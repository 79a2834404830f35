"""Running one training task on a worker: claim the runs under a lease, train, record the outcome.

A task may be delivered more than once (Redis re-delivers after the visibility timeout, a killed
worker's task is re-queued). The database decides what a delivery does:

- every run already ended → nothing;
- a run held by another worker whose lease is still being renewed → wait up to one lease period;
  if the holder keeps renewing, this delivery is a duplicate of a live run and is dropped;
- otherwise the runs are claimed (attempts + 1) and training resumes from the task's checkpoint;
  a run claimed `max_attempts` times without finishing (its worker was killed each time, e.g. out of
  memory) is failed instead of being trained again.

While training, a heartbeat thread renews the lease and polls the cancellation flag; metrics are
upserted by (run, name, step), so steps replayed after a resume overwrite rather than duplicate.
A worker that is shut down (SIGTERM to the training process) checkpoints, releases its runs without
counting the attempt and raises `Interrupted`, so that the task goes back to the queue at once.

The database may be away for a while (restart, failover): metrics are kept in memory and written
once it answers again (`MetricsBuffer`), and the writes at the start and end of a task are retried
with back-off for up to `db_retry_seconds`. A full disk (checkpoint write) and running out of memory
(CUDA, or a CPU allocation that fails) fail the runs at once with an error that says so. When a task
has been claimed and when it ends, a dispatch pass hands the broker the next task
(`ired_dcd.services.scheduler`).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError

from ired_core.configs import TrainConfig
from ired_core.trainer import MetricsEvent, SeedOutcome, Trainer, code_version
from ired_dcd.db import backoff_delays, new_session, retry_db, session_scope, unreachable
from ired_dcd.models import Run, utcnow
from ired_dcd.services.runs import give_up, lock_runs, record_outcome, register_checkpoint, set_state, upsert_metrics
from ired_dcd.services.scheduler import dispatch
from ired_dcd.settings import Settings, get_settings
from ired_dcd.states import ACTIVE, State

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """The worker is shutting down; the runs were released and the task should be queued again."""


@dataclass(frozen=True)
class Claim:
    """The runs this worker now holds, and what it needs to train them."""

    job_id: int
    run_ids: dict[int, int]  # seed → run id, for the held runs only
    seeds: list[int]  # every seed of the task: the ensemble its checkpoint was written for
    config: dict[str, Any]
    checkpoint: Path


def worker_id() -> str:
    """Who holds a lease: host and process id of the training process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def execute_runs(run_ids: Sequence[int]) -> None:
    """Train the runs of one task (the Celery task's whole body)."""
    settings = get_settings()
    owner = worker_id()
    claim = claim_runs(run_ids, owner=owner, settings=settings)
    if claim is None:
        return
    dispatch_next()  # this task has left the broker's backlog
    started = time.monotonic()
    outcomes, error = None, None
    with Lease(list(claim.run_ids.values()), owner=owner, settings=settings) as lease, _stop_on_sigterm(lease):
        try:
            outcomes = _train(claim, owner=owner, lease=lease, settings=settings)
        except Exception as exc:  # the trainer's error becomes the runs' error, not a re-delivery
            log.exception("training runs %s failed", sorted(claim.run_ids.values()))
            error = failure_message(exc, settings=settings)
    if lease.interrupted and error is None:
        retry_db(lambda: _release(claim, owner=owner), what="releasing the runs")
        raise Interrupted(f"worker shutting down; runs {sorted(claim.run_ids.values())} released")
    seconds = time.monotonic() - started
    retry_db(lambda: _finish(claim, owner=owner, seconds=seconds, outcomes=outcomes, error=error), what="recording")
    dispatch_next()


OUT_OF_MEMORY_ADVICE = "lower batch_size, or train fewer seeds per task (IRED_SPLIT_SEEDS=true), then retry the job"
# how torch's CPU allocator reports a failed allocation (a RuntimeError, not torch.OutOfMemoryError)
CPU_ALLOCATOR_FAILURES = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")


def failure_message(exc: Exception, *, settings: Settings) -> str:
    """The runs' error for an exception from training; disk full and out of memory say what to do."""
    detail = str(exc).splitlines()[0] if str(exc) else "no detail"
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return f"CUDA out of memory: {OUT_OF_MEMORY_ADVICE} ({detail})"
    if isinstance(exc, MemoryError) or any(failure in str(exc) for failure in CPU_ALLOCATOR_FAILURES):
        return f"out of memory (CPU: the worker's memory or address-space limit): {OUT_OF_MEMORY_ADVICE} ({detail})"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = exc.filename or settings.artifacts_path
        return f"disk full: no space left on the device while writing {where}; free space, then retry the job"
    return f"{type(exc).__name__}: {exc}"


def dispatch_next() -> None:
    """A dispatch pass, best effort: the reconciler's periodic pass catches up when this one fails."""
    try:
        with new_session() as session:
            dispatch(session=session)
    except Exception as exc:  # a worker never fails its task over the next task's dispatch
        log.warning("dispatch pass failed: %s: %s", type(exc).__name__, exc)


@contextmanager
def _stop_on_sigterm(lease: Lease) -> Iterator[None]:
    """While training, SIGTERM (worker shutdown) stops at the next step instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: lease.interrupt())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def claim_runs(run_ids: Sequence[int], *, owner: str, settings: Settings) -> Claim | None:
    """Take the task's unfinished runs under `owner`'s lease, or None when there is nothing to do."""
    deadline = time.monotonic() + settings.lease_seconds + 2 * settings.heartbeat_seconds
    while True:
        with session_scope() as session:
            runs = lock_runs(session, run_ids)
            now = utcnow()
            active = [run for run in runs if run.state in ACTIVE]
            holders = {run.lease_owner for run in active if run.lease_owner != owner and run.lease_live(now)}
            if not active:
                log.info("runs %s have all ended; nothing to do", list(run_ids))
                return None
            if not holders:
                held = [run for run in active if _take(run, owner=owner, settings=settings)]
                if not held:
                    return None
                return Claim(
                    job_id=held[0].job_id,
                    run_ids={run.seed: run.id for run in held},
                    seeds=[run.seed for run in runs],
                    config=held[0].job.config,
                    checkpoint=settings.artifacts_path / str(held[0].checkpoint_path),
                )
        if time.monotonic() > deadline:
            log.warning(
                "runs %s are held by live worker(s) %s; dropping this duplicate delivery",
                list(run_ids),
                sorted(holders),
            )
            return None
        time.sleep(settings.heartbeat_seconds)


def _take(run: Run, *, owner: str, settings: Settings) -> bool:
    """Claim one run for `owner`; False when it is cancelled or failed instead."""
    if run.cancel_requested:
        set_state(run, State.CANCELLED)
        return False
    if run.attempts >= settings.max_attempts:
        give_up(run, max_attempts=settings.max_attempts)
        return False
    now = utcnow()
    run.attempts += 1
    if run.state == State.QUEUED:
        set_state(run, State.RUNNING, now=now)
    run.lease_owner = owner
    run.heartbeat_at = now
    run.lease_expires_at = now + timedelta(seconds=settings.lease_seconds)
    return True


class Lease:
    """Renews the held runs' lease from a background thread and turns a cancel flag into a stop."""

    def __init__(self, run_ids: list[int], *, owner: str, settings: Settings) -> None:
        self._run_ids, self._owner, self._settings = run_ids, owner, settings
        self._stop_training = threading.Event()
        self._closed = threading.Event()
        self.interrupted = False
        self._thread = threading.Thread(target=self._loop, name="ired-lease", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._closed.set()
        self._thread.join()

    def interrupt(self) -> None:
        self.interrupted = True
        self._stop_training.set()

    def should_stop(self) -> bool:
        """Polled by the trainer every step: cancelled, or the lease went to another worker."""
        return self._stop_training.is_set()

    def _loop(self) -> None:
        failing = False
        while not self._closed.wait(self._settings.heartbeat_seconds):
            try:
                self._beat()
            except Exception as exc:  # the database is briefly unreachable: keep training, try again
                if not failing:
                    log.warning("lease renewal failed for runs %s (%s); retrying", self._run_ids, exc)
                failing = True
            else:
                failing = False

    def _beat(self) -> None:
        with session_scope() as session:
            now = utcnow()
            expires = now + timedelta(seconds=self._settings.lease_seconds)
            renewed = session.execute(
                update(Run)
                .where(Run.id.in_(self._run_ids), Run.lease_owner == self._owner, Run.state == State.RUNNING)
                .values(heartbeat_at=now, lease_expires_at=expires)
                .execution_options(synchronize_session=False)
            ).rowcount
            cancelled = session.scalar(select(func.count()).where(Run.id.in_(self._run_ids), Run.cancel_requested))
        if renewed < len(self._run_ids):
            log.warning("lost the lease on runs %s; stopping", self._run_ids)
            self._stop_training.set()
        if cancelled:
            self._stop_training.set()


def resolve_device(setting: str) -> str:
    """`auto` → the worker's GPU (CUDA_VISIBLE_DEVICES picks it) when there is one, else the CPU."""
    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"


def _train(claim: Claim, *, owner: str, lease: Lease, settings: Settings) -> list[SeedOutcome]:
    trainer = Trainer(
        TrainConfig(**claim.config), seeds=claim.seeds, device=resolve_device(settings.device), engine=settings.engine
    )
    resumed = None
    if claim.checkpoint.exists():
        trainer.load_checkpoint(claim.checkpoint)
        resumed = trainer.step
        log.info("runs %s resume from step %d", sorted(claim.run_ids.values()), resumed)
    claim.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    environment = _owned(claim, owner).values(
        device=trainer.device_name,
        precision=trainer.precision,
        code_version=code_version(),
        torch_version=torch.__version__,
        resume_step=resumed,
    )
    retry_db(lambda: _execute(environment), what="recording the device")
    metrics = MetricsBuffer(claim, owner=owner)
    try:
        return trainer.run(on_metrics=metrics.add, should_stop=lease.should_stop, checkpoint_path=claim.checkpoint)
    finally:
        metrics.close()


def _execute(statement: Any) -> None:
    with session_scope() as session:
        session.execute(statement)


class MetricsBuffer:
    """The trainer's metrics on their way to the database; none is lost while the database is away.

    `add` keeps the values (by run, name and step: a replayed step overwrites) and writes all that
    waits, unless an earlier write failed less than a back-off delay ago (0.5 s doubling to 30 s): the
    trainer never waits for a database that is down. `close` writes the rest, retrying with back-off.
    """

    def __init__(self, claim: Claim, *, owner: str) -> None:
        self._claim, self._owner = claim, owner
        self._values: dict[tuple[int, str, int], float] = {}
        self._step = 0
        self._delays = backoff_delays()
        self._next_try = 0.0

    def add(self, event: MetricsEvent) -> None:
        for seed, values in event.per_seed.items():
            if seed in self._claim.run_ids:
                run_id = self._claim.run_ids[seed]
                self._values.update({(run_id, name, event.step): value for name, value in values.items()})
        self._step = max(self._step, event.step)
        if time.monotonic() < self._next_try:
            return
        try:
            self._write()
        except DBAPIError as exc:
            if not unreachable(exc):
                raise
            delay = next(self._delays)
            self._next_try = time.monotonic() + delay
            log.warning(
                "database unreachable (%s): %d metric value(s) kept", type(exc.orig).__name__, len(self._values)
            )
        else:
            self._delays = backoff_delays()

    def close(self) -> None:
        if self._values:
            retry_db(self._write, what="writing metrics")

    def _write(self) -> None:
        rows = [(run_id, step, name, value) for (run_id, name, step), value in self._values.items()]
        with session_scope() as session:
            upsert_metrics(session=session, rows=rows)
            session.execute(_owned(self._claim, self._owner).values(step=self._step))
        self._values.clear()


def _owned(claim: Claim, owner: str) -> Any:
    """UPDATE of the claim's runs that this worker still holds."""
    return (
        update(Run)
        .where(Run.id.in_(claim.run_ids.values()), Run.lease_owner == owner, Run.state == State.RUNNING)
        .execution_options(synchronize_session=False)
    )


def _finish(
    claim: Claim,
    *,
    owner: str,
    seconds: float,
    outcomes: list[SeedOutcome] | None = None,
    error: str | None = None,
) -> None:
    """Record each held run's outcome (or `error` for all); runs whose lease moved on are left alone."""
    by_seed = {outcome.seed: outcome for outcome in outcomes or []}
    with session_scope() as session:
        for run in lock_runs(session, list(claim.run_ids.values())):
            if run.lease_owner != owner or run.state != State.RUNNING:
                continue
            run.train_seconds += seconds
            outcome = by_seed.get(run.seed)
            if outcome is None:
                set_state(run, State.FAILED, error=error or "the trainer returned no outcome for this seed")
                continue
            record_outcome(
                run,
                status=outcome.status,
                step=outcome.step,
                final_metrics=outcome.final_metrics,
                error=outcome.error,
                divergence=outcome.divergence.to_dict() if outcome.divergence is not None else None,
            )
        single_run = next(iter(claim.run_ids.values())) if len(claim.seeds) == 1 else None
        register_checkpoint(session, job_id=claim.job_id, checkpoint=claim.checkpoint, run_id=single_run)


def _release(claim: Claim, *, owner: str) -> None:
    """Give the runs back (still running, no lease) without counting this attempt against them."""
    with session_scope() as session:
        session.execute(_owned(claim, owner).values(lease_owner=None, lease_expires_at=None, attempts=Run.attempts - 1))
