"""The one way views fetch tenant data.

Every project, and everything inside one, is looked up through these helpers, which join on the
requesting user's membership: another tenant's object is indistinguishable from a missing one
(404), and a role that may look but not touch gets 403 on a change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def memberships_of(request: HttpRequest) -> QuerySet[Membership]:
    """The requesting user's memberships, with their organizations."""
    if not request.user.is_authenticated:
        return Membership.objects.none()
    return Membership.objects.filter(user_id=request.user.pk).select_related("organization")


def get_project_for_user(request: HttpRequest, project_uid: str) -> ProjectAccess:
    membership = memberships_of(request).filter(organization__projects__uid=project_uid).first()
    if membership is None:
        raise Http404("No such project.")
    project = Project.objects.get(uid=project_uid)
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
    membership = memberships_of(request).filter(organization__slug=slug).first()
    if membership is None:
        raise Http404("No such organization.")
    return membership.organization, membership
