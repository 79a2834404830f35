"""Sweeps: a grid over settings of one preset, one job per grid point, submitted and cancelled as one.

A sweep is validated whole before anything is stored: every grid point is resolved into a job (config,
overrides, seeds, tags, executor) and the owner's quota is checked for all of them together, in one
transaction; any refusal stores nothing. Each job is a plain job owned by the user and tagged
`sweep-<id>`, so the fair-share dispatcher, quotas, retries and comparisons treat it like any other.
A sweep's comparison is the comparison of that tag grouped by setting: one row per grid point.

Searches beyond a grid belong to an optimiser that asks for points and is told their results (Optuna's
ask-and-tell over `POST /sweeps` and `GET /sweeps/{id}`); none is written here.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from ired_core.input_rules import MAX_TAGS, SWEEP_MAX_POINTS, check_json_text
from ired_core.results_dir import SETTING_SEPARATOR
from ired_core.verdict import AUTO_BASELINE, Comparison
from ired_dcd.models import Job, Sweep, User
from ired_dcd.services import jobs, results
from ired_dcd.services.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from ired_dcd.services.scheduler import dispatch
from ired_dcd.services.users import check_may_change
from ired_dcd.states import State, job_state

TAG_PREFIX = "sweep-"
"""Every job of sweep N carries the tag `sweep-N`: what its comparison selects."""


def sweep_tag(sweep_id: int) -> str:
    return f"{TAG_PREFIX}{sweep_id}"


def point_text(point: Mapping[str, Any]) -> str:
    """`energy_reg_weight=0.1 · langevin_sigma_mult=0.5`: a grid point as the setting labels write it."""
    return SETTING_SEPARATOR.join(f"{key}={json.dumps(value)}" for key, value in point.items())


def grid_points(grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first field varying slowest; InvalidInput naming the
    field for an empty grid, a field without values or with a value twice, or too many points."""
    if not grid:
        raise InvalidInput("grid: no field to sweep; give at least one field with its values")
    try:
        check_json_text(dict(grid))  # stored as JSON: no NUL, no lone surrogate, bounded nesting
    except ValueError as error:
        raise InvalidInput(f"grid: {error}") from None
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InvalidInput(f"grid: {name}: needs a non-empty list of values")
        texts = [json.dumps(value, sort_keys=True) for value in values]
        repeated = sorted({text for text in texts if texts.count(text) > 1})
        if repeated:
            raise InvalidInput(f"grid: {name}: value(s) {', '.join(repeated)} given more than once")
    count = 1
    for values in grid.values():
        count *= len(values)
    if count > SWEEP_MAX_POINTS:
        raise InvalidInput(f"grid: {count} points; at most {SWEEP_MAX_POINTS} per sweep")
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def create_sweep(
    *,
    session: Session,
    owner: User,
    config: str,
    grid: Mapping[str, Any],
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
    executor: str = "celery",
    priority: int = 5,
    tags: Sequence[str] = (),
    slurm_options: Mapping[str, Any] | None = None,
) -> Sweep:
    """Validate every grid point, then store the sweep and one job per point in one transaction, then
    hand the jobs to the dispatcher in one pass. InvalidInput (naming the field, and the point for a
    value the config refuses) or QuotaExceeded (for the sweep's jobs together): nothing is stored."""
    base = dict(overrides or {})
    if len(tags) >= MAX_TAGS:
        raise InvalidInput(f"tags: at most {MAX_TAGS - 1} on a sweep (each job also carries {TAG_PREFIX}N)")
    common = {"seeds": seeds, "executor": executor, "priority": priority, "tags": tags, "slurm_options": slurm_options}
    first = jobs.job_spec(config=config, overrides=base, **common)  # config, seeds, tags, executor: named as such
    points = grid_points(grid)
    shared = sorted(set(grid) & set(base))
    if shared:
        raise InvalidInput(f"grid: {shared[0]} is also in overrides; a field is either fixed or swept")
    specs, seen = [], {}
    for point in points:
        try:
            spec = jobs.job_spec(config=first.preset, overrides={**base, **point}, **common)
        except InvalidInput as error:
            raise InvalidInput(f"grid: {point_text(point)}: {error}") from None
        if spec.config_hash in seen:
            raise InvalidInput(
                f"grid: {point_text(point)} is the same setting as {point_text(seen[spec.config_hash])} "
                f"(config hash {spec.config_hash})"
            )
        seen[spec.config_hash] = point
        specs.append(spec)
    sweep = Sweep(preset=first.preset, overrides=base, grid=dict(grid), seeds=first.seeds, owner=owner)
    session.add(sweep)
    session.flush()
    planned = []
    try:
        for spec in specs:  # each quota check counts the jobs added before it: the sweep is checked whole
            tagged = replace(spec, tags=(*spec.tags, sweep_tag(sweep.id)))
            planned.append(jobs.add_job(session=session, owner=owner, spec=tagged, sweep=sweep))
    except QuotaExceeded as error:
        session.rollback()
        raise QuotaExceeded(f"{error}; the sweep's {len(specs)} jobs together are over it, none was stored") from None
    session.commit()
    jobs.start_jobs(session, planned)
    return sweep


