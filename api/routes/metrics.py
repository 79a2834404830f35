"""Prometheus metrics of the service."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import cache
from api.deps import SessionDep
from ired_dcd.services.monitoring import prometheus_text

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def read_metrics(session: SessionDep) -> Response:
    """Jobs and runs per state, and this API process's read-cache lookups, in the Prometheus text format."""
    return Response(prometheus_text(session=session) + generate_latest(cache.REGISTRY), media_type=CONTENT_TYPE_LATEST)
