"""Artifacts: a job's files (checkpoints), listed and downloaded by id; no request names a path."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from api.deps import DB_INT_MAX, RowId, SessionDep
from api.schemas import ArtifactPublic
from ired_dcd.services import artifacts

router = APIRouter(prefix="/artifacts", tags=["artifacts"])


@router.get("", response_model=list[ArtifactPublic])
def read_artifacts(
    session: SessionDep, job_id: Annotated[int | None, Query(ge=1, le=DB_INT_MAX, description="only this job's")] = None
) -> Any:
    """The artifacts of every job, or of one job."""
    return artifacts.list_artifacts(session=session, job_id=job_id)


@router.get(
    "/{artifact_id}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the file"}},
)
def read_artifact(artifact_id: RowId, session: SessionDep) -> FileResponse:
    """Download one artifact by its id."""
    artifact, path = artifacts.artifact_file(session=session, artifact_id=artifact_id)
    return FileResponse(path, media_type="application/octet-stream", filename=f"job-{artifact.job_id}-{path.name}")
