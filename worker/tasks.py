"""Celery tasks: thin wrappers over `ired_dcd.services.execution` (ids in, everything re-read)."""

from __future__ import annotations

from typing import Any

from celery.exceptions import Reject
from celery.signals import worker_ready

from ired_dcd.db import get_engine
from ired_dcd.services.celery_app import TRAIN_TASK, app
from ired_dcd.services.execution import Interrupted, execute_runs
from ired_dcd.services.reconciler import reconcile_once
from ired_dcd.settings import get_settings


@app.task(name=TRAIN_TASK)
def train_runs(run_ids: list[int]) -> None:
    """Train one job's runs as one ensemble; safe to deliver twice (the database lease decides)."""
    try:
        execute_runs(run_ids)
    except Interrupted as exc:  # worker shutting down: back to the queue, resumed from the checkpoint
        raise Reject(str(exc), requeue=True) from exc


@worker_ready.connect
def reconcile_at_start(**_kwargs: Any) -> None:
    """A starting worker re-sends the tasks the broker lost (e.g. Redis restarted with the workers)."""
    if get_settings().reconcile_seconds > 0:
        reconcile_once()
        get_engine().dispose()  # no open connection for the pool processes forked from this one later
