"""Property-based runs of schemathesis against the live server and its OpenAPI document.

Every check schemathesis has runs, as its CLI's ``--checks all`` selects them: no answer may
be a 5xx; every answer must be one the document declares (status, content type, headers, body
schema); what the document says is valid must be accepted (or answered with a status that is
not a refusal of the input: 401, 403, 404, 409), and what it says is invalid must be refused
with a 4xx; an undeclared method gets 405 with ``Allow``; a token is required where the
document says so; a created object can be read, and a deleted one is gone.

For every operation, inputs drawn from the document (its examples, the coverage phase's
boundary and negative cases, and generated ones) are sent with the tokens of several roles,
each change with a fresh Idempotency-Key. A stateful run follows the links the document
declares and the ones schemathesis infers, as an owner; each declared link is also followed
by hand (create a service, a secret, a project or a peering, then read, change and delete it).
Example counts are small and there is no deadline, so the module stays within a minute or two
on a busy two-core machine (35 to 70 s with two processes, as busy as it is).

The document is built at import (pytest-django's live server starts later); the first test
checks that it is exactly what the live server serves at /api/v1/openapi.json. (Schemathesis's
lazy loader, ``from_fixture``, does not run under pytest 9.)
"""

from __future__ import annotations

import copy
import itertools
import json
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from django.db import models
from django.test import Client
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from ninja.responses import NinjaJSONEncoder
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.checks import is_check_class, load_all_checks
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.schemas import OpenApiSchema

from api.api import api
from api.idempotency import HEADER, KEY_PATTERN
from api.models import ApiToken, IdempotencyRecord
from networking.models import (
    AuditEvent,
    CertificateAuthority,
    ConnectionTest,
    Membership,
    MutualTLS,
    Notification,
    PeeringNotification,
    PeeringRequest,
    Project,
    ReferenceVariable,
    SecretRotation,
    Service,
    ServiceAlias,
    SharedSecret,
)
from tests.conftest import World, bearer

# Every check schemathesis has, as its CLI's `--checks all` selects them: the registry's
# (`max_response_time` is not one of them until a limit is given). Two run but find nothing to
# look at here, as with the CLI: missing_required_header (the document requires no header;
# the token is ours to send, see below) and object_level_authorization (it compares the
# identities of an `[auth.wfc]` users document; tests/access has a row per operation and role
# for another organization's objects).
load_all_checks()
CHECKS = [check for check in REGISTERED_CHECKS.get_all() if not is_check_class(check)]
ROLES = ("viewer", "member", "owner", "support")
# Operations whose answers without a token, and with a wrong one, were refused once already:
# ignored_auth sends those two more requests after every 2xx otherwise. Enforcement is a
# property of the operation, so once per operation is enough (schemathesis's own runner
# checks each operation once, too).
_auth_enforced: set[str] = set()
_turns = itertools.count()

# The document as served (JSON).
DOCUMENT = json.loads(json.dumps(api.get_openapi_schema(), cls=NinjaJSONEncoder))


def load_schema() -> OpenApiSchema:
    """The document as schemathesis reads it: each run its own copy, since schemathesis keeps
    what it learns (the links it infers, values from the answers it got) on the schema, and a
    stateful run must not draw from what the other tests happened to leave there."""
    loaded = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
    # The caller's own token on each request, not one drawn from the document's security
    # schemes (a drawn one is refused, and putting the caller's in its place would send a
    # request the case did not mean: a "negative" case that is not).
    loaded.config.generation.update(with_security_parameters=False)
    # All of schemathesis's phases, as its CLI runs them.
    loaded.config.phases.update(phases=["examples", "coverage", "fuzzing", "stateful"])
    return loaded


schema = load_schema()


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
    assert served == DOCUMENT


def test_every_check_schemathesis_has_runs() -> None:
    """`--checks all`, and the checks this module is about among them."""
    assert {check.__name__ for check in CHECKS} >= {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
        "use_after_free",
        "ensure_resource_availability",
        "ignored_auth",
        "object_level_authorization",
    }


def operation_of(case: Any) -> str:
    return str(case.operation.definition.raw.get("operationId", ""))


def negative_at(case: Any, location: ParameterLocation) -> bool:
    """Whether the case drew that part to be refused: then it is sent as drawn."""
    return case.meta is not None and case.meta.is_negative_at(location)


