"""Every URL × every method it accepts × every role, on the user's own tenant and another's.

The expected status of each cell lives in ``MATRIX``. A URL pattern without a row fails
``test_every_url_has_a_row``, so a new page cannot ship without deciding who may see it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from api.models import ApiToken
from networking.models import (
    AuditEvent,
    Membership,
    Organization,
    PeeringRequest,
    Project,
    ReferenceVariable,
    Service,
    ServiceAlias,
    SharedSecret,
)
from tests.conftest import ROLES, World

# url name, method: expected status for anonymous, outsider, support, viewer, member, owner.
# Mutating rows POST an empty form: a permitted role gets the form back with errors (200) or,
# where no input is needed, the action's redirect (302).
MATRIX: dict[tuple[str, str], str] = {
    ("home", "GET"): "302 302 302 302 302 302",
    ("login", "GET"): "200 302 302 302 302 302",
    ("login", "POST"): "200 302 302 302 302 302",
    ("logout", "POST"): "302 302 302 302 302 302",
    ("project-list", "GET"): "302 200 200 200 200 200",
    ("project-create", "GET"): "302 404 404 403 403 200",
    ("project-create", "POST"): "302 404 404 403 403 200",
    ("project-overview", "GET"): "302 404 404 200 200 200",
    ("project-network", "GET"): "302 404 404 200 200 200",
    ("service-choices", "GET"): "302 404 404 200 200 200",
    ("project-settings", "GET"): "302 404 404 200 200 200",
    ("project-settings", "POST"): "302 404 404 403 403 200",
    ("project-delete", "GET"): "302 404 404 403 403 200",
    # Without the typed name: the confirmation again, with what to type.
    ("project-delete", "POST"): "302 404 404 403 403 200",
    ("audit-log", "GET"): "302 404 404 200 200 200",
    ("audit-log-csv", "GET"): "302 404 404 200 200 200",
    ("project-sync", "GET"): "302 404 404 200 200 200",
    ("project-live", "GET"): "302 404 404 200 200 200",
    ("project-sync-retry", "POST"): "302 404 404 403 302 302",
    ("service-create", "GET"): "302 404 404 403 200 200",
    ("service-create", "POST"): "302 404 404 403 200 200",
    ("service-name-preview", "GET"): "302 404 404 200 200 200",
    ("service-detail", "GET"): "302 404 404 200 200 200",
    ("service-edit", "GET"): "302 404 404 403 200 200",
    ("service-edit", "POST"): "302 404 404 403 200 200",
    ("service-delete", "GET"): "302 404 404 403 200 200",
    ("service-delete", "POST"): "302 404 404 403 302 302",
    ("project-mtls", "GET"): "302 404 404 200 200 200",
    ("mtls-enable", "POST"): "302 404 404 403 403 302",
    ("mtls-rotate-ca", "POST"): "302 404 404 403 403 302",
    ("service-mtls-callers", "GET"): "302 404 404 403 403 302",
    ("service-mtls-callers", "POST"): "302 404 404 403 403 302",
    ("service-reveal", "POST"): "302 404 404 403 200 200",
    ("service-connection-test", "GET"): "302 404 404 302 302 302",
    ("service-connection-test", "POST"): "302 404 404 403 302 302",
    ("service-reference-add", "POST"): "302 404 404 403 200 200",
    ("service-reference-remove", "POST"): "302 404 404 403 302 302",
    ("service-alias-extend", "POST"): "302 404 404 403 302 302",
    ("service-alias-end", "POST"): "302 404 404 403 403 302",
    ("secret-list", "GET"): "302 404 404 200 200 200",
    ("secret-create", "GET"): "302 404 404 403 403 200",
    ("secret-create", "POST"): "302 404 404 403 403 200",
    ("secret-detail", "GET"): "302 404 404 200 200 200",
    ("secret-edit", "GET"): "302 404 404 403 403 200",
    ("secret-edit", "POST"): "302 404 404 403 403 302",
    ("secret-reveal", "POST"): "302 404 404 403 403 200",
    ("secret-rotate", "GET"): "302 404 404 403 403 200",
    ("secret-rotate", "POST"): "302 404 404 403 403 302",
    ("secret-end-grace", "POST"): "302 404 404 403 403 302",
    ("secret-delete", "GET"): "302 404 404 403 403 200",
    ("secret-delete", "POST"): "302 404 404 403 403 302",
    ("project-peering", "GET"): "302 404 404 200 200 200",
    ("peering-request", "POST"): "302 404 404 403 403 200",
    ("peering-accept", "POST"): "302 404 404 403 403 302",
    ("peering-cancel", "POST"): "302 404 404 403 403 302",
    # The matrix's peering is pending: nothing to revoke, said on the peering page.
    ("peering-revoke", "GET"): "302 404 404 403 403 302",
    ("peering-revoke", "POST"): "302 404 404 403 403 302",
    # The organization page: every member sees the team; owners change it (then back to it).
    ("org-team", "GET"): "302 404 404 200 200 200",
    ("org-team-invite", "POST"): "302 404 404 403 403 302",
    ("org-team-role", "POST"): "302 404 404 403 403 302",
    ("org-team-remove", "POST"): "302 404 404 403 403 302",
    # API tokens: everyone makes their own (an empty form comes back with its errors); the
    # matrix's token is the member's, which owners may revoke too and viewers cannot even see.
    ("org-tokens", "GET"): "302 404 404 200 200 200",
    ("org-token-create", "POST"): "302 404 404 200 200 200",
    ("org-token-revoke", "POST"): "302 404 404 404 302 302",
    # Notifications: each person's own list. Opening one needs one they may see (the form
    # names none here); marking all read and the header's poll are everyone's own.
    ("notification-list", "GET"): "302 200 200 200 200 200",
    ("notification-open", "POST"): "302 404 404 404 404 404",
    ("notifications-mark-read", "POST"): "302 302 302 302 302 302",
    ("notifications-live", "GET"): "302 200 200 200 200 200",
    # Support staff only; everyone else is told there is nothing here.
    ("support-queue", "GET"): "302 404 200 404 404 404",
    ("support-approve", "POST"): "302 404 302 404 404 404",
    ("support-reject", "POST"): "302 404 302 404 404 404",
}
# Only meaningful for URLs that name a tenant's object: every signed-in role gets 404.
FOREIGN = "302 404 404 404 404 404"


# The matrices only look: one world for the module, each case rolled back in its savepoint.
@pytest.fixture
def world(module_world: World, db: Any) -> World:
    return module_world


def _url_converters(
    patterns: list[URLPattern | URLResolver], outer: frozenset[str] = frozenset()
) -> dict[str, set[str]]:
    """Every named URL and the converters (kwargs) its full path takes."""
    found: dict[str, set[str]] = {}
    for pattern in patterns:
        here = outer | set(pattern.pattern.converters)
        if isinstance(pattern, URLResolver) and pattern.namespace == "api-v1":
            continue  # the HTTP API has its own matrix (test_api_access_matrix.py)
        if isinstance(pattern, URLResolver):
            found.update(_url_converters(pattern.url_patterns, frozenset(here)))
        elif pattern.name:
            found[pattern.name] = set(here)
    return found


def _converters(name: str) -> set[str]:
    return _url_converters(get_resolver().url_patterns)[name]


def _kwargs(world: World, name: str, *, foreign: bool) -> dict[str, Any]:
    wanted = _converters(name)
    kwargs: dict[str, Any] = {}
    if "project_uid" in wanted:
        kwargs["project_uid"] = (world.other_project if foreign else world.project).uid
    if "service_id" in wanted:
        service = world.other_service if foreign else world.postgres
        kwargs["service_id"] = service.pk
    if "alias_id" in wanted:
        service = world.other_service if foreign else world.postgres
        kwargs["alias_id"] = ServiceAlias.objects.get_or_create(
            project_id=service.project_id,
            service=service,
            name=f"old-{service.name}",
            defaults={"expires_at": timezone.now() + timedelta(days=1)},
        )[0].pk
    if "reference_id" in wanted:
        source = world.other_service if foreign else world.postgres
        consumer = Service.objects.get_or_create(
            project_id=source.project_id,
            name="consumer",
            defaults={"display_name": "consumer", "kind": "private", "ports": [3000]},
        )[0]
        kwargs["reference_id"] = ReferenceVariable.objects.get_or_create(
            project_id=source.project_id, source=source, consumer=consumer, variable="X_URL"
        )[0].pk
    if "peering_id" in wanted:
        kwargs["peering_id"] = (world.other_peering if foreign else world.peering).pk
    if "secret_id" in wanted:
        kwargs["secret_id"] = (world.other_secret if foreign else world.secret).pk
    if "org_slug" in wanted:
        kwargs["org_slug"] = (world.globex if foreign else world.acme).slug
    if "membership_id" in wanted:
        kwargs["membership_id"] = Membership.objects.get(
            organization=world.globex if foreign else world.acme,
            user__username="viewer" if not foreign else "globex-owner",
        ).pk
    if "token_id" in wanted:
        kwargs["token_id"] = matrix_token(world, foreign=foreign).pk
    return kwargs


def matrix_token(world: World, *, foreign: bool) -> ApiToken:
    """The member's token in Acme (the other tenant: Globex's owner's), made on first use."""
    holder, organization = ("globex-owner", world.globex) if foreign else ("member", world.acme)
    found = ApiToken.objects.filter(user__username=holder, organization=organization).first()
    if found is None:
        user = Membership.objects.get(user__username=holder, organization=organization).user
        found, _ = ApiToken.issue(
            user=user, organization=organization, name="matrix", role="viewer"
        )
    return found


