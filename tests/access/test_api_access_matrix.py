"""Every API operation × every role's token, on the caller's own tenant and another's.

The expected status of each cell lives in ``MATRIX``, keyed by the operation's ID in the
OpenAPI document. An operation without a row fails ``test_every_operation_has_a_row``, so a new
endpoint cannot ship without deciding who may call it. Each call sends a valid body, so what
decides the answer is who asks, never the input.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from api.api import api
from api.models import ApiToken
from networking.models import (
    ConnectionTest,
    Membership,
    Organization,
    Project,
    ReferenceVariable,
    Service,
    ServiceAlias,
)
from tests.access.test_access_matrix import tenant_state
from tests.conftest import ROLES, World, bearer, issue_token, make_service

# operation ID: expected status for anonymous, outsider, support, viewer, member, owner.
MATRIX: dict[str, str] = {
    "me": "401 200 200 200 200 200",
    "list_projects": "401 200 200 200 200 200",
    "get_project": "401 404 404 200 200 200",
    "get_sync_status": "401 404 404 200 200 200",
    "retry_sync": "401 404 404 403 202 202",
    "list_services": "401 404 404 200 200 200",
    "create_service": "401 404 404 403 201 201",
    "get_service": "401 404 404 200 200 200",
    "update_service": "401 404 404 403 200 200",
    "delete_service": "401 404 404 403 204 204",
    "reveal_service_credentials": "401 404 404 403 200 200",
    "start_connection_test": "401 404 404 403 202 202",
    "get_connection_test": "401 404 404 200 200 200",
    "list_secrets": "401 404 404 200 200 200",
    "create_secret": "401 404 404 403 403 201",
    "get_secret": "401 404 404 200 200 200",
    "update_secret": "401 404 404 403 403 200",
    "delete_secret": "401 404 404 403 403 204",
    "reveal_secret": "401 404 404 403 403 200",
    "rotate_secret": "401 404 404 403 403 202",
    "get_rotation": "401 404 404 200 200 200",
    "list_peerings": "401 404 404 200 200 200",
    "request_peering": "401 404 404 403 403 201",
    "accept_peering": "401 404 404 403 403 200",
    "cancel_peering": "401 404 404 403 403 200",
    # The matrix's peering is pending: nothing to revoke yet, which is a conflict.
    "revoke_peering": "401 404 404 403 403 409",
    # Support staff only (with a support token); everyone else is told there is nothing here.
    "support_queue": "401 404 200 404 404 404",
    "approve_peering": "401 404 200 404 404 404",
    "reject_peering": "401 404 200 404 404 404",
    "list_audit_events": "401 404 404 200 200 200",
    # Projects: owners create (in an organization named by its slug: one they don't belong
    # to is refused as for a role that may not), rename and delete.
    "create_project": "401 403 403 403 403 201",
    "rename_project": "401 404 404 403 403 200",
    "delete_project": "401 404 404 403 403 204",
    # Reference variables and old hostnames: members link and extend; owners end a hostname.
    "list_references": "401 404 404 200 200 200",
    "list_project_references": "401 404 404 200 200 200",
    "check_service_names": "401 404 404 200 200 200",
    "add_references": "401 404 404 403 201 201",
    "remove_reference": "401 404 404 403 204 204",
    "list_aliases": "401 404 404 200 200 200",
    "extend_alias": "401 404 404 403 200 200",
    "end_alias": "401 404 404 403 403 204",
    # The matrix's secret is not rotating: no grace window to end, which is a conflict.
    "end_rotation_grace": "401 404 404 403 403 409",
    # Mutual TLS: everyone sees it (certificates are public); owners turn it on, rotate the
    # CA and choose who may call a service. The matrix's project has it off: no CA to rotate,
    # which is a conflict.
    "get_mtls": "401 404 404 200 200 200",
    "enable_mtls": "401 404 404 403 403 201",
    "rotate_ca": "401 404 404 403 403 409",
    "get_callers": "401 404 404 200 200 200",
    "set_callers": "401 404 404 403 403 200",
    # Each token's own notifications (its organization's; support's for a support token).
    "list_notifications": "401 200 200 200 200 200",
    # The organization: everyone sees it; owners change who belongs; everyone has tokens, and a
    # viewer's token changes nothing, tokens included.
    "list_organizations": "401 200 200 200 200 200",
    "list_members": "401 404 404 200 200 200",
    "add_member": "401 404 404 403 403 201",
    "change_member_role": "401 404 404 403 403 200",
    "remove_member": "401 404 404 403 403 204",
    "list_tokens": "401 404 404 200 200 200",
    # Tokens make no tokens (they would outlive the one that made them): a signed-in person
    # does, on the API tokens page.
    "create_token": "401 404 404 403 403 403",
    "revoke_token": "401 404 404 403 204 204",
}
# Only for operations on a project: another tenant's is not found, whatever the role.
FOREIGN = "401 404 404 404 404 404"


@functools.cache
def operations() -> dict[str, tuple[str, str]]:
    """Every operation of the API: its ID, with its method and path template."""
    schema = api.get_openapi_schema()
    return {
        operation["operationId"]: (method.upper(), path)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }


# The matrices only look: one world for the module, each case rolled back in its savepoint.
@pytest.fixture
def world(module_world: World, db: Any) -> World:
    return module_world


@pytest.fixture
def api_tokens(module_api_tokens: dict[str, str | None], db: Any) -> dict[str, str | None]:
    return module_api_tokens


def body_for(world: World, operation_id: str) -> dict[str, Any] | None:
    """A valid body for each operation that takes one."""
    billing = Project.objects.get(organization=world.globex, name="Billing")
    bodies: dict[str, Callable[[], dict[str, Any]]] = {
        "create_service": lambda: {"name": "Matrix Worker", "kind": "private", "ports": [3000]},
        "update_service": lambda: {"name": "main-db"},
        "create_secret": lambda: {"name": "WEBHOOK_KEY", "services": ["api"]},
        "update_secret": lambda: {"services": ["api", "postgres"]},
        "rotate_secret": lambda: {},
        "request_peering": lambda: {"target": billing.uid, "justification": "Reads invoices."},
        "reject_peering": lambda: {"reason": "Not needed."},
        "create_project": lambda: {"name": "Matrix Project", "organization": "acme"},
        "rename_project": lambda: {"name": "Renamed by the matrix"},
        "add_references": lambda: {"consumers": ["api"]},
        "add_member": lambda: {"who": "globex-owner", "role": "viewer"},
        "change_member_role": lambda: {"role": "viewer"},
        "create_token": lambda: {"name": "matrix-token"},
        "set_callers": lambda: {"any": False, "callers": ["api"]},
    }
    return bodies[operation_id]() if operation_id in bodies else None


def url_for(world: World, path: str, operation_id: str, *, foreign: bool) -> str:
    project = world.other_project if foreign else world.project
    service = world.other_service if foreign else world.postgres
    organization = world.globex if foreign else world.acme
    values = {
        "project_id": project.uid,
        "service_id": service.pk,
        "secret_id": (world.other_secret if foreign else world.secret).pk,
        # Support decides on the request waiting for it; customers act on their own project's.
        "peering_id": (
            world.other_peering
            if foreign or operation_id in ("approve_peering", "reject_peering")
            else world.peering
        ).pk,
        "test_id": finished_connection_test(service),
        "reference_id": reference_to(service),
        "alias_id": old_hostname_of(service),
        "slug": organization.slug,
        # Acme's viewer; Globex's owner.
        "member_id": Membership.objects.filter(
            organization=organization, user__username="globex-owner" if foreign else "viewer"
        )
        .values_list("pk", flat=True)
        .first()
        or 0,
        "token_id": token_in(organization),
    }
    query = ""
    if operation_id == "delete_project":
        query = f"?confirm_name={project.name}"
    elif operation_id == "check_service_names":
        query = "?name=Email%20Sender"
    return path.format(**values) + query


def reference_to(service: Service) -> int:
    """The ID of a reference variable ``service`` receives from another service of its project
    (made on first use; 0 once it is gone)."""
    if not Service.objects.filter(pk=service.pk).exists():
        return 0
    source = Service.objects.filter(project=service.project, name="matrix-source").first()
    if source is None:
        source = make_service(service.project, "matrix-source", Service.Kind.WEB)
    reference, _ = ReferenceVariable.objects.get_or_create(
        project=service.project, source=source, consumer=service, variable="MATRIX_SOURCE_URL"
    )
    return reference.pk


def old_hostname_of(service: Service) -> int:
    """The ID of an old hostname still resolving to ``service`` (made on first use)."""
    if not Service.objects.filter(pk=service.pk).exists():
        return 0
    alias, _ = ServiceAlias.objects.get_or_create(
        project=service.project,
        service=service,
        name=f"old-{service.name}",
        defaults={"expires_at": timezone.now() + timedelta(hours=1)},
    )
    return alias.pk


def token_in(organization: Organization) -> int:
    """Acme's member's token; a token of Globex's owner."""
    if organization.slug == "acme":
        return ApiToken.objects.get(organization=organization, name="member-token").pk
    found = ApiToken.objects.filter(organization=organization, name="globex-token").first()
    if found is None:
        issue_token(
            User.objects.get(username="globex-owner"), organization, "owner", "globex-token"
        )
        found = ApiToken.objects.get(organization=organization, name="globex-token")
    return found.pk


