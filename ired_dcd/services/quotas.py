"""Per-user quotas: how much work one user may have queued or training at once.

Two limits, checked when a job is submitted or retried (admins have none):

- **GPU-hours**: the estimated GPU time of the user's runs that are queued or training (what they
  have left to train) plus the new job's, at most `gpu_hours_quota`;
- **queued jobs**: the user's jobs that have not ended (queued or running), plus the new one, at
  most `queued_jobs_quota`.

Each user's limits are stored on the user (`ired-dcd users quota NAME --gpu-hours H --queued-jobs N`);
NULL means the server's defaults (`IRED_QUOTA_GPU_HOURS`, `IRED_QUOTA_QUEUED_JOBS`).

The cost model (an estimate; docs/service.md, "Quotas"): one run costs

    GPU-hours = steps × batch_size × GPU_SECONDS_PER_SAMPLE_STEP[preset] / 3600

where steps is what the run has left (total − done). A sample-step is one training example through one
training step; its cost is set by how many energy evaluations a step makes per sample:

- the denoising loss: forward + backward ≈ 3 forward passes (F);
- with negatives: the positive and negative energy terms (≈ 6 F) and k sampler steps, each a forward
  and the written-out gradient (≈ 2 F each): 9 F + 2k F in all.

The scale comes from the engine's throughput target on one H100 (docs/performance.md): 1,100
seed-steps/s at batch 2048 for Q-202…Q-204 (k = 10, 29 F), i.e. 1 / (1100 · 2048) = 4.4e-7 GPU-seconds
per sample-step, so F ≈ 1.5e-8 s. Hence Q-201…Q-204 (k = 10): 4.4e-7; Q-200 (k = 2, 13 F): 2.0e-7;
Q-100 (no negatives, 3 F): 4.6e-8. These are not measurements (no GPU has run the code yet): replace
them with measured ones when `bench/train_throughput.py` has run on a GPU. Overrides such as a wider
model or more sampler steps are not in the estimate; the preset's cost stands for all of its jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ired_dcd.models import Job, Run, User
from ired_dcd.services.errors import InvalidInput, QuotaExceeded
from ired_dcd.services.users import get_user
from ired_dcd.settings import get_settings
from ired_dcd.states import ACTIVE

GPU_SECONDS_PER_SAMPLE_STEP: Mapping[str, float] = {
    "q100_denoise_only": 4.6e-8,
    "q200_ired_reference": 2.0e-7,
    "q201_dcd_baseline": 4.4e-7,
    "q202_dcd_cdloss": 4.4e-7,
    "q203_dcd_replay": 4.4e-7,
    "q204_dcd_full": 4.4e-7,
}
"""Estimated GPU-seconds of one training example through one training step, per preset (see above)."""
DEFAULT_GPU_SECONDS_PER_SAMPLE_STEP = max(GPU_SECONDS_PER_SAMPLE_STEP.values())
"""A preset missing from the table is counted at the highest cost: the estimate errs towards refusing."""


def sample_step_cost(preset: str) -> float:
    """GPU-seconds per sample-step of `preset`."""
    return GPU_SECONDS_PER_SAMPLE_STEP.get(preset, DEFAULT_GPU_SECONDS_PER_SAMPLE_STEP)


def gpu_hours(preset: str, *, seeds: int, steps: int, batch_size: int) -> float:
    """Estimated GPU-hours of `seeds` runs of `steps` steps at `batch_size`."""
    return seeds * steps * batch_size * sample_step_cost(preset) / 3600


@dataclass(frozen=True)
class Quota:
    """A user's limits (None: no limit, for admins) and what their work in flight uses now."""

    gpu_hours: float | None
    queued_jobs: int | None
    gpu_hours_used: float
    queued_jobs_used: int


def limits(user: User) -> tuple[float | None, int | None]:
    """(GPU-hours, queued jobs) allowed to `user`: their own, else the server's defaults; none for admins."""
    if user.is_admin:
        return None, None
    settings = get_settings()
    gpu = user.gpu_hours_quota if user.gpu_hours_quota is not None else settings.quota_gpu_hours
    jobs = user.queued_jobs_quota if user.queued_jobs_quota is not None else settings.quota_queued_jobs
    return gpu, jobs


