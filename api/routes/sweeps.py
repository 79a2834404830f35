"""Sweeps: submit a grid over settings as one job per point, follow it with its comparison, cancel it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.deps import DB_INT_MAX, PAGE_MAX, CurrentUser, RowId, SessionDep
from api.pages import sweep_page, wants_html
from api.schemas import SweepCreate, SweepPoint, SweepPublic, SweepsPublic, SweepSummary
from ired_core.verdict import AUTO_BASELINE
from ired_dcd.services import sweeps

router = APIRouter(prefix="/sweeps", tags=["sweeps"])


@router.post("", status_code=201, response_model=SweepPublic)
def create_sweep(sweep_in: SweepCreate, session: SessionDep, user: CurrentUser) -> Any:
    """Submit one job per grid point, each over every seed; the whole grid is checked before anything is stored."""
    sweep = sweeps.create_sweep(
        session=session,
        owner=user,
        config=sweep_in.config,
        grid=sweep_in.grid,
        seeds=sweep_in.seeds,
        overrides=sweep_in.overrides,
        executor=sweep_in.executor,
        priority=sweep_in.priority,
        tags=sweep_in.tags,
        slurm_options=sweep_in.slurm,
    )
    return _public(sweeps.sweep_status(session=session, sweep_id=sweep.id))


@router.get("", response_model=SweepsPublic)
def read_sweeps(
    session: SessionDep,
    owner: str | None = None,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
) -> Any:
    """List sweeps, newest first, each with its progress (runs per state, steps); filtered by owner."""
    page, count = sweeps.list_sweeps(session=session, owner=owner, offset=offset, limit=limit)
    return SweepsPublic(data=[SweepSummary(**_summary(summary)) for summary in page], count=count)


@router.get("/{sweep_id}", response_model=SweepPublic, responses={200: {"content": {"text/html": {}}}})
def read_sweep(
    request: Request,
    sweep_id: RowId,
    session: SessionDep,
    baseline: Annotated[str, Query(description="as for GET /results/compare, or one of the sweep's settings")] = (
        AUTO_BASELINE
    ),
    metric: Annotated[str, Query(description="metric to compare, lower is better")] = "val_mse",
) -> Any:
    """A sweep's progress (runs per state), its points and their comparison, one row per setting (a browser
    gets the page: points sorted by mean, the metric against each swept field)."""
    status = sweeps.sweep_status(session=session, sweep_id=sweep_id, baseline=baseline, metric=metric)
    if wants_html(request):
        return sweep_page(request, status)
    return _public(status)


@router.post("/{sweep_id}/cancel", response_model=SweepPublic)
def cancel_sweep(sweep_id: RowId, session: SessionDep, user: CurrentUser) -> Any:
    """Cancel every job of the sweep that has not ended (its owner or an admin)."""
    sweeps.cancel_sweep(session=session, sweep_id=sweep_id, user=user)
    return _public(sweeps.sweep_status(session=session, sweep_id=sweep_id))


def _public(status: sweeps.SweepStatus) -> SweepPublic:
    return SweepPublic(
        **_summary(status),
        points=[SweepPoint.model_validate(point) for point in status.points],
        comparison=status.comparison.to_dict(),
    )


def _summary(summary: sweeps.SweepSummary) -> dict[str, Any]:
    sweep = summary.sweep
    return {
        "id": sweep.id,
        "config": sweep.preset,
        "overrides": sweep.overrides,
        "grid": sweep.grid,
        "seeds": sweep.seeds,
        "owner": sweep.owner.name,
        "tag": sweeps.sweep_tag(sweep.id),
        "created_at": sweep.created_at,
        "state": summary.state,
        "runs": summary.progress.states,
        "steps_done": summary.progress.steps_done,
        "steps_total": summary.progress.steps_total,
    }
