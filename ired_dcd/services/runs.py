"""Runs: state changes through the state machine, and learning curves stored by upsert."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ired_dcd.models import Job, Metric, Run, utcnow
from ired_dcd.services.errors import NotFound
from ired_dcd.states import RETRYABLE, TERMINAL, State, check_transition, job_state

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
    if error is not None:
        run.error = error[:4000]
    refresh_job(run.job, now=now)


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


def finite_or_none(value: float) -> float | None:
    """Databases and JSON cannot hold NaN/inf portably: store them as NULL."""
    value = float(value)
    return value if math.isfinite(value) else None


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
