"""Faults of the services themselves, on a Postgres and a Redis of this module's own: kill -9 of a worker
mid-run, a Redis FLUSHALL with jobs queued, Postgres stopped and started during a run. Each must lose
nothing (tests/utils/faults.py; bench/faults.py repeats them in a loop)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.conftest import service_unreachable
from tests.utils import faults

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[faults.PrivateLab]:
    with ExitStack() as stack:
        try:
            private = stack.enter_context(faults.private_lab(tmp_path_factory.mktemp("faults")))
        except (OSError, subprocess.CalledProcessError, AssertionError) as exc:  # no initdb or redis-server here
            service_unreachable("a private Postgres and Redis", "/usr/lib/postgresql/*/bin, redis-server", exc)
        yield private


@pytest.mark.parametrize("fault", list(faults.SCENARIOS))
def test_fault_loses_nothing(private: faults.PrivateLab, fault: str) -> None:
    outcome = faults.SCENARIOS[fault](private)
    assert outcome.lost == [], outcome
