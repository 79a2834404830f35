"""Runs: state changes through the state machine, outcomes, and learning curves stored by upsert."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ired_core.input_rules import finite_or_none
from ired_dcd.models import Artifact, Job, Metric, Run, utcnow
from ired_dcd.services.errors import NotFound
from ired_dcd.settings import get_settings
from ired_dcd.states import RETRYABLE, TERMINAL, State, check_transition, job_state

log = logging.getLogger(__name__)

MetricRow = tuple[int, int, str, float]
"""(run_id, step, name, value) as the trainer reports it."""


def set_state(run: Run, target: State, *, error: str | None = None, now: datetime | None = None) -> None:
    """Move `run` to `target` (IllegalTransition if the machine forbids it) and refresh its job."""
    now = now or utcnow()
    run.state = check_transition(run.state, target)
    if target is State.RUNNING and run.started_at is None:
        run.started_at = now
    if target in TERMINAL:
        run.finished_at = now
        run.lease_owner = run.lease_expires_at = None
    if target is State.QUEUED:  # queued again: pending in the database until the dispatcher sends it
        run.task_id = run.dispatched_at = None
    if error is not None:
        run.error = error[:4000]
    refresh_job(run.job, now=now)


def record_outcome(
    run: Run,
    *,
    status: str,
    step: int,
    final_metrics: Mapping[str, float],
    error: str | None = None,
    divergence: Mapping[str, Any] | None = None,
) -> None:
    """Store a seed's outcome as the trainer reports it: final step, metrics, state (succeeded, diverged, …)
    and, for a diverged run, the rule that judged it (`ired_core.divergence.Divergence.to_dict`)."""
    run.step = step
    run.final_metrics = clean_metrics(final_metrics)
    run.divergence = dict(divergence) if divergence else None
    set_state(run, State(status), error=error)


def lock_runs(session: Session, run_ids: Sequence[int]) -> list[Run]:
    """The runs (of one job), row-locked, after their job's row (always job first: no lock cycles)."""
    job_id = session.scalar(select(Run.job_id).where(Run.id.in_(run_ids)).limit(1))
    if job_id is None:
        return []
    session.execute(select(Job.id).where(Job.id == job_id).with_for_update())
    query = select(Run).where(Run.id.in_(run_ids)).order_by(Run.seed).with_for_update()
    return list(session.scalars(query))


def register_checkpoint(session: Session, *, job_id: int, checkpoint: Path, run_id: int | None) -> None:
    """Record a job's checkpoint file (under the artifacts dir) as an artifact, or refresh its size.

    `run_id`: the run whose seed the checkpoint holds alone; None for an ensemble of several seeds.
    """
    if not checkpoint.exists():
        return
    path = str(checkpoint.relative_to(get_settings().artifacts_path))
    artifact = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.path == path))
    if artifact is None:
        artifact = Artifact(job_id=job_id, run_id=run_id, kind="checkpoint", path=path)
        session.add(artifact)
    artifact.size_bytes = checkpoint.stat().st_size


def give_up(run: Run, *, max_attempts: int) -> None:
    """Fail a run whose worker was lost on every one of its attempts (killed, e.g. out of memory)."""
    error = (
        f"gave up after {run.attempts} attempts: the worker training it was lost each time "
        f"(killed, e.g. out of memory); max_attempts={max_attempts}"
    )
    log.warning("run %d: %s", run.id, error)
    set_state(run, State.FAILED, error=error)


def refresh_job(job: Job, *, now: datetime | None = None) -> None:
    """Derive the job's state, times and error summary from its runs."""
    now = now or utcnow()
    job.state = job_state(run.state for run in job.runs)
    if job.state != State.QUEUED and job.started_at is None:
        job.started_at = now
    job.finished_at = (job.finished_at or now) if job.state in TERMINAL else None
    errors = [f"seed {run.seed}: {run.error}" for run in job.runs if run.state in RETRYABLE and run.error]
    job.error = "; ".join(errors)[:4000] or None


def get_run(*, session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


def clean_metrics(values: Mapping[str, float]) -> dict[str, float | None]:
    return {name: finite_or_none(value) for name, value in values.items()}


def upsert_metrics(*, session: Session, rows: Iterable[MetricRow]) -> None:
    """Insert metric values, overwriting any (run, name, step) already stored (replays after a resume)."""
    values = [
        {"run_id": run_id, "step": step, "name": name, "value": finite_or_none(value)}
        for run_id, step, name, value in rows
    ]
    if not values:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(Metric).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Metric.run_id, Metric.name, Metric.step], set_={"value": stmt.excluded.value}
    )
    session.execute(stmt)


def learning_curves(
    *, session: Session, run_id: int, names: list[str] | None = None, after_step: int | None = None
) -> dict[str, list[tuple[int, float | None]]]:
    """The run's metrics as {name: [(step, value), ...]} in step order, optionally only some names."""
    get_run(session=session, run_id=run_id)
    query = select(Metric.name, Metric.step, Metric.value).where(Metric.run_id == run_id)
    if names:
        query = query.where(Metric.name.in_(names))
    if after_step is not None:
        query = query.where(Metric.step > after_step)
    curves: dict[str, list[tuple[int, float | None]]] = {}
    for name, step, value in session.execute(query.order_by(Metric.name, Metric.step)):
        curves.setdefault(name, []).append((step, value))
    return curves