def checks_for(case: Any) -> list[Any]:
    if case.operation.label in _auth_enforced:
        return [check for check in CHECKS if check.__name__ != "ignored_auth"]
    return CHECKS


def checked(case: Any, response: Any) -> None:
    """After a validation that passed: a 2xx has had its operation's authentication probed."""
    if 200 <= response.status_code < 300:
        _auth_enforced.add(case.operation.label)


def real_ids(case: Any, world: World) -> None:
    """Point half the generated paths at the world's objects, so bodies and queries are
    exercised past the 404 an unknown ID gets (the other half keep their generated IDs)."""
    parameters = case.path_parameters or {}
    if negative_at(case, ParameterLocation.PATH):
        return
    if "project_id" in parameters and zlib.crc32(repr(case.body).encode()) % 2 == 0:
        parameters["project_id"] = world.project.uid
        for name, value in (
            ("service_id", world.api.pk),
            ("secret_id", world.secret.pk),
            ("peering_id", world.peering.pk),
        ):
            if name in parameters:
                parameters[name] = value


def fresh_key(case: Any) -> None:
    """A new Idempotency-Key for each request, as a client sends them: a key drawn twice would
    be a replay of another request, refused as a reuse. A key the document refuses stays, for
    the server to refuse it."""
    headers = case.headers or {}
    if HEADER in headers and KEY_PATTERN.fullmatch(str(headers[HEADER])):
        headers[HEADER] = str(uuid.uuid4())


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
    fresh_key(case)
    # Each case as one of the roles, in turn: every role meets every operation's inputs
    # without each case being sent four times.
    role = ROLES[next(_turns) % len(ROLES)]
    response = case.call_and_validate(
        base_url=live_api,
        session=session,
        headers=bearer(api_tokens[role]),
        checks=checks_for(case),
    )
    checked(case, response)


def resolve(expression: str, path: dict[str, str], answer: Any) -> Any:
    """An OpenAPI runtime expression, of the two kinds the document's links use."""
    if expression.startswith("$request.path."):
        return path[expression.removeprefix("$request.path.")]
    assert expression.startswith("$response.body#/"), expression
    found = answer
    for part in expression.removeprefix("$response.body#/").split("/"):
        found = found[int(part)] if isinstance(found, list) else found[part]
    return found


def test_the_documents_links_lead_where_they_say(
    world: World, api_tokens: dict[str, str | None], client: Client
) -> None:
    """Each link the document declares, followed by hand from what its operation made: the
    ID lands where the link says, and the operation it names answers 2xx (deletes last)."""
    other = Project.objects.create(organization=world.globex, name="Warehouse")
    made = {  # what each create is sent
        "create_service": {"name": "Linked", "ports": [3000]},
        "create_secret": {"name": "LINKED_SECRET"},
        "create_project": {"name": "Linked"},
        "request_peering": {"target": other.uid, "justification": "Reads the warehouse."},
    }
    # What a link's target is sent besides what the link carries.
    given = {
        "update_service": ("", {"ports": [3001]}),
        "rename_project": ("", {"name": "Linked again"}),
        "delete_project": ("?confirm_name=Linked%20again", None),
    }
    operations = {
        operation["operationId"]: (method.upper(), path, operation)
        for path, methods in DOCUMENT["paths"].items()
        for method, operation in methods.items()
    }
    followed = set()
    for source, (method, path, operation) in operations.items():
        for status, answer_spec in operation["responses"].items():
            links = answer_spec.get("links", {})
            if not links:
                continue
            path_parameters = {"project_id": world.project.uid} if "{project_id}" in path else {}
            response = client.generic(
                method,
                path.format(**path_parameters),
                json.dumps(made[source]),
                content_type="application/json",
                headers=bearer(api_tokens["owner"]),
            )
            assert response.status_code == int(status), response.content
            for name, link in sorted(
                links.items(), key=lambda item: operations[item[1]["operationId"]][0] == "DELETE"
            ):
                target_method, target_path, _ = operations[link["operationId"]]
                parameters = {
                    key: resolve(expression, path_parameters, response.json())
                    for key, expression in link["parameters"].items()
                }
                query, body = given.get(link["operationId"], ("", None))
                answer = client.generic(
                    target_method,
                    target_path.format(**parameters) + query,
                    json.dumps(body) if body is not None else "",
                    content_type="application/json",
                    headers=bearer(api_tokens["owner"]),
                )
                assert 200 <= answer.status_code < 300, (name, answer.content)
                followed.add(name)
    # Create, read, change and delete, for each kind of object the document links.
    assert followed >= {
        "GetService",
        "UpdateService",
        "DeleteService",
        "GetSecret",
        "DeleteSecret",
        "GetProject",
        "RenameProject",
        "DeleteProject",
        "CancelPeering",
    }