def get_sweep(*, session: Session, sweep_id: int) -> Sweep:
    sweep = session.get(Sweep, sweep_id, options=[selectinload(Sweep.jobs)])
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep


def cancel_sweep(*, session: Session, sweep_id: int, user: User) -> Sweep:
    """Cancel every job of the sweep that has not ended (its owner or an admin), in one transaction."""
    sweep = get_sweep(session=session, sweep_id=sweep_id)
    check_may_change(sweep, user, "cancel")
    # jobs locked in id order, each with its runs: the lock order of cancel_job and the workers
    cancelled = sum(jobs.cancel_runs(jobs.locked_job(session, job.id)) for job in sweep.jobs)
    if not cancelled:
        raise Conflict(f"sweep {sweep_id} has no queued or running runs; nothing to cancel")
    session.commit()
    dispatch(session=session)  # the cancelled tasks' places go to the next ones
    session.refresh(sweep)
    return sweep


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: its values, its job, the job's state and the label of its row in the comparison."""

    values: dict[str, Any]
    job_id: int
    config_hash: str
    state: str
    setting: str | None  # None when its job was deleted from the selection


@dataclass(frozen=True)
class SweepSummary:
    """A sweep and its progress: its runs per state and their steps, over all its jobs."""

    sweep: Sweep
    progress: jobs.RunCounts

    @property
    def state(self) -> State | None:
        """From all its runs, as a job's; None once every job of the sweep was deleted."""
        runs = self.progress.states
        return job_state(state for state, count in runs.items() for _ in range(count)) if runs else None


@dataclass(frozen=True)
class SweepStatus(SweepSummary):
    """A sweep's progress, its points and their comparison."""

    points: list[SweepPoint]
    comparison: Comparison


def sweep_status(
    *, session: Session, sweep_id: int, baseline: str = AUTO_BASELINE, metric: str = "val_mse"
) -> SweepStatus:
    """Progress and the comparison of the sweep's points, grouped by setting (`baseline` and `metric` as
    for GET /results/compare)."""
    sweep = get_sweep(session=session, sweep_id=sweep_id)
    progress = jobs.count_runs(session, Job.sweep_id, [sweep_id])[sweep_id]
    compared = results.comparison_data(
        session=session,
        configs=[sweep.preset],
        baseline=baseline,
        metric=metric,
        tag=sweep_tag(sweep_id),
        group_by="setting",
    )
    labels = {config_hash: label for label, config_hash in compared.settings.items()}
    points = [
        SweepPoint(
            {name: job.overrides.get(name) for name in sweep.grid},
            job.id,
            job.config_hash,
            job.state,
            labels.get(job.config_hash),
        )
        for job in sweep.jobs
    ]
    return SweepStatus(sweep=sweep, progress=progress, points=points, comparison=compared.comparison)


def list_sweeps(
    *, session: Session, owner: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[list[SweepSummary], int]:
    """Sweeps newest first, each with its progress (its runs counted by the database), and how many match."""
    filters = [Sweep.owner.has(User.name == owner)] if owner is not None else []
    count = session.scalar(select(func.count()).select_from(Sweep).where(*filters)) or 0
    page = list(session.scalars(select(Sweep).where(*filters).order_by(Sweep.id.desc()).offset(offset).limit(limit)))
    progress = jobs.count_runs(session, Job.sweep_id, [sweep.id for sweep in page])
    return [SweepSummary(sweep, progress[sweep.id]) for sweep in page], count
