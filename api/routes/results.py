"""Results: the comparison against a baseline (JSON, CSV, markdown, text, or the dashboard) and imports."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentIdentity, ReadsDep
from api.pages import CompareParamsDep, render_dashboard, wants_html
from api.routes.dashboard import JobsPage
from ired_core.report import render
from ired_core.results_dir import RowFormat
from ired_core.verdict import Comparison
from ired_dcd.db import new_session
from ired_dcd.services import results
from ired_dcd.services.results import ImportSummary
from ired_dcd.services.users import Identity

router = APIRouter(prefix="/results", tags=["results"])

CompareFormat = Literal["json", "csv", "markdown", "text"]
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "markdown": "text/markdown", "text": "text/plain"}
IMPORT_FORMATS: dict[str, RowFormat] = {"application/json": "json", "text/csv": "csv"}
MAX_IMPORT_BYTES = 16 * 1024 * 1024
IMPORT_CONCURRENCY = 2
"""Imports read and stored at once per API process (see `import_results`)."""
COMPARE_CONCURRENCY = 2
"""Comparisons computed at once per API process, whatever their keys: each holds its values (O(n))
while it runs, so this bounds what many different comparisons asked together hold."""
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


def import_format(request: Request) -> RowFormat:
    """The row format of the body, from its content type (415 for any other)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in IMPORT_FORMATS:
        accepted = " or ".join(IMPORT_FORMATS)
        raise HTTPException(415, f"content-type: {media_type or 'none'} is not accepted; use {accepted}")
    return IMPORT_FORMATS[media_type]


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
    jobs_page: JobsPage = 1,
) -> Response:
    """Per-config statistics of a metric against a baseline, the ablation steps and the plan's success level."""
    limiter = request.app.state.compare_slots
    if format is None and wants_html(request):
        return await render_dashboard(request, reads, params, jobs_page=jobs_page, limiter=limiter)
    answer = format or "json"
    query = params.query()  # equivalent spellings, one key: one cache entry and one computation
    compute = partial(_comparison, query, answer)
    body = await reads.answers.get(("compare", query, answer), ("results",), compute, limiter=limiter)
    return Response(body, media_type=MEDIA_TYPES[answer])


def _comparison(query: results.CompareQuery, answer: CompareFormat) -> bytes:
    with new_session() as session:
        comparison = results.compare_query(session=session, query=query).comparison
    if answer == "json":
        return json.dumps(comparison.to_dict(), allow_nan=False, separators=(",", ":")).encode()
    return render(comparison, answer).encode()


@router.post("/import", response_model=ImportSummary, openapi_extra={"requestBody": IMPORT_BODY})
async def import_results(
    request: Request,
    user: CurrentIdentity,  # first: who is asking is checked before the body is read
    fmt: Annotated[RowFormat, Depends(import_format)],
    source: Annotated[
        str | None, Query(max_length=results.SOURCE_MAX_LENGTH, description="where the rows came from")
    ] = None,
    custom_configs: Annotated[
        bool,
        Query(description="keep a config that is not a preset under its own name (e.g. 'random mining')"),
    ] = False,
) -> Any:
    """Store results made elsewhere (a JSON list or CSV rows); all or nothing, the same rows twice stored once."""
    # IMPORT_CONCURRENCY bodies at a time are read and stored: what imports hold in memory is bounded by
    # that many times MAX_IMPORT_BYTES (and the rows parsed from them), however many clients send at once
    async with request.app.state.import_slots:
        try:
            text = (await request.body()).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise HTTPException(422, "body: not UTF-8 text") from None
        return await run_in_threadpool(_import, text, fmt, user, source, custom_configs)


def _import(text: str, fmt: RowFormat, user: Identity, source: str | None, custom_configs: bool) -> ImportSummary:
    with new_session() as session:
        return results.import_rows(
            session=session, text=text, fmt=fmt, owner=user, source=source, custom_configs=custom_configs
        )
