"""Faults of the services themselves, on a Postgres and a Redis of this module's own: kill -9 of a worker
mid-run, a Redis FLUSHALL with jobs queued, Postgres stopped and started during a run. Each must lose
nothing (tests/utils/faults.py; bench/faults.py repeats them in a loop)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.utils import faults
from tests.utils.gates import unavailable
from tests.utils.services import private_services_problem

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[faults.PrivateLab]:
    """The lab on services of its own. Only missing binaries are a gate: a lab that fails to start is an error."""
    problem = private_services_problem()
    if problem:
        unavailable(problem)
    with faults.private_lab(tmp_path_factory.mktemp("faults")) as private:
        yield private


@pytest.mark.parametrize("fault", list(faults.SCENARIOS))
def test_fault_loses_nothing(private: faults.PrivateLab, fault: str) -> None:
    outcome = faults.SCENARIOS[fault](private)
    assert outcome.lost == [], outcome
