"""Migrations: every revision up and down on an empty Postgres, and no drift from the models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from ired_dcd.db import alembic_config
from ired_dcd.models import Base


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _revisions(url: str) -> list[str]:
    """Revision ids from the first to head."""
    return [script.revision for script in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()][::-1]


@pytest.mark.services
def test_postgres_every_revision_up_and_down(create_database: Callable[[], str]) -> None:
    url = create_database()
    config = alembic_config(url)
    revisions = _revisions(url)
    for revision in revisions:
        command.upgrade(config, revision)
    assert _tables(url) == set(Base.metadata.tables)
    command.check(config)  # raises if the models and the migrated schema differ
    for _ in revisions:
        command.downgrade(config, "-1")
    assert _tables(url) == set()
    command.upgrade(config, "head")
    assert _tables(url) == set(Base.metadata.tables)


def test_sqlite_upgrade_check_downgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ired.db'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    assert _tables(url) == set(Base.metadata.tables)
    command.check(config)
    command.downgrade(config, "base")
    assert _tables(url) == set()
