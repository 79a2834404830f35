"""Prometheus metrics of the service."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import SessionDep
from ired_dcd.services.monitoring import prometheus_text

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def read_metrics(session: SessionDep) -> Response:
    """Jobs and runs per state in the Prometheus text format."""
    return Response(prometheus_text(session=session), media_type=CONTENT_TYPE_LATEST)
