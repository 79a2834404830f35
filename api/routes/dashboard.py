"""Dashboard: the results page for browsers, and its own assets (served here: no CDN, works offline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from api.deps import SessionDep
from api.pages import CompareParamsDep, render_dashboard
from ired_dcd.services.errors import NotFound

router = APIRouter(tags=["dashboard"])
assets = APIRouter(include_in_schema=False)
"""The page's CSS and JavaScript: public, like any static file (the page itself needs a token)."""

STATIC_FILES = {path.name: path for path in (Path(__file__).resolve().parents[1] / "static").iterdir()}
"""The dashboard's CSS and JavaScript by file name; nothing else is served from disk."""


@router.get("/", response_class=HTMLResponse)
def read_dashboard(request: Request, session: SessionDep, params: CompareParamsDep) -> HTMLResponse:
    """The results dashboard: compare table, success level, per-seed plot, learning curves, live jobs."""
    return render_dashboard(request, session, params)


@assets.get("/static/{path}", name="static")
def read_static(path: str) -> FileResponse:
    """One of the dashboard's assets."""
    if path not in STATIC_FILES:
        raise NotFound(f"static file {path!r} not found")
    return FileResponse(STATIC_FILES[path], headers={"Cache-Control": "no-cache"})
