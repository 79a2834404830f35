"""The one rule for tests that need something this machine may lack (a service, SLURM, Chromium, a tmpfs).

`unavailable(reason)` skips the test with `reason`, unless IRED_TEST_REQUIRE_SERVICES=1 (CI, `.ci/run`),
where it fails the test instead: CI installs and starts everything, so a missing part there is a defect
of the machine or of `.ci/run`, never a reason to pass. Every gate in the suite calls it; `-rs` makes
pytest print the reason of each skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ENV = "IRED_TEST_REQUIRE_SERVICES"
# read once, when conftest imports this module: lab fixtures later replace os.environ with a service
# environment without IRED_ variables (tests/conftest.py `configure_process`), and a gate evaluated
# inside a lab must still see the session's choice
_REQUIRED = os.environ.get(REQUIRE_ENV) == "1"


def required() -> bool:
    """True when a missing prerequisite must fail the run (IRED_TEST_REQUIRE_SERVICES=1)."""
    return _REQUIRED


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test (or fixture) for `reason`; fail it instead when prerequisites are required."""
    if required():
        pytest.fail(f"{reason} [{REQUIRE_ENV}=1: a missing prerequisite fails instead of skipping]", pytrace=False)
    pytest.skip(reason)