def usage(session: Session, user_id: int) -> tuple[float, int]:
    """(GPU-hours left to train in the user's queued and running runs, the user's jobs not ended)."""
    batch = Job.config["batch_size"].as_integer()
    left = func.sum(Run.total_steps - Run.step)
    rows = session.execute(
        select(Job.preset, batch, left)
        .join(Run, Run.job_id == Job.id)
        .where(Job.owner_id == user_id, Run.state.in_(list(ACTIVE)))
        .group_by(Job.id, Job.preset, batch)
    )
    hours = sum(
        gpu_hours(preset, seeds=1, steps=int(left or 0), batch_size=int(size or 0)) for preset, size, left in rows
    )
    active = Job.owner_id == user_id, Job.state.in_(list(ACTIVE))
    return hours, session.scalar(select(func.count()).select_from(Job).where(*active)) or 0


def quota_of(*, session: Session, user: User) -> Quota:
    """A user's limits and their use now."""
    gpu, jobs = limits(user)
    used_hours, used_jobs = usage(session, user.id)
    return Quota(gpu_hours=gpu, queued_jobs=jobs, gpu_hours_used=used_hours, queued_jobs_used=used_jobs)


def check_quota(
    *, session: Session, user: User, preset: str, seeds: int, steps: int, batch_size: int, new_job: bool = True
) -> None:
    """QuotaExceeded, stating the numbers, when `seeds` more runs (in a new job, or `new_job=False`: in a
    job that is counted already) would take `user` over a limit.

    The user's row is locked first (FOR NO KEY UPDATE: imports and jobs that only reference the user
    go on), so that two submissions of one user are checked one after the other and cannot both pass
    on the same room; the lock ends with the caller's transaction.
    """
    gpu, jobs = limits(user)
    if gpu is None and jobs is None:
        return
    session.execute(select(User.id).where(User.id == user.id).with_for_update(key_share=True))
    used_hours, used_jobs = usage(session, user.id)
    if jobs is not None and new_job and used_jobs + 1 > jobs:
        raise QuotaExceeded(
            f"quota: {user.name} has {used_jobs} job(s) queued or running, the limit is {jobs}; "
            "wait for some to end or cancel some (an admin raises it with "
            f"`ired-dcd users quota {user.name} --queued-jobs N`)"
        )
    needed = gpu_hours(preset, seeds=seeds, steps=steps, batch_size=batch_size)
    if gpu is not None and used_hours + needed > gpu:
        raise QuotaExceeded(
            f"quota: this job needs an estimated {needed:.4g} GPU-hours ({seeds} seed(s) × {steps} steps × "
            f"batch {batch_size} × {sample_step_cost(preset):.2g} GPU-s per sample-step for {preset}); "
            f"{user.name} has {used_hours:.4g} GPU-hours queued or training and a limit of {gpu:.4g} "
            f"(an admin raises it with `ired-dcd users quota {user.name} --gpu-hours H`)"
        )


def set_quota(
    *, session: Session, name: str, gpu_hours: float | None = None, queued_jobs: int | None = None, reset: bool = False
) -> User:
    """Set a user's limits (given ones only); `reset` first returns both to the server's defaults."""
    user = get_user(session=session, name=name)
    if gpu_hours is not None and not gpu_hours >= 0:
        raise InvalidInput(f"gpu_hours: must be a number ≥ 0, got {gpu_hours}")
    if queued_jobs is not None and queued_jobs < 0:
        raise InvalidInput(f"queued_jobs: must be ≥ 0, got {queued_jobs}")
    if reset:
        user.gpu_hours_quota = user.queued_jobs_quota = None
    if gpu_hours is not None:
        user.gpu_hours_quota = gpu_hours
    if queued_jobs is not None:
        user.queued_jobs_quota = queued_jobs
    session.commit()
    return user
