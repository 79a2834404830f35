"""Celery tasks: thin wrappers over `ired_dcd.services.execution` (ids in, everything re-read)."""

from __future__ import annotations

from ired_dcd.services.execution import execute_runs
from worker.celery_app import TRAIN_TASK, app


@app.task(name=TRAIN_TASK)
def train_runs(run_ids: list[int]) -> None:
    """Train one job's runs as one ensemble; safe to deliver twice (the database lease decides)."""
    execute_runs(run_ids)
