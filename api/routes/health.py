"""Health: database, broker and workers."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import SessionDep
from api.schemas import HealthPublic
from ired_dcd.services.monitoring import health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
def read_health(session: SessionDep) -> JSONResponse:
    """200 when the database and broker answer (with the number of live workers), else 503."""
    report = HealthPublic(**health(session=session))
    return JSONResponse(report.model_dump(), status_code=200 if report.status == "ok" else 503)