def finished_connection_test(service: Service) -> int:
    """The ID of a finished test of ``service`` (made on first use; 0 once it is deleted)."""
    if not Service.objects.filter(pk=service.pk).exists():
        return 0
    test, _ = ConnectionTest.objects.get_or_create(
        service=service,
        status=ConnectionTest.Status.PASSED,
        defaults={"hostname": service.internal_hostname, "ports": service.ports},
    )
    return test.pk


def call(
    client: Client, method: str, url: str, body: dict[str, Any] | None, token: str | None
) -> Any:
    data = json.dumps(body) if body is not None else ""
    return client.generic(
        method, url, data=data, content_type="application/json", headers=bearer(token)
    )


def test_every_operation_has_a_row() -> None:
    known = set(operations())
    assert known - set(MATRIX) == set(), "add these operations to MATRIX with their statuses"
    assert set(MATRIX) - known == set(), "MATRIX names operations that no longer exist"


def _cells(*, foreign: bool) -> list[Any]:
    cells = []
    for operation_id, statuses in MATRIX.items():
        expected = statuses.split()
        if foreign:
            path = operations()[operation_id][1]
            if "{project_id}" not in path and "{slug}" not in path:
                continue  # nothing of a tenant in the path
            expected = FOREIGN.split()
        for role, status in zip(ROLES, expected, strict=True):
            cells.append(pytest.param(operation_id, role, int(status), id=f"{operation_id}-{role}"))
    return cells


