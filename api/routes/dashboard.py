"""Dashboard: the results page for browsers, and its own assets (served here: no CDN, works offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from api.deps import DB_INT_MAX, ReadsDep
from api.pages import JOBS_SHOWN, CompareParamsDep, render_dashboard
from ired_dcd.services.errors import NotFound

router = APIRouter(tags=["dashboard"])
assets = APIRouter(include_in_schema=False)
"""The page's CSS and JavaScript: public, like any static file (the page itself needs a token)."""

STATIC_FILES = {path.name: path for path in (Path(__file__).resolve().parents[1] / "static").iterdir()}
"""The dashboard's CSS and JavaScript by file name; nothing else is served from disk."""


JobsPage = Annotated[int, Query(ge=1, le=DB_INT_MAX // JOBS_SHOWN, description="page of the job list, 1: newest")]


@router.get("/", response_class=HTMLResponse)
async def read_dashboard(
    request: Request, reads: ReadsDep, params: CompareParamsDep, jobs_page: JobsPage = 1
) -> HTMLResponse:
    """The results dashboard: compare table, success level, per-seed plot, learning curves, live jobs."""
    limiter = request.app.state.compare_slots
    return await render_dashboard(request, reads, params, jobs_page=jobs_page, limiter=limiter)


@assets.get("/static/{path}", name="static")
def read_static(path: str) -> FileResponse:
    """One of the dashboard's assets."""
    if path not in STATIC_FILES:
        raise NotFound(f"static file {path!r} not found")
    return FileResponse(STATIC_FILES[path], headers={"Cache-Control": "no-cache"})
