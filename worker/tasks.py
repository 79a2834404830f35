"""Celery tasks: thin wrappers over `ired_dcd.services.execution` (ids in, everything re-read)."""

from __future__ import annotations

from celery.exceptions import Reject

from ired_dcd.services.execution import Interrupted, execute_runs
from worker.celery_app import TRAIN_TASK, app


@app.task(name=TRAIN_TASK)
def train_runs(run_ids: list[int]) -> None:
    """Train one job's runs as one ensemble; safe to deliver twice (the database lease decides)."""
    try:
        execute_runs(run_ids)
    except Interrupted as exc:  # worker shutting down: back to the queue, resumed from the checkpoint
        raise Reject(str(exc), requeue=True) from exc
