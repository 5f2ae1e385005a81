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
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from django.db.models import Q
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
from api.models import IdempotencyRecord
from networking.models import PeeringRequest, Service, SharedSecret
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
# Generated examples only (up to max_examples per operation, a few hundred in all): the
# coverage phase's thousands of boundary cases would take minutes; the access matrix and
# tests/api/test_api.py's bad-input cases cover those edges by hand.
schema.config.phases.update(phases=["examples", "fuzzing", "stateful"])


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
    max_examples=10,
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


def snapshot(world: World) -> Callable[[], None]:
    """What the scenarios may change in the world's tenant, and a function that puts it back."""
    project = world.project
    kept: list[tuple[Any, Any, list[dict[str, Any]]]] = [
        (model, rows, [dict(row) for row in rows.values()])
        for model, rows in (
            (Service, Service.objects.filter(project=project)),
            (SharedSecret, SharedSecret.objects.filter(project=project)),
            (
                SharedSecret.services.through,
                SharedSecret.services.through.objects.filter(sharedsecret__project=project),
            ),
            (
                PeeringRequest,
                PeeringRequest.objects.filter(
                    Q(requester_project__organization__in=[world.acme, world.globex])
                ),
            ),
        )
    ]

    def restore() -> None:
        IdempotencyRecord.objects.all().delete()  # a replayed key would be answered from here
        for _, rows, values in reversed(kept):
            rows.exclude(pk__in=[row["id"] for row in values]).delete()
        for model, _, values in kept:
            for row in values:
                updated = model.objects.filter(pk=row["id"]).update(
                    **{key: value for key, value in row.items() if key != "id"}
                )
                if not updated:
                    model.objects.create(**row)

    return restore


# The scenarios walk what ``snapshot`` puts back between them (services, secrets, peerings):
# the operations on the organization (members, tokens: revoking the run's own token), on
# projects as a whole, and on references and old hostnames have their own tests
# (tests/api/test_api_operations.py) and stay out, or a scenario would change what the next
# one starts from, and Hypothesis would see the same steps answered differently; so do their
# reads, which would thin the walks out past the create → read → delete chains.
STATEFUL = schema.exclude(tag="organizations").exclude(
    operation_id=[
        "create_project",
        "rename_project",
        "delete_project",
        "list_project_references",
        "check_service_names",
        "list_references",
        "add_references",
        "remove_reference",
        "list_aliases",
        "extend_alias",
        "end_alias",
        "end_rotation_grace",
    ]
)


def test_the_stateful_links_create_read_and_delete(
    live_api: str, api_tokens: dict[str, str | None], world: World
) -> None:
    """Create → read → change → delete, following the links the document declares."""
    token = api_tokens["owner"]
    uid = world.project.uid
    calls: list[tuple[str, int]] = []
    restore = snapshot(world)

    class Machine(STATEFUL.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            # Creates start from the world's project; the links carry the new object's ID on.
            if case.path_parameters and "project_id" in case.path_parameters:
                case.path_parameters["project_id"] = uid
            # A generated name rarely passes the naming rule: give creates a valid, unique one
            # (the other fields stay generated), so the chains past them are walked too.
            operation_id = case.operation.definition.raw.get("operationId")
            number = next(_turns)
            if operation_id == "create_service" and isinstance(case.body, dict):
                case.body.update(name=f"svc-{number}", ports=[3000 + number % 1000])
            elif operation_id == "create_secret" and isinstance(case.body, dict):
                case.body.update(name=f"SECRET_{number}", services=[], value=None)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": live_api, "headers": bearer(token)}

        def after_call(self, response: Any, case: Any) -> None:
            calls.append(
                (case.operation.definition.raw.get("operationId", ""), response.status_code)
            )

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

        def teardown(self) -> None:
            # Every scenario starts from the same world: Hypothesis replays scenarios, and a
            # server remembering the last one would answer the same steps differently.
            restore()

    Machine.run(
        settings=hypothesis_settings(
            max_examples=20,
            stateful_step_count=8,
            deadline=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
    # The links were followed: something created was read, and something created was deleted.
    assert ("create_service", 201) in calls or ("create_secret", 201) in calls
    assert {("get_service", 200), ("get_secret", 200)} & set(calls)
    assert {("delete_service", 204), ("delete_secret", 204)} & set(calls)
