"""Health (database, broker, workers) and Prometheus counters for the server.

Pinging the workers takes `PING_SECONDS` and checking the database takes a connection, so `/health`
does neither per request: a `HealthMonitor` checks every `health_seconds` in a thread of its own and
the route answers its latest report. However many pollers ask, the cost is one check per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ired_dcd.db import new_session
from ired_dcd.models import Job, Run
from ired_dcd.services.celery_app import app
from ired_dcd.settings import get_settings
from ired_dcd.states import State

PING_SECONDS = 1.0
STALE_INTERVALS = 3
"""A report older than this many intervals (plus a ping) means the monitor itself is stuck: degraded."""

log = logging.getLogger(__name__)


def health(*, session: Session) -> dict[str, Any]:
    """Whether the database and the broker answer, and how many workers reply to a ping."""
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # any driver error means the same thing here
        database = f"error: {type(exc).__name__}"
    try:
        workers: int | None = len(app.control.ping(timeout=PING_SECONDS))
        broker = "ok"
    except Exception as exc:
        workers, broker = None, f"error: {type(exc).__name__}"
    return {
        "status": "ok" if database == broker == "ok" else "degraded",
        "mode": "embedded" if get_settings().embedded else "lab-server",
        "database": database,
        "broker": broker,
        "workers": workers,
    }


def check_health() -> dict[str, Any]:
    """`health` on a session of its own."""
    with new_session() as session:
        return health(session=session)


class HealthMonitor:
    """The latest health report, checked every `interval` seconds in a daemon thread."""

    def __init__(self, interval: float, check: Any = check_health, clock: Any = time.monotonic) -> None:
        self.interval, self._check, self._clock = interval, check, clock
        self.checks = 0
        self._report: dict[str, Any] = {}
        self._checked_at = -float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ired-health", daemon=True)

    def start(self) -> HealthMonitor:
        """Check once now (the first answer is a real one), then every interval in the background."""
        self._refresh()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop checking; a check under way finishes in its daemon thread and is not waited for."""
        self._stop.set()

    def report(self) -> dict[str, Any]:
        """The latest report; degraded when the checks stopped coming (the monitor is stuck)."""
        age = self._clock() - self._checked_at
        if age > STALE_INTERVALS * self.interval + PING_SECONDS:
            return {**self._report, "status": "degraded", "database": f"unknown: no health check for {age:.0f} s"}
        return self._report

    def _refresh(self) -> None:
        try:
            report = self._check()
        except Exception as exc:  # a check that fails is a report, never the end of the monitor
            log.exception("health check failed")
            report = {**self._report, "status": "degraded", "database": f"error: {type(exc).__name__}"}
        self._report, self._checked_at = report, self._clock()
        self.checks += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._refresh()


def prometheus_text(*, session: Session) -> bytes:
    """Jobs and runs per state, in the Prometheus text format."""
    registry = CollectorRegistry()
    for model, name in ((Job, "jobs"), (Run, "runs")):
        gauge = Gauge(f"ired_{name}", f"{name.capitalize()} per state", ["state"], registry=registry)
        counts = dict(session.execute(select(model.state, func.count()).group_by(model.state)).all())
        for state in State:
            gauge.labels(state=state.value).set(counts.get(state.value, 0))
    running = session.scalar(select(func.coalesce(func.sum(Run.step), 0)).where(Run.state == State.RUNNING))
    Gauge("ired_running_steps", "Steps done by running runs", registry=registry).set(running or 0)
    return generate_latest(registry)
