"""The one way views fetch tenant data, for the pages and the HTTP API alike.

Every project, and everything inside one, is looked up through these helpers, which join on the
requesting user's membership: another tenant's object is indistinguishable from a missing one
(404), and a role that may look but not touch gets 403 on a change.

A request made with an API token (``request.api_token``, set by the API's authentication)
reaches only the token's organization, with the lower of the token's role and the holder's
role today; a support token reaches the support queue and no tenant. The rules live here, in the
domain, because both front ends (the pages and the API) apply them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest

from networking.models import (
    Membership,
    Organization,
    PeeringRequest,
    Project,
    ReferenceVariable,
    Service,
    ServiceAlias,
    SharedSecret,
)

Capability = Callable[[Membership], bool]

# The role of a credential that belongs to support staff rather than to a customer.
SUPPORT_ROLE = "support"


class Credential(Protocol):
    """What a request made with an API token carries: the organization the token is for (None
    for support staff's) and the role it was given."""

    @property
    def organization_id(self) -> int | None: ...

    @property
    def role(self) -> str: ...


@dataclass(frozen=True)
class ProjectAccess:
    project: Project
    membership: Membership

    def context(self, **extra: Any) -> dict[str, Any]:
        """Template context of a project page: the project, the user's role, and ``extra``."""
        return {"project": self.project, "membership": self.membership, **extra}

    def require(self, capability: Capability) -> None:
        if not capability(self.membership):
            raise PermissionDenied("Your role in this organization can’t make this change.")


def token_of(request: HttpRequest) -> Credential | None:
    """The API token the request was authenticated with; None in a browser session."""
    token: Credential | None = getattr(request, "api_token", None)
    return token


def memberships_of(request: HttpRequest) -> QuerySet[Membership]:
    """The requesting user's memberships, with their organizations (a token's one, if any)."""
    if not request.user.is_authenticated:
        return Membership.objects.none()
    memberships = Membership.objects.filter(user_id=request.user.pk).select_related("organization")
    token = token_of(request)
    if token is not None:
        if token.organization_id is None:
            return memberships.none()
        memberships = memberships.filter(organization_id=token.organization_id)
    return memberships


def _capped(request: HttpRequest, membership: Membership) -> Membership:
    """The membership with the role this request may use: a token's role caps it."""
    token = token_of(request)
    if token is not None:
        membership.role = Membership.lower_role(token.role, membership.role)
    return membership


def capped_memberships(request: HttpRequest) -> list[Membership]:
    """``memberships_of``, each with the role this request may use (for lists)."""
    return [_capped(request, membership) for membership in memberships_of(request)]


def _membership(request: HttpRequest, **lookup: Any) -> Membership | None:
    membership = memberships_of(request).filter(**lookup).first()
    return _capped(request, membership) if membership is not None else None


def get_project_for_user(request: HttpRequest, project_uid: str) -> ProjectAccess:
    membership = _membership(request, organization__projects__uid=project_uid)
    if membership is None:
        raise Http404("No such project.")
    project = Project.objects.filter(uid=project_uid).first()
    if project is None:  # deleted between the two queries
        raise Http404("No such project.")
    # Reuse the organization already loaded with the membership.
    project.organization = membership.organization
    return ProjectAccess(project=project, membership=membership)


def _in_project[M: (Service, SharedSecret)](
    access: ProjectAccess, model: type[M], pk: int, what: str
) -> M:
    found = model.objects.filter(project=access.project, pk=pk).first()
    if found is None:
        raise Http404(f"No such {what}.")
    found.project = access.project
    return found


def get_service_for_user(
    request: HttpRequest, project_uid: str, service_id: int
) -> tuple[ProjectAccess, Service]:
    access = get_project_for_user(request, project_uid)
    return access, _in_project(access, Service, service_id, "service")


def get_alias_for_user(
    request: HttpRequest, project_uid: str, service_id: int, alias_id: int
) -> tuple[ProjectAccess, ServiceAlias]:
    """An old hostname of a service of this project."""
    access, service = get_service_for_user(request, project_uid, service_id)
    alias = service.aliases.filter(pk=alias_id).first()
    if alias is None:
        raise Http404("No such old hostname: it may have expired or been ended.")
    alias.service = service
    return access, alias


def get_reference_for_user(
    request: HttpRequest, project_uid: str, service_id: int, reference_id: int
) -> tuple[ProjectAccess, Service, ReferenceVariable]:
    """A reference variable this service gives or receives."""
    access, service = get_service_for_user(request, project_uid, service_id)
    found = (
        ReferenceVariable.objects.filter(Q(source=service) | Q(consumer=service), pk=reference_id)
        .select_related("source", "consumer")
        .first()
    )
    if found is None:
        raise Http404("No such reference: it may have been removed.")
    return access, service, found


def get_secret_for_user(
    request: HttpRequest, project_uid: str, secret_id: int
) -> tuple[ProjectAccess, SharedSecret]:
    access = get_project_for_user(request, project_uid)
    return access, _in_project(access, SharedSecret, secret_id, "secret")


def get_peering_for_user(
    request: HttpRequest, project_uid: str, peering_id: int
) -> tuple[ProjectAccess, PeeringRequest]:
    """A peering this project is one side of."""
    access = get_project_for_user(request, project_uid)
    found = (
        PeeringRequest.objects.filter(
            Q(requester_project=access.project) | Q(target_project=access.project), pk=peering_id
        )
        .select_related("requester_project__organization", "target_project__organization")
        .first()
    )
    if found is None:
        raise Http404("No such peering.")
    return access, found


def get_organization_for_user(request: HttpRequest, slug: str) -> tuple[Organization, Membership]:
    membership = _membership(request, organization__slug=slug)
    if membership is None:
        raise Http404("No such organization.")
    return membership.organization, membership


def require_support_staff(request: HttpRequest) -> None:
    """Support staff only (with a support token, over the API); for anyone else, nothing here."""
    token = token_of(request)
    if not (
        request.user.is_authenticated
        and request.user.is_staff
        and (token is None or token.role == SUPPORT_ROLE)
    ):
        raise Http404("No such page.")


def get_peering_for_staff(request: HttpRequest, peering_id: int) -> PeeringRequest:
    """Any peering request, for support staff to decide on."""
    require_support_staff(request)
    found = (
        PeeringRequest.objects.select_related(
            "requester_project__organization", "target_project__organization"
        )
        .filter(pk=peering_id)
        .first()
    )
    if found is None:
        raise Http404("No such peering.")
    return found
