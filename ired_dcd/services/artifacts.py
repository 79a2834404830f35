"""Artifacts (checkpoints): found by id, resolved strictly inside the artifacts folder.

No path from a request ever reaches the filesystem: a request names an artifact's id, and the
relative path stored with it is resolved under `artifacts_path`; one that would leave it is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ired_dcd.models import Artifact
from ired_dcd.services.errors import NotFound
from ired_dcd.settings import get_settings


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


def delete_files(relative_paths: Iterable[str | None]) -> None:
    """Remove these files of the artifacts folder (missing ones and paths outside it are skipped)."""
    for relative in filter(None, relative_paths):
        path = resolve(relative)
        if path is not None:
            path.unlink(missing_ok=True)
