"""Handing committed runs to an executor: grouping seeds into tasks and sending them."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from ired_dcd.models import Job, Run
from ired_dcd.settings import get_settings
from worker.celery_app import TRAIN_TASK, app, broker_priority


def plan_tasks(job: Job, runs: list[Run]) -> list[list[Run]]:
    """Group runs into tasks (one ensemble task, or one per seed) and give each task its checkpoint."""
    groups = [[run] for run in runs] if get_settings().split_seeds else [runs]
    for group in groups:
        path = f"job-{job.id}/{uuid.uuid4().hex[:12]}.pt"
        for run in group:
            run.checkpoint_path = path
    return groups


def send_celery(job: Job, runs: list[Run]) -> None:
    """One Celery task trains `runs` together; the worker re-reads everything from the database."""
    app.send_task(
        TRAIN_TASK,
        args=[[run.id for run in runs]],
        queue=get_settings().queue,
        priority=broker_priority(job.priority),
    )


EXECUTORS: dict[str, Callable[[Job, list[Run]], None]] = {"celery": send_celery}
"""Executor name → function that starts one task; a job's `executor` must be one of these."""