def _call(client: Client, method: str, url: str) -> int:
    response = client.get(url) if method == "GET" else client.post(url, {})
    return response.status_code


def test_every_url_has_a_row() -> None:
    named = set(_url_converters(get_resolver().url_patterns))
    covered = {name for name, _ in MATRIX}
    assert named - covered == set(), "add these URLs to MATRIX with the expected status per role"
    assert covered - named == set(), "MATRIX names URLs that no longer exist"


def _cells(foreign: bool) -> list[Any]:
    cells = []
    for (name, method), statuses in MATRIX.items():
        expected = statuses.split()
        if foreign:
            if not {"project_uid", "org_slug"} & set(_converters(name)):
                continue  # nothing of a tenant in the URL
            expected = FOREIGN.split()
        for role, status in zip(ROLES, expected, strict=True):
            cells.append(
                pytest.param(name, method, role, int(status), id=f"{name}-{method}-{role}")
            )
    return cells


@pytest.mark.parametrize(("name", "method", "role", "status"), _cells(foreign=False))
def test_own_tenant(world: World, name: str, method: str, role: str, status: int) -> None:
    url = reverse(name, kwargs=_kwargs(world, name, foreign=False))
    assert _call(world.client_for(role), method, url) == status


def tenant_state(organization: Organization) -> list[Any]:
    """Everything a request could change in an organization, as comparable values."""
    projects = Project.objects.filter(organization=organization)
    return [
        list(projects.order_by("pk").values_list("pk", "name", "generation")),
        list(
            Service.objects.filter(project__in=projects)
            .order_by("pk")
            .values_list("pk", "name", "ports", "updated_at")
        ),
        list(
            SharedSecret.objects.filter(project__in=projects)
            .order_by("pk")
            .values_list("pk", "name", "version", "rotation_phase", "services")
        ),
        list(
            PeeringRequest.objects.filter(requester_project__in=projects)
            .order_by("pk")
            .values_list("pk", "status", "history")
        ),
        list(
            ReferenceVariable.objects.filter(project__in=projects)
            .order_by("pk")
            .values_list("pk", "source", "consumer", "variable")
        ),
        list(
            ServiceAlias.objects.filter(project__in=projects)
            .order_by("pk")
            .values_list("pk", "name", "expires_at")
        ),
        AuditEvent.objects.filter(organization=organization).count(),
        list(Membership.objects.filter(organization=organization).values_list("user", "role")),
    ]


