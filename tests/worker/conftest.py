"""Fixtures of the tests against the single-node SLURM (.ci/slurm-setup.sh)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Lab
from tests.utils.slurm import cancel_leftovers, require_cluster, slurm_lab_server


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The local SLURM runs jobs; a gate (`tests.utils.gates.unavailable`) otherwise."""
    require_cluster()


@pytest.fixture
def slurm_jobs() -> Iterator[list[str]]:
    """SLURM job ids to scancel after the test if they still wait or run (a failed test)."""
    ids: list[str] = []
    yield ids
    cancel_leftovers(ids)


@pytest.fixture(scope="module")
def slurm_lab(
    slurm_cluster: None,
    postgres_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Lab]:
    """The lab server with SLURM settings and a running collector (what `ired-dcd serve` starts), plus
    the server settings in the test module's SLURM_SERVER_SETTINGS (IRED_… → value), if it has any."""
    settings = getattr(request.module, "SLURM_SERVER_SETTINGS", {})
    tmp = tmp_path_factory.mktemp("slurm")
    with slurm_lab_server(database_url=postgres_url, redis_url=redis_url, tmp=tmp, **settings) as lab:
        yield lab
