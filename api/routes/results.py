"""Results: the comparison against a baseline (JSON, CSV, markdown, text, or the dashboard) and imports."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from api.deps import CurrentUser, SessionDep
from api.pages import CompareParamsDep, render_dashboard
from ired_core.report import render
from ired_core.results_dir import RowFormat
from ired_core.stats import Comparison
from ired_dcd.services import results
from ired_dcd.services.results import ImportSummary
from ired_dcd.services.results_cache import cached_comparison

router = APIRouter(prefix="/results", tags=["results"])

CompareFormat = Literal["json", "csv", "markdown", "text"]
MEDIA_TYPES = {"csv": "text/csv", "markdown": "text/markdown", "text": "text/plain"}
IMPORT_FORMATS: dict[str, RowFormat] = {"application/json": "json", "text/csv": "csv"}
MAX_IMPORT_BYTES = 16 * 1024 * 1024
IMPORT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "array", "items": {"type": "object"}},
            "example": [{"config": "q204", "seed": 0, "val_mse": 0.00951, "tags": ["slurm-2024"]}],
        },
        "text/csv": {
            "schema": {"type": "string"},
            "example": "config,seed,val_mse,val_mse_ood,tags\nq204,0,0.00951,0.231,slurm-2024\n",
        },
    },
}


def _wants_html(request: Request) -> bool:
    """A browser navigating to the URL (its Accept lists text/html); API clients send */* or JSON."""
    return "text/html" in request.headers.get("accept", "")


async def import_body(request: Request) -> tuple[str, RowFormat]:
    """The request body as text with its row format (from the content type).

    Its size is capped at MAX_IMPORT_BYTES by the app's body limit (`api.security`).
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in IMPORT_FORMATS:
        accepted = " or ".join(IMPORT_FORMATS)
        raise HTTPException(415, f"content-type: {media_type or 'none'} is not accepted; use {accepted}")
    body = await request.body()
    try:
        return body.decode("utf-8-sig"), IMPORT_FORMATS[media_type]
    except UnicodeDecodeError:
        raise HTTPException(422, "body: not UTF-8 text") from None


@router.get(
    "/compare",
    response_model=Comparison,
    responses={200: {"content": {"text/csv": {}, "text/markdown": {}, "text/plain": {}, "text/html": {}}}},
)
def read_comparison(
    request: Request,
    session: SessionDep,
    params: CompareParamsDep,
    format: Annotated[CompareFormat | None, Query(description="default json; a browser gets the dashboard")] = None,
) -> Any:
    """Per-config statistics of a metric against a baseline, the ablation steps and the plan's success level."""
    if format is None and _wants_html(request):
        return render_dashboard(request, session, params)
    comparison = cached_comparison(session=session, **params.service_kwargs())
    if format in (None, "json"):
        return comparison.to_dict()
    return Response(render(comparison, format), media_type=MEDIA_TYPES[format])


@router.post("/import", response_model=ImportSummary, openapi_extra={"requestBody": IMPORT_BODY})
def import_results(
    user: CurrentUser,  # first: who is asking is checked before the body is read
    session: SessionDep,
    body: Annotated[tuple[str, RowFormat], Depends(import_body)],
    source: Annotated[str | None, Query(max_length=255, description="where the rows came from")] = None,
) -> Any:
    """Store results made elsewhere (a JSON list or CSV rows); all or nothing, the same rows twice stored once."""
    text, fmt = body
    return results.import_rows(session=session, text=text, fmt=fmt, owner=user, source=source)
