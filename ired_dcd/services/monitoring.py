"""Health (database, broker, workers) and Prometheus counters for the server."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ired_dcd.models import Job, Run
from ired_dcd.settings import get_settings
from ired_dcd.states import State
from worker.celery_app import app

PING_SECONDS = 1.0


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