@pytest.mark.parametrize(("operation_id", "role", "status"), _cells(foreign=False))
def test_own_tenant(
    world: World, api_tokens: dict[str, str | None], operation_id: str, role: str, status: int
) -> None:
    method, path = operations()[operation_id]
    url = url_for(world, path, operation_id, foreign=False)
    before = tenant_state(world.acme)
    response = call(Client(), method, url, body_for(world, operation_id), api_tokens[role])
    assert response.status_code == status, response.content
    if status >= 400:
        assert response["Content-Type"] == "application/problem+json"
        assert tenant_state(world.acme) == before, "a refused request changed something"


@pytest.mark.parametrize(("operation_id", "role", "status"), _cells(foreign=True))
def test_other_tenant(
    world: World, api_tokens: dict[str, str | None], operation_id: str, role: str, status: int
) -> None:
    method, path = operations()[operation_id]
    url = url_for(world, path, operation_id, foreign=True)
    before = tenant_state(world.globex)
    response = call(Client(), method, url, body_for(world, operation_id), api_tokens[role])
    assert response.status_code == status, response.content
    assert tenant_state(world.globex) == before, "another tenant's request changed something"


def test_a_token_reaches_only_its_own_organization(world: World) -> None:
    """A member of two organizations holds a token for one: the other's projects are 404."""
    from tests.conftest import issue_token

    member = world.users["member"]
    assert member is not None
    member.memberships.create(organization=world.globex, role="owner")
    token = issue_token(member, world.acme, "member", "acme-only")
    client = Client()
    other = f"/api/v1/projects/{world.other_project.uid}"
    assert client.get(other, headers=bearer(token)).status_code == 404
    listed = client.get("/api/v1/projects", headers=bearer(token)).json()
    assert [project["organization"] for project in listed] == ["acme"]
    assert Organization.objects.filter(slug="globex").exists()
