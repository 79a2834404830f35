"""Jobs: submit (validate, store, then enqueue), list, read, cancel and retry.

Every rule about what may be submitted lives here, so the API, the CLI (through the API) and any
other caller refuse the same input with the same message, which always starts with the field name.
Nothing is stored when validation fails; tasks are sent only after the commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, selectinload

from ired_core import input_rules
from ired_core.configs import TrainConfig, canonical_preset, config_hash, resolve_config
from ired_core.input_rules import check_json_text, check_tags
from ired_dcd.models import Job, JobTag, Metric, Run, Sweep, User
from ired_dcd.services.artifacts import delete_job_files
from ired_dcd.services.errors import Conflict, InvalidInput, NotFound, Unavailable
from ired_dcd.services.executors import executor_named, executor_of
from ired_dcd.services.quotas import check_quota
from ired_dcd.services.runs import set_state
from ired_dcd.services.scheduler import dispatch
from ired_dcd.services.users import check_may_change
from ired_dcd.states import ACTIVE, RETRYABLE, State


def resolve(config: str, overrides: Mapping[str, Any]) -> tuple[str, TrainConfig]:
    """The preset's canonical name and the validated config, or InvalidInput naming the field."""
    try:
        preset = canonical_preset(config)
    except ValueError as exc:
        raise InvalidInput(f"config: {exc}") from None
    try:
        check_json_text(overrides)  # stored as JSON: no NUL, no lone surrogate, bounded nesting
        return preset, resolve_config(preset, overrides)
    except ValueError as exc:
        raise InvalidInput(f"overrides: {exc}") from None


def check_job_tags(tags: Sequence[str]) -> tuple[str, ...]:
    """Distinct tags by the one tag rule (`ired_core.input_rules`), or InvalidInput naming the field."""
    try:
        return check_tags(tags)
    except ValueError as exc:
        raise InvalidInput(f"tags: {exc}") from None


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """The seeds in ascending order, or InvalidInput for empty, duplicate, out-of-range or too many."""
    try:
        return sorted(input_rules.check_seeds(seeds))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


@dataclass(frozen=True)
class JobSpec:
    """A job that passed every input rule, not stored yet (a sweep checks all its jobs before storing one)."""

    preset: str
    config: TrainConfig
    overrides: dict[str, Any]
    seeds: list[int]
    tags: tuple[str, ...]
    executor: str
    executor_options: dict[str, Any] | None
    priority: int

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)


def job_spec(
    *,
    config: str,
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
    executor: str = "celery",
    priority: int = 5,
    tags: Sequence[str] = (),
    slurm_options: Mapping[str, Any] | None = None,
) -> JobSpec:
    """The job these inputs describe, or InvalidInput naming the first bad field; reads no database.

    `slurm_options`: the job's SLURM overrides (partition, time_minutes, …), for executor slurm only.
    """
    overrides = dict(overrides or {})
    preset, cfg = resolve(config, overrides)
    seeds, tags = check_seeds(seeds), check_job_tags(tags)
    executor_options = executor_named(executor).check_options(slurm_options)
    return JobSpec(
        preset=preset,
        config=cfg,
        overrides=overrides,
        seeds=seeds,
        tags=tags,
        executor=executor,
        executor_options=executor_options,
        priority=priority,
    )


def add_job(*, session: Session, owner: User, spec: JobSpec, sweep: Sweep | None = None) -> tuple[Job, list[list[Run]]]:
    """Check the owner's quota (counting the jobs added before in this transaction) and add the job
    with one queued run per seed, grouped into tasks; nothing is committed or started here."""
    cfg = spec.config
    quota = {"preset": spec.preset, "seeds": len(spec.seeds), "steps": cfg.train_steps, "batch_size": cfg.batch_size}
    check_quota(session=session, user=owner, **quota)
    job = Job(
        preset=spec.preset,
        overrides=spec.overrides,
        config=cfg.model_dump(),
        config_hash=spec.config_hash,
        seeds=spec.seeds,
        executor=spec.executor,
        executor_options=spec.executor_options,
        priority=spec.priority,
        owner=owner,
        sweep=sweep,
        tag_rows=[JobTag(tag=tag) for tag in spec.tags],
        runs=[Run(seed=seed, total_steps=cfg.train_steps) for seed in spec.seeds],
    )
    session.add(job)
    session.flush()
    return job, executor_of(job).plan(job, job.runs)


def create_job(*, session: Session, owner: User, spec: JobSpec) -> Job:
    """Store the job `spec` describes (`job_spec`) with one queued run per seed, then hand its tasks to the
    executor."""
    job, groups = add_job(session=session, owner=owner, spec=spec)
    session.commit()
    start_jobs(session, [(job, groups)])
    return job


def start_jobs(session: Session, planned: Sequence[tuple[Job, list[list[Run]]]]) -> None:
    """Start committed jobs: the tasks of a dispatched executor wait in the database for the fair-share
    dispatcher (one pass for all of them), other executors' tasks start at once."""
    if any(executor_of(job).dispatched for job, _ in planned):
        dispatch(session=session)
    for job, groups in planned:
        if not executor_of(job).dispatched:
            _enqueue(session, job, groups)


def _enqueue(session: Session, job: Job, groups: list[list[Run]]) -> None:
    """Send each task; a task the queue refuses fails its runs (retryable) and answers Unavailable.

    Executors may record what they started on the job and its runs (the SLURM job id); committed here.
    """
    errors = []
    for group in groups:
        try:
            executor_of(job).start(job, group)
        except Exception as exc:  # broker down or refusing: the runs must not wait forever as queued
            errors.append(f"{type(exc).__name__}: {exc}")
            for run in group:
                set_state(run, State.FAILED, error=f"could not be queued: {errors[-1]}")
    session.commit()
    if errors:
        raise Unavailable(
            f"job {job.id} was stored but could not be queued ({errors[0]}); "
            f"retry it when the queue is back (POST /jobs/{job.id}/retry)"
        )


