"""The Celery worker process's entry point: `celery -A worker.celery_app:app worker` (what `ired-dcd worker`
runs). The app and its configuration are the service layer's (`ired_dcd.services.celery_app`); this
module adds what only a worker process does: a local worker stops with the server that started it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from celery.signals import worker_init

from ired_dcd.services.celery_app import app as app

PARENT_ENV = "IRED_PARENT_PID"
"""Set by `ired-dcd serve` for the local worker it starts: the worker stops when that process is gone."""
PARENT_POLL_SECONDS = 1.0

log = logging.getLogger(__name__)


@worker_init.connect
def stop_with_parent(**_kwargs: Any) -> None:
    """A local worker ends when the server that started it ends, however it ended (even SIGKILL or an
    OOM kill, which leave the server no chance to stop it): a thread watches the parent process."""
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        threading.Thread(target=_watch_parent, args=(int(parent),), name="ired-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    # an orphan is re-parented (to init or a subreaper), so its parent id changes: portable, no prctl
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    log.warning("the server that started this worker (pid %d) is gone; stopping", parent)
    os.kill(os.getpid(), signal.SIGQUIT)  # cold stop, as the server would: running runs checkpoint and resume later
