"""Fixtures for tests against the real services.

- `postgres_url`: a Postgres database of its own for this test session (created through the
  `postgres` database, migrated, dropped at the end), so parallel test runs never meet.
- `lab`: per test module, the lab-server mode on that database and a private Redis queue: the API
  served by uvicorn on a free port (its client signed in as the user `local`), and a factory for real
  `celery worker` subprocesses. `lab_server` builds one on other services (tests of fair use and faults).

Postgres and Redis come from $IRED_TEST_POSTGRES_URL / $IRED_TEST_REDIS_URL (default: this machine).
Tests that need them are marked `services` and skipped when they are unreachable, unless
IRED_TEST_REQUIRE_SERVICES=1 (CI), where an unreachable service fails the run instead
(`tests.utils.gates.unavailable`, the rule of every gate in the suite).
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import psycopg
import pytest
import redis
import uvicorn
from sqlalchemy import make_url
from sqlalchemy.orm import Session

from tests.utils.gates import unavailable
from tests.utils.services import (
    NO_KEEPALIVE,
    SERVICE_ENV_KEYS,
    ServiceProcess,
    free_port,
    wait_for,
    worker_process,
)

POSTGRES_ADMIN_URL = os.environ.get("IRED_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("IRED_TEST_REDIS_URL", "redis://127.0.0.1:6379")

# settings for tests: short leases so that takeovers and give-ups happen in seconds; one torch thread
# per process (tiny models on a busy 2-core machine run several times faster than with two). Modules
# share the session's database but not their queues: tasks go to the broker at once and no reconciler
# moves one module's tasks into another's queue (tests/worker/test_fair_use.py and
# test_service_faults.py use databases of their own with the real fair-use and reconciler settings).
# Quotas keep their defaults but for the number of queued jobs (tests/api/test_quotas.py sets its own).
TEST_SETTINGS = {
    "IRED_LEASE_SECONDS": "3",
    "IRED_HEARTBEAT_SECONDS": "0.5",
    "IRED_MAX_ATTEMPTS": "2",
    "IRED_DEVICE": "cpu",
    "OMP_NUM_THREADS": "1",
    "IRED_USER_TASK_LIMIT": "100000",
    "IRED_DISPATCH_BACKLOG": "100000",
    "IRED_RECONCILE_SECONDS": "0",
    "IRED_QUOTA_QUEUED_JOBS": "100000",  # modules leave many jobs queued (no worker) under one user
}


def service_unreachable(what: str, url: str, exc: Exception) -> NoReturn:
    unavailable(f"{what} unreachable at {url} ({type(exc).__name__}: {exc})")


def service_env(**values: str) -> dict[str, str]:
    """This process's environment without any service or IRED_ setting, plus `values`."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ENV_KEYS and not k.startswith("IRED_")}
    return {**env, **values}


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[psycopg.Connection[Any]]:
    try:
        connection = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        service_unreachable("Postgres", POSTGRES_ADMIN_URL, exc)
    with connection:
        yield connection


@pytest.fixture(scope="session")
def create_database(postgres_admin: psycopg.Connection[Any]) -> Iterator[Callable[[], str]]:
    """Make empty Postgres databases named ired_test_<random>; all are dropped at the end."""
    names: list[str] = []

    def create() -> str:
        name = f"ired_test_{uuid.uuid4().hex[:12]}"
        postgres_admin.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
        return url.render_as_string(hide_password=False)

    yield create
    for name in names:
        postgres_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url(create_database: Callable[[], str]) -> str:
    """The session's migrated Postgres database."""
    from ired_dcd.db import migrate

    url = create_database()
    migrate(url)
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database picked at random (the queue name, unique per module, is what isolates)."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        service_unreachable("Redis", REDIS_URL, exc)
    return f"{REDIS_URL.rstrip('/')}/{random.randint(1, 15)}"


def configure_process(env: dict[str, str]) -> None:
    """Make this process use `env`: settings and database engine are rebuilt from it."""
    from ired_dcd import db
    from ired_dcd.services.celery_app import app
    from ired_dcd.settings import get_settings

    os.environ.clear()
    os.environ.update(env)
    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()
    for cached in (get_settings, db.get_engine, db._session_factory):
        cached.cache_clear()
    app.close()
    app.amqp._producer_pool = None  # else Celery keeps publishing to the previous broker


@dataclass
class Lab:
    """Lab-server mode for one test module: its env, the API over HTTP (signed in), and its workers."""

    env: dict[str, str]
    tmp: Path
    http: httpx.Client
    base_url: str
    token: str
    workers: list[ServiceProcess] = field(default_factory=list)

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start_worker(self, name: str, *, address_space: int | None = None, **env_changes: str) -> ServiceProcess:
        """A real celery worker subprocess on this module's queue (env changes apply to it only);
        `address_space` limits its virtual memory in bytes (`worker_process`)."""
        node = f"{name}-{uuid.uuid4().hex[:6]}"
        worker = worker_process(
            {**self.env, **env_changes}, self.tmp / f"{node}.log", node, address_space=address_space
        )
        self.workers.append(worker)
        return worker

    def session(self) -> Session:
        from ired_dcd.db import new_session

        return new_session()

    def job(self, job_id: int) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()


@contextmanager
def lab_server(*, database_url: str, redis_url: str, tmp: Path, **settings: str) -> Iterator[Lab]:
    """The API in this process on `database_url` with a Redis queue of its own; `settings` (IRED_…)
    override TEST_SETTINGS. The HTTP client is signed in as `local` (the embedded default's user name)."""
    from api.main import app
    from ired_dcd.db import new_session
    from ired_dcd.services.celery_app import app as celery_app
    from ired_dcd.services.celery_app import celery_config
    from ired_dcd.services.users import get_or_create_user, issue_token
    from ired_dcd.settings import get_settings

    queue = f"ired-test-{uuid.uuid4().hex[:10]}"
    saved = dict(os.environ)
    env = service_env(
        DATABASE_URL=database_url,
        BROKER_URL=redis_url,
        IRED_QUEUE=queue,
        IRED_DATA_DIR=str(tmp / "data"),
        **{**TEST_SETTINGS, **settings},
    )
    configure_process(env)
    celery_app.conf.update(celery_config(get_settings()))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="the API server")
    with new_session() as session:
        token = issue_token(session=session, user=get_or_create_user(session=session, name="local"))
    base_url = f"http://127.0.0.1:{port}"
    http = httpx.Client(
        base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}, limits=NO_KEEPALIVE
    )
    lab = Lab(env=env, tmp=tmp, http=http, base_url=base_url, token=token)
    try:
        yield lab
    finally:
        for worker in lab.workers:
            worker.kill()
        server.should_exit = True
        thread.join(120)  # to the end: a server still stopping would reset the next module's app state
        assert not thread.is_alive(), "the API server did not stop within 120 s"
        lab.http.close()
        broker = redis.Redis.from_url(redis_url)
        leftover = broker.keys(f"{queue}*")
        if leftover:
            broker.delete(*leftover)
        configure_process(saved)


@pytest.fixture(scope="module")
def lab(postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with lab_server(database_url=postgres_url, redis_url=redis_url, tmp=tmp_path_factory.mktemp("lab")) as lab:
        yield lab
