"""Schemathesis against the app's own OpenAPI schema: no generated request, valid or not, gets a 5xx.

The app is called in-process (ASGI) on the real services, with a database of this module's own
(generated requests cancel, retry and delete whatever ids they make up), signed in as an admin so that
every operation is reached.
The example count per operation is bounded (`MAX_EXAMPLES`) to keep CI short.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from api.main import app
from ired_dcd.services.users import get_or_create_user
from tests.conftest import Lab, lab_server

pytestmark = pytest.mark.services

MAX_EXAMPLES = 15


@pytest.fixture(scope="module")
def fuzzed_lab(create_database: Callable[[], str], redis_url: str, tmp_path_factory: Any) -> Iterator[Lab]:
    from ired_dcd.db import migrate

    url = create_database()
    migrate(url)
    with lab_server(database_url=url, redis_url=redis_url, tmp=tmp_path_factory.mktemp("fuzz")) as lab:
        with lab.session() as session:
            get_or_create_user(session=session, name="local").is_admin = True
            session.commit()
        yield lab


schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # the schema as the app generates it


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error(case: schemathesis.Case, fuzzed_lab: Lab) -> None:
    case.call_and_validate(headers=fuzzed_lab.auth_headers, checks=[not_a_server_error])