def get_job(*, session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id, options=[selectinload(Job.runs)])
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def list_jobs(
    *,
    session: Session,
    state: State | None = None,
    config: str | None = None,
    owner: str | None = None,
    tag: str | None = None,
    offset: int = 0,
    limit: int = 50,
    with_runs: bool = True,
) -> tuple[list[Job], int]:
    """Jobs newest first, filtered; `config` is a preset name (any alias) or a config hash.

    `with_runs=False` leaves the runs unloaded: a list counts them with `run_counts` instead.
    """
    filters: list[ColumnElement[bool]] = []
    if state is not None:
        filters.append(Job.state == state)
    if config is not None:
        try:
            filters.append(Job.preset == canonical_preset(config))
        except ValueError:
            filters.append(Job.config_hash == config)
    if owner is not None:
        filters.append(Job.owner.has(User.name == owner))
    if tag is not None:
        filters.append(Job.tag_rows.any(JobTag.tag == tag))
    count = session.scalar(select(func.count()).select_from(Job).where(*filters)) or 0
    query = select(Job).where(*filters).order_by(Job.id.desc()).offset(offset).limit(limit)
    if with_runs:
        query = query.options(selectinload(Job.runs))
    return list(session.scalars(query)), count


@dataclass(frozen=True)
class RunCounts:
    """A job's runs counted per state, and its progress in steps over all of them."""

    states: dict[str, int]
    steps_done: int
    steps_total: int

    @property
    def percent(self) -> float:
        return 100 * self.steps_done / self.steps_total if self.steps_total else 0.0


def run_counts(*, session: Session, job_ids: Sequence[int]) -> dict[int, RunCounts]:
    """Per job, its runs per state and its steps, counted by the database (no run is loaded)."""
    return count_runs(session, Run.job_id, job_ids)


def count_runs(session: Session, key: InstrumentedAttribute[Any], ids: Sequence[int]) -> dict[int, RunCounts]:
    """Runs per state and their steps, counted by the database per value of `key` (`Run.job_id`, or a
    column of `Job` such as `Job.sweep_id`) among `ids`."""
    query = select(key, Run.state, func.count(), func.sum(Run.step), func.sum(Run.total_steps))
    if key.class_ is Job:
        query = query.join(Run.job)
    rows = session.execute(query.where(key.in_(ids)).group_by(key, Run.state))
    counted: dict[int, RunCounts] = {id_: RunCounts({}, 0, 0) for id_ in ids}
    for id_, state, count, done, total in rows:
        before = counted[id_]
        states = {**before.states, state: count}
        counted[id_] = RunCounts(states, before.steps_done + int(done or 0), before.steps_total + int(total or 0))
    return counted


def cancel_job(*, session: Session, job_id: int, user: User) -> Job:
    """Cancel queued runs now; running runs are flagged and stop within a heartbeat (SLURM: scancel, now)."""
    job = locked_job(session, job_id)
    check_may_change(job, user, "cancel")
    if not cancel_runs(job):
        raise Conflict(f"job {job_id} has already ended ({job.state}); nothing to cancel")
    session.commit()
    if executor_of(job).dispatched:
        dispatch(session=session)  # the cancelled tasks' places go to the next ones
    return job


def cancel_runs(job: Job) -> int:
    """Cancel the active runs of a locked job (not committed), as its executor does (`Executor.cancel`).
    Returns how many runs were active."""
    active = [run for run in job.runs if run.state in ACTIVE]
    if active:
        executor_of(job).cancel(active)
    return len(active)


def retry_job(*, session: Session, job_id: int, user: User) -> Job:
    """Queue the job's failed and diverged runs again, from scratch (their old curves are dropped)."""
    job = locked_job(session, job_id)
    check_may_change(job, user, "retry")
    runs = [run for run in job.runs if run.state in RETRYABLE]
    if not runs:
        raise Conflict(f"job {job_id} has no failed or diverged runs to retry (job is {job.state})")
    steps, batch, ended = job.config["train_steps"], job.config["batch_size"], job.state not in ACTIVE
    quota = {"preset": job.preset, "seeds": len(runs), "steps": steps, "batch_size": batch, "new_job": ended}
    check_quota(session=session, user=user, **quota)  # the owner's quota (an admin has none)
    session.execute(delete(Metric).where(Metric.run_id.in_([run.id for run in runs])))
    for run in runs:
        set_state(run, State.QUEUED)
        run.step = run.attempts = 0
        run.error = run.final_metrics = run.divergence = run.resume_step = None
        run.started_at = run.finished_at = None
        run.cancel_requested = False
    groups = executor_of(job).plan(job, runs)
    session.commit()
    start_jobs(session, [(job, groups)])
    return job


def delete_job(*, session: Session, job_id: int, user: User) -> None:
    """Delete an ended job with its runs, curves and files (checkpoints, SLURM task folders)."""
    job = locked_job(session, job_id)
    check_may_change(job, user, "delete")
    if job.state in ACTIVE:
        raise Conflict(f"job {job_id} is still {job.state}; cancel it first")
    session.delete(job)
    session.commit()
    delete_job_files(job_id)


def locked_job(session: Session, job_id: int) -> Job:
    """The job with its row locked (same lock order as the workers: job, then runs)."""
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update(of=Job))
    if job is None:
        raise NotFound(f"job {job_id} not found")
    session.scalars(select(Run).where(Run.job_id == job_id).with_for_update()).all()
    return job
