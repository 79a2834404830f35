"""Health: database, broker and workers, as the server's health monitor last saw them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.schemas import HealthPublic
from ired_dcd.services.monitoring import HealthMonitor, check_health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
async def read_health(request: Request) -> JSONResponse:
    """200 when the database and broker answer (with the number of live workers), else 503; from memory,
    checked every few seconds in the background, so polling it costs no database or broker round."""
    monitor: HealthMonitor | None = request.app.state.health
    report = HealthPublic(**(monitor.report() if monitor is not None else await run_in_threadpool(check_health)))
    return JSONResponse(report.model_dump(), status_code=200 if report.status == "ok" else 503)
