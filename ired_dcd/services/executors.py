"""Executors: where a job's runs train. One protocol; the job service and the dispatcher call it and never
test an executor's name.

- `celery`: the lab's GPU workers. A committed task waits in the database until the fair-share
  dispatcher (`services.scheduler.dispatch`) sends it through the broker; a worker claims its runs under
  a lease (`services.execution`). Cancelling flags a running run, which stops within a heartbeat.
- `slurm`: a cluster. A job is one array job, submitted as soon as it is committed and followed by the
  SLURM collector (`services.slurm_jobs`); cancelling is scancel.

A job stores its executor's name (`Job.executor`); `executor_of(job)` is its implementation.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from ired_dcd.models import Job, Run, utcnow
from ired_dcd.services import slurm_jobs
from ired_dcd.services.artifacts import job_folder
from ired_dcd.services.celery_app import TRAIN_TASK, app
from ired_dcd.services.errors import InvalidInput
from ired_dcd.services.runs import set_state
from ired_dcd.settings import get_settings
from ired_dcd.states import State


class Executor(Protocol):
    name: ClassVar[str]
    dispatched: ClassVar[bool]
    """True: committed tasks wait for the fair-share dispatcher, which calls `start`; False: `start` is
    called for each task as soon as the job is committed."""

    def check_options(self, options: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The job's executor options (the API's `slurm` field), checked; InvalidInput naming the field."""
        ...

    def plan(self, job: Job, runs: list[Run]) -> list[list[Run]]:
        """Group queued runs into tasks and record on them what each task needs (not committed)."""
        ...

    def start(self, job: Job, runs: list[Run]) -> None:
        """Start one committed task; raises when the queue or the cluster refuses it."""
        ...

    def cancel(self, runs: Sequence[Run]) -> None:
        """Cancel the active runs of a locked job (not committed)."""
        ...


class CeleryExecutor:
    name: ClassVar[str] = "celery"
    dispatched: ClassVar[bool] = True

    def check_options(self, options: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if options is not None:
            raise InvalidInput(f"slurm: settings for executor 'slurm' only; this job's executor is {self.name!r}")
        return None

    def plan(self, job: Job, runs: list[Run]) -> list[list[Run]]:
        """One ensemble task, or one task per seed (IRED_SPLIT_SEEDS), each with a checkpoint of its own."""
        groups = [[run] for run in runs] if get_settings().split_seeds else [runs]
        for group in groups:
            path = f"{job_folder(job.id)}/{uuid.uuid4().hex[:12]}.pt"
            for run in group:
                run.checkpoint_path = path
        return groups

    def start(self, job: Job, runs: list[Run]) -> None:
        """One Celery task trains `runs` together; the worker re-reads everything from the database."""
        app.send_task(
            TRAIN_TASK,
            args=[[run.id for run in runs]],
            queue=get_settings().queue,
            task_id=runs[0].task_id,  # set by the dispatcher, so the reconciler can find it in the broker
        )

    def cancel(self, runs: Sequence[Run]) -> None:
        """Queued runs end now; a running run is flagged and stops within a heartbeat, unless its lease
        has expired (its worker is gone, nobody would see the flag)."""
        now = utcnow()
        for run in runs:
            if run.state == State.RUNNING and run.lease_live(now):
                run.cancel_requested = True
            else:
                set_state(run, State.CANCELLED, now=now)


class SlurmArrayExecutor:
    name: ClassVar[str] = slurm_jobs.EXECUTOR
    dispatched: ClassVar[bool] = False

    def check_options(self, options: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return slurm_jobs.check_job_options(options)

    def plan(self, job: Job, runs: list[Run]) -> list[list[Run]]:
        """One array job: its intent (directory, seed groups, checkpoints) is recorded on the runs, to be
        committed with them before sbatch runs (`slurm_jobs.plan_submission`)."""
        slurm_jobs.plan_submission(job, runs)
        return [runs]

    def start(self, job: Job, runs: list[Run]) -> None:
        slurm_jobs.submit_runs(job, runs)

    def cancel(self, runs: Sequence[Run]) -> None:
        slurm_jobs.cancel_runs(runs)


EXECUTORS: dict[str, Executor] = {executor.name: executor for executor in (CeleryExecutor(), SlurmArrayExecutor())}
"""Executor name → implementation; a job's `executor` is one of these names."""
DISPATCHED = tuple(name for name, executor in EXECUTORS.items() if executor.dispatched)
"""The executors whose tasks the fair-share dispatcher sends."""


def executor_named(name: str) -> Executor:
    """The executor `name`, or InvalidInput listing the valid ones."""
    if name not in EXECUTORS:
        raise InvalidInput(f"executor: {name!r} is not available on this server; valid: {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


def executor_of(job: Job) -> Executor:
    return EXECUTORS[job.executor]