# Everything an API call can change, parents first.
CHANGEABLE: list[type[models.Model]] = [
    Membership,
    ApiToken,
    Project,
    Service,
    Service.accepts_calls_from.through,
    ServiceAlias,
    ReferenceVariable,
    ConnectionTest,
    SharedSecret,
    SharedSecret.services.through,
    SecretRotation,
    MutualTLS,
    CertificateAuthority,
    PeeringRequest,
    PeeringNotification,
    Notification,
    AuditEvent,
    IdempotencyRecord,
]


def snapshot() -> Callable[[], None]:
    """The rows an API call can change, and a function that puts them back as they were: new
    ones deleted, changed ones changed back, deleted ones made again (with their IDs)."""
    kept = {
        model: {row["id"]: row for row in model._default_manager.values()} for model in CHANGEABLE
    }

    def restore() -> None:
        for model in reversed(CHANGEABLE):
            model._default_manager.exclude(pk__in=list(kept[model])).delete()
        for model in CHANGEABLE:
            now = {row["id"]: row for row in model._default_manager.values()}
            model._default_manager.bulk_create(
                [model(**row) for pk, row in kept[model].items() if pk not in now]
            )
            for pk, row in kept[model].items():
                if pk in now and now[pk] != row:
                    model._default_manager.filter(pk=pk).update(**row)

    return restore


def test_the_stateful_links_create_read_and_delete(
    live_api: str, api_tokens: dict[str, str | None], world: World, session: requests.Session
) -> None:
    """Create → read → change → delete, following the links the document declares and those
    schemathesis infers (projects, members, tokens, references, old hostnames), as an owner.

    Scenarios may change anything the owner may, their own token included (revoking it, or
    leaving the organization, makes the rest of that scenario 401): each one starts from the
    same world, since Hypothesis replays a scenario and expects the same answers again."""
    token = api_tokens["owner"]
    uid = world.project.uid
    # Each step: the one whose answer it followed a link from (if any), and itself.
    steps: list[tuple[tuple[str, int | None] | None, tuple[str, int]]] = []
    restore = snapshot()

    class Machine(load_schema().as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            # A drawn project ID is no project: the world's instead, so the chains start
            # somewhere (an ID a link carried, a project made in this scenario, stays).
            parameters = case.path_parameters or {}
            if (
                "project_id" in parameters
                and not negative_at(case, ParameterLocation.PATH)
                and not Project.objects.filter(uid=parameters["project_id"]).exists()
            ):
                parameters["project_id"] = uid
            # A drawn name is often taken already (409): give creates a new one (the other
            # fields stay drawn), so the chains past them are walked too.
            operation_id = case.operation.definition.raw.get("operationId")
            number = next(_turns)
            if negative_at(case, ParameterLocation.BODY):
                pass
            elif operation_id == "create_service" and isinstance(case.body, dict):
                case.body.update(name=f"svc-{number}", kind="web", ports=[3000 + number % 1000])
            elif operation_id == "create_secret" and isinstance(case.body, dict):
                case.body.update(name=f"SECRET_{number}", services=[], value=None)
            fresh_key(case)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": live_api, "session": session, "headers": bearer(token)}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)  # the record use_after_free and others read
            parent = self.recorder.find_parent(case_id=case.id)
            came_from = None
            if parent is not None:
                answer = self.recorder.find_response(case_id=parent.id)
                came_from = (operation_of(parent), answer.status_code if answer else None)
            steps.append((came_from, (operation_of(case), response.status_code)))

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(
                response,
                checks=checks_for(case),
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )
            checked(case, response)

        def teardown(self) -> None:
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
    # Links were followed (the document's and the ones schemathesis infers): steps were made
    # with what an answer before them gave, and got 2xx answers. (Which ones depends on which
    # drawn IDs happen to exist in this process's database: each of the document's own links
    # is followed in test_the_documents_links_lead_where_they_say.)
    linked = {step for came_from, step in steps if came_from and 200 <= step[1] < 300}
    assert len(linked) >= 5, linked
    assert any(name.startswith("get_") for name, _ in linked), linked
