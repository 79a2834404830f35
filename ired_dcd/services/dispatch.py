"""Handing committed runs to an executor: grouping seeds into tasks and sending them."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from ired_dcd.models import Job, Run
from ired_dcd.services import slurm
from ired_dcd.services.artifacts import job_folder
from ired_dcd.settings import get_settings
from worker.celery_app import TRAIN_TASK, app


def plan_tasks(job: Job, runs: list[Run]) -> list[list[Run]]:
    """Group runs into tasks (one ensemble task, or one per seed) and give each task its checkpoint.

    A SLURM job is one task: one array job, whose intent (directory, seed groups, checkpoints) is
    recorded on the runs here, to be committed with them before sbatch runs (`slurm.plan_submission`).
    """
    if job.executor == slurm.EXECUTOR:
        slurm.plan_submission(job, runs)
        return [runs]
    groups = [[run] for run in runs] if get_settings().split_seeds else [runs]
    for group in groups:
        path = f"{job_folder(job.id)}/{uuid.uuid4().hex[:12]}.pt"
        for run in group:
            run.checkpoint_path = path
    return groups


def send_celery(job: Job, runs: list[Run]) -> None:
    """One Celery task trains `runs` together; the worker re-reads everything from the database."""
    app.send_task(
        TRAIN_TASK,
        args=[[run.id for run in runs]],
        queue=get_settings().queue,
        task_id=runs[0].task_id,  # set by the dispatcher, so the reconciler can find it in the broker
    )


EXECUTORS: dict[str, Callable[[Job, list[Run]], None]] = {"celery": send_celery, slurm.EXECUTOR: slurm.submit_runs}
"""Executor name → function that starts one task; a job's `executor` must be one of these."""
