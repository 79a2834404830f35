"""Results: the comparison against a baseline (JSON, CSV, markdown, text, or the dashboard) and imports."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentUser, ReadsDep, SessionDep
from api.pages import CompareParams, CompareParamsDep, render_dashboard
from ired_core.report import render
from ired_core.results_dir import RowFormat
from ired_core.stats import Comparison
from ired_dcd.db import new_session
from ired_dcd.services import results
from ired_dcd.services.results import ImportSummary

router = APIRouter(prefix="/results", tags=["results"])

CompareFormat = Literal["json", "csv", "markdown", "text"]
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "markdown": "text/markdown", "text": "text/plain"}
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
async def read_comparison(
    request: Request,
    reads: ReadsDep,
    params: CompareParamsDep,
    format: Annotated[CompareFormat | None, Query(description="default json; a browser gets the dashboard")] = None,
) -> Response:
    """Per-config statistics of a metric against a baseline, the ablation steps and the plan's success level."""
    if format is None and _wants_html(request):
        return await run_in_threadpool(_dashboard, request, params)
    answer = format or "json"
    body = await reads.answers.get(("compare", params, answer), ("results",), partial(_comparison, params, answer))
    return Response(body, media_type=MEDIA_TYPES[answer])


def _dashboard(request: Request, params: CompareParams) -> Response:
    with new_session() as session:
        return render_dashboard(request, session, params)


def _comparison(params: CompareParams, answer: CompareFormat) -> bytes:
    with new_session() as session:
        comparison = results.compare_results(session=session, **params.service_kwargs())
    if answer == "json":
        return json.dumps(comparison.to_dict(), allow_nan=False, separators=(",", ":")).encode()
    return render(comparison, answer).encode()


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
