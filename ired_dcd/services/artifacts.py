"""Artifacts (checkpoints): found by id, resolved strictly inside the artifacts folder.

No path from a request ever reaches the filesystem: a request names an artifact's id, and the
relative path stored with it is resolved under `artifacts_path`; one that would leave it is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ired_dcd.models import Artifact
from ired_dcd.services.errors import NotFound
from ired_dcd.settings import get_settings


def job_folder(job_id: int) -> str:
    """Where every file of a job lives, relative to the artifacts folder (checkpoints, SLURM task files)."""
    return f"job-{job_id}"


def resolve(relative: str) -> Path | None:
    """`relative` under the artifacts folder, or None when it would point outside of it."""
    root = get_settings().artifacts_path
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) else None


def list_artifacts(*, session: Session, job_id: int | None = None) -> list[Artifact]:
    query = select(Artifact).order_by(Artifact.id)
    if job_id is not None:
        query = query.where(Artifact.job_id == job_id)
    return list(session.scalars(query))


def artifact_file(*, session: Session, artifact_id: int) -> tuple[Artifact, Path]:
    """The artifact and its file; NotFound for an unknown id or a file that is gone."""
    artifact = session.get(Artifact, artifact_id)
    if artifact is None:
        raise NotFound(f"artifact {artifact_id} not found")
    path = resolve(artifact.path)
    if path is None or not path.is_file():
        raise NotFound(f"artifact {artifact_id}: its file is no longer on this server")
    return artifact, path


def delete_job_files(job_id: int) -> None:
    """Remove the job's folder of the artifacts folder with everything in it (gone already: nothing to do)."""
    folder = resolve(job_folder(job_id))
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
