"""Jobs: submit, list, read, cancel, retry, delete."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.deps import DB_INT_MAX, PAGE_MAX, CurrentUser, ReadsDep, RowId, SessionDep
from api.schemas import JobCreate, JobPublic, JobsDetailPublic, JobsPublic, JobSummary, JobSummaryBase
from ired_dcd.db import new_session
from ired_dcd.services import jobs
from ired_dcd.states import State

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobsView = Literal["summary", "full"]


@router.post("", status_code=201, response_model=JobPublic)
def create_job(job_in: JobCreate, session: SessionDep, user: CurrentUser) -> Any:
    """Submit a preset with overrides over a list of seeds; one run per seed is queued."""
    spec = jobs.job_spec(
        config=job_in.config,
        seeds=job_in.seeds,
        overrides=job_in.overrides,
        executor=job_in.executor,
        priority=job_in.priority,
        tags=job_in.tags,
        slurm_options=job_in.slurm,
    )
    return jobs.create_job(session=session, owner=user, spec=spec)


@router.get("", response_model=JobsPublic | JobsDetailPublic)
async def read_jobs(
    reads: ReadsDep,
    state: State | None = None,
    config: Annotated[str | None, Query(description="preset name (any alias) or config hash")] = None,
    owner: str | None = None,
    tag: str | None = None,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
    view: Annotated[
        JobsView, Query(description="summary: runs counted per state; full: every job with its config and runs")
    ] = "summary",
) -> Response:
    """List jobs, newest first, filtered by state, config, owner or tag."""
    filters = {"state": state, "config": config, "owner": owner, "tag": tag, "offset": offset, "limit": limit}
    page = await reads.answers.get(("jobs", view, *filters.values()), ("jobs",), partial(_jobs_page, filters, view))
    return Response(page, media_type="application/json")


def _jobs_page(filters: dict[str, Any], view: JobsView) -> bytes:
    with new_session() as session:
        data, count = jobs.list_jobs(session=session, with_runs=view == "full", **filters)
        if view == "full":
            detailed = JobsDetailPublic(data=[JobPublic.model_validate(job) for job in data], count=count)
            return detailed.model_dump_json().encode()
        counted = jobs.run_counts(session=session, job_ids=[job.id for job in data])
        summaries = [
            JobSummary(
                **JobSummaryBase.model_validate(job).model_dump(),
                runs=counted[job.id].states,
                steps_done=counted[job.id].steps_done,
                steps_total=counted[job.id].steps_total,
            )
            for job in data
        ]
        return JobsPublic(data=summaries, count=count).model_dump_json().encode()


@router.get("/{job_id}", response_model=JobPublic)
def read_job(job_id: RowId, session: SessionDep) -> Any:
    """One job with its runs."""
    return jobs.get_job(session=session, job_id=job_id)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: RowId, session: SessionDep, user: CurrentUser) -> Any:
    """Cancel a job (its owner or an admin): queued runs at once, running runs within seconds."""
    return jobs.cancel_job(session=session, job_id=job_id, user=user)


@router.post("/{job_id}/retry", response_model=JobPublic)
def retry_job(job_id: RowId, session: SessionDep, user: CurrentUser) -> Any:
    """Queue the job's failed and diverged runs again, from scratch (its owner or an admin)."""
    return jobs.retry_job(session=session, job_id=job_id, user=user)


@router.delete("/{job_id}", status_code=204)
def delete_job(job_id: RowId, session: SessionDep, user: CurrentUser) -> None:
    """Delete an ended job with its runs, curves and checkpoints (its owner or an admin)."""
    jobs.delete_job(session=session, job_id=job_id, user=user)
