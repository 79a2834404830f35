"""Database engine, sessions and migrations (one engine per process, built from the settings)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ired_dcd.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
CONNECT_TIMEOUT_SECONDS = 10
BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS = 0.5, 30.0

log = logging.getLogger(__name__)
T = TypeVar("T")


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys and a busy timeout (API + worker share it)."""
    if not url.startswith("sqlite"):  # a server that is down must fail a connection fast, not hang it
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.sqlalchemy_url)


@lru_cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


def new_session() -> Session:
    return _session_factory()()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    with new_session() as session, session.begin():
        yield session


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` means the database could not be reached (down, restarting, connection lost)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def backoff_delays() -> Iterator[float]:
    """0.5 s, 1 s, 2 s, … doubling up to 30 s, for ever."""
    delay = BACKOFF_FIRST_SECONDS
    while True:
        yield delay
        delay = min(2 * delay, BACKOFF_MAX_SECONDS)


def retry_db(action: Callable[[], T], *, what: str, seconds: float | None = None) -> T:
    """`action()`, tried again with back-off while the database is unreachable, for up to `seconds`
    (default: the setting `db_retry_seconds`); any other error, or the last one, is raised."""
    deadline = time.monotonic() + (get_settings().db_retry_seconds if seconds is None else seconds)
    delays = backoff_delays()
    while True:
        try:
            return action()
        except DBAPIError as exc:
            delay = next(delays)
            if not unreachable(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable while %s (%s); again in %.1f s", what, type(exc.orig).__name__, delay)
            time.sleep(delay)


def alembic_config(url: str | None = None) -> Config:
    """Alembic's config for `url` (default: the settings' database), usable without alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str | None = None) -> None:
    """Bring the database to the latest schema."""
    if url is None and get_settings().database_url is None:
        get_settings().data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
