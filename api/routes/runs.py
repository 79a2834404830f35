"""Runs: one seed's state and its learning curves."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import DB_INT_MAX, RowId, SessionDep
from api.schemas import MetricSeries, RunMetricsPublic, RunPublic
from ired_dcd.services import runs

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("/{run_id}", response_model=RunPublic)
def read_run(run_id: RowId, session: SessionDep) -> Any:
    """One run: state, progress, lease, device and final metrics."""
    return runs.get_run(session=session, run_id=run_id)


@router.get("/{run_id}/metrics", response_model=RunMetricsPublic)
def read_run_metrics(
    run_id: RowId,
    session: SessionDep,
    names: Annotated[list[str] | None, Query(description="metric names, repeated or comma-separated")] = None,
    after_step: Annotated[int | None, Query(ge=0, le=DB_INT_MAX, description="only steps after this one")] = None,
) -> Any:
    """Learning curves of a run, optionally only some metrics or only new steps."""
    wanted = [name.strip() for item in names or [] for name in item.split(",") if name.strip()]
    curves = runs.learning_curves(session=session, run_id=run_id, names=wanted, after_step=after_step)
    series = [
        MetricSeries(name=name, steps=[step for step, _ in points], values=[value for _, value in points])
        for name, points in curves.items()
    ]
    return RunMetricsPublic(run_id=run_id, series=series)
