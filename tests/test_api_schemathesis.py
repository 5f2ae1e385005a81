"""Property-based runs of schemathesis against the live server and its OpenAPI document.

For every operation, inputs drawn from the document are sent with the tokens of several roles:
no answer may be a 5xx, and every answer must be one the document declares (status, content
type, headers and body schema). A stateful run follows the document's links (create a service
or a secret, then read, change and delete it). Example counts are small and there is no
deadline, so the run stays within a minute or two on a busy two-core machine.

The document is built at import (pytest-django's live server starts later); the first test
checks that it is exactly what the live server serves at /api/v1/openapi.json. (Schemathesis's
lazy loader, ``from_fixture``, does not run under pytest 9.)
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.api import api
from tests.conftest import World, bearer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ROLES = ("viewer", "member", "owner", "support")
_turns = itertools.count()


schema = schemathesis.openapi.from_dict(api.get_openapi_schema())


@pytest.fixture
def live_api(world: World, live_server: Any, settings: Any) -> str:
    settings.API_THROTTLE_PER_MINUTE = 1_000_000  # the run is one caller sending a lot at once
    return str(live_server.url)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """One keep-alive connection for the run: a new one per call costs more than the call."""
    with requests.Session() as shared:
        yield shared


def test_the_document_under_test_is_the_one_served(live_api: str) -> None:
    served = httpx.get(f"{live_api}/api/v1/openapi.json", timeout=30).json()
    assert served == schema.raw_schema


def real_ids(case: Any, world: World) -> None:
    """Point half the generated paths at the world's objects, so bodies and queries are
    exercised past the 404 an unknown ID gets (the other half keep their generated IDs)."""
    parameters = case.path_parameters or {}
    if "project_id" in parameters and zlib.crc32(repr(case.body).encode()) % 2 == 0:
        parameters["project_id"] = world.project.uid
        for name, value in (
            ("service_id", world.api.pk),
            ("secret_id", world.secret.pk),
            ("peering_id", world.peering.pk),
        ):
            if name in parameters:
                parameters[name] = value


@schema.parametrize()
@hypothesis_settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_matches_the_document(
    case: Any,
    world: World,
    api_tokens: dict[str, str | None],
    live_api: str,
    session: requests.Session,
) -> None:
    real_ids(case, world)
    # Each case as one of the roles, in turn: every role meets every operation's inputs
    # without each case being sent four times.
    role = ROLES[next(_turns) % len(ROLES)]
    case.call_and_validate(
        base_url=live_api, session=session, headers=bearer(api_tokens[role]), checks=CHECKS
    )


def test_the_stateful_links_create_read_and_delete(
    live_api: str, api_tokens: dict[str, str | None], world: World
) -> None:
    """Create → read → change → delete, following the links the document declares."""
    token = api_tokens["owner"]
    uid = world.project.uid

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            # Creates start from the world's project; the links carry the new object's ID on.
            if case.path_parameters and "project_id" in case.path_parameters:
                case.path_parameters["project_id"] = uid

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": live_api, "headers": bearer(token)}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    Machine.run(
        settings=hypothesis_settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
