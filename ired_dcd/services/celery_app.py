"""The Celery app: Redis broker in lab-server mode, a filesystem queue in the embedded default.

Training tasks run for hours, so: acks late (a task is acknowledged only when it has finished),
reject on worker lost (a killed worker's task goes back to the queue), prefetch 1 (a worker never
holds a second task while it trains), a visibility timeout above the longest job (Redis re-delivers
unacknowledged tasks after it, live or not — the database lease makes a second delivery harmless),
and a fresh pool process per task so GPU memory is returned between jobs. The broker is a plain FIFO:
job priorities and fairness between users are applied before a task reaches it
(`ired_dcd.services.scheduler`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from ired_dcd.settings import Settings, get_settings

TRAIN_TASK = "ired.train_runs"
"""The one task the workers run (`worker.tasks.train_runs`): the ids of the runs of one task."""


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for `settings`; the queue name and broker come from the environment."""
    if settings.embedded:
        folder = settings.queue_dir
        (folder / "control").mkdir(parents=True, exist_ok=True)
        broker_url = "filesystem://"
        transport_options: dict[str, Any] = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
        }
    else:
        broker_url = settings.broker_url
        transport_options = {
            "visibility_timeout": settings.visibility_timeout,
            # sweep for tasks of dead workers a few times per visibility timeout, at most every minute
            "unacked_restore_interval": min(60, max(1, settings.visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
        }
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.queue,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": 1,
        "imports": ["worker.tasks"],
    }


app = Celery("ired_dcd")
app.add_defaults(lambda: celery_config(get_settings()))