@pytest.mark.parametrize(("name", "method", "role", "status"), _cells(foreign=True))
def test_other_tenant(world: World, name: str, method: str, role: str, status: int) -> None:
    url = reverse(name, kwargs=_kwargs(world, name, foreign=True))
    before = tenant_state(world.globex)
    assert _call(world.client_for(role), method, url) == status
    assert tenant_state(world.globex) == before, "another tenant's request changed something"


@pytest.mark.parametrize(
    "name", [name for name, method in MATRIX if method == "GET" and (name, "POST") not in MATRIX]
)
def test_post_to_a_read_only_url_is_refused(world: World, name: str) -> None:
    url = reverse(name, kwargs=_kwargs(world, name, foreign=False))
    assert world.client_for("owner").post(url, {}).status_code == 405


@pytest.mark.parametrize("name", [name for name, method in MATRIX if method == "POST"])
def test_mutating_urls_reject_a_missing_csrf_token(world: World, name: str) -> None:
    client = Client(enforce_csrf_checks=True)
    user = world.users["owner"]
    assert user is not None
    client.force_login(user)
    url = reverse(name, kwargs=_kwargs(world, name, foreign=False))
    response = client.post(url, {"display_name": "x", "name": "x"})
    assert response.status_code == 403
    assert b"nothing was changed" in response.content


def test_an_unknown_service_id_is_404_not_500(owner_client: Client, world: World) -> None:
    url = f"/projects/{world.project.uid}/services/99999999999999999999999/"
    assert owner_client.get(url).status_code == 404


# Crawled last, so every page is still there to be visited before them.
DESTRUCTIVE = {
    ("service-delete", "POST"),
    ("secret-delete", "POST"),
    ("logout", "POST"),
    ("org-team-remove", "POST"),
    ("org-token-revoke", "POST"),
}


def crawl(world: World, found: Callable[[str], bool]) -> list[tuple[str, str, str, bool]]:
    """Request every URL × method × role, own tenant and other: where ``found`` is true.

    Returns (url name, method, role, other tenant?) for each response whose body matched.
    """
    cells = sorted(MATRIX, key=lambda cell: (cell in DESTRUCTIVE, cell[1] != "GET"))
    matches = []
    for role in ROLES:
        client = world.client_for(role)
        for name, method in cells:
            for foreign in (False, True):
                url = reverse(name, kwargs=_kwargs(world, name, foreign=foreign))
                response = (
                    client.get(url, follow=True)
                    if method == "GET"
                    else client.post(url, {}, follow=True)
                )
                body = response.getvalue()  # streamed too (the audit log's CSV export)
                if found(body.decode(errors="replace")):
                    matches.append((name, method, role, foreign))
    return matches
