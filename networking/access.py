"""The one way views fetch tenant data, for the pages and the HTTP API alike.

Every project, and everything inside one, is looked up through these helpers, which join on the
requesting user's membership: another tenant's object is indistinguishable from a missing one
(404), and a role that may look but not touch gets 403 on a change.

A request made with an API token (``request.api_token``, set by the API's authentication)
reaches only the token's organization, with the lower of the token's role and the holder's
role today; a support token reaches the support queue and no tenant. The rules live here, in the
domain, because both front ends (the pages and the API) apply them.

What is checked here is checked again where the request writes: a request let in through a
membership leaves its ``Standing`` on the acting user, and the audit event every change records
inside its transaction confirms it under lock (``AuditEvent.record``). A member removed, or
given a role that can't make the change, while their request was on its way changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.core.exceptions import PermissionDenied
from django.db import connection
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


@dataclass
class Standing:
    """What a request was let into an organization as, confirmed again where it writes.

    ``role`` is the one it was let in with (the membership's, capped by ``token_role``), and
    ``capabilities`` what it was then checked for (``ProjectAccess.require``). The acting user
    carries one per organization (``standings``) into the domain functions, and the audit event
    each change records inside its transaction calls ``confirm`` (``AuditEvent.record``).
    """

    organization_id: int
    organization_name: str
    user_id: int
    role: str
    token_role: str | None
    capabilities: list[Capability] = field(default_factory=list)

    def confirm(self) -> None:
        """Read the membership again, under locks held until the transaction ends;
        ``PermissionDenied`` (and the transaction rolls back) if it is gone, or if its role now
        lacks a capability the request was checked for (none checked: if the role is lower).

        The organization's row first, as team changes lock it (``networking.teams``), then the
        membership: a removal or a role change committed before this point is seen here, and one
        that comes after waits until this transaction ends. The organization's lock is the
        weakest there is (``FOR KEY SHARE``, what a foreign key check takes): writers do not
        wait for each other, only a team change waits for them.
        """
        role = _locked_role(self.organization_id, self.user_id)
        if role is None:
            raise removed_meanwhile(self.organization_name)
        if self.token_role is not None:
            role = Membership.lower_role(self.token_role, role)
        now = Membership(organization_id=self.organization_id, user_id=self.user_id, role=role)
        if self.capabilities:
            allowed = all(capability(now) for capability in self.capabilities)
        else:
            allowed = Membership.RANK.get(role, -1) >= Membership.RANK.get(self.role, -1)
        if not allowed:
            raise PermissionDenied(
                f"Your role in {self.organization_name} changed to {role} while this request was "
                f"on its way, and a {role} can’t do this, so nothing was done."
            )


def _locked_role(organization_id: int, user_id: int) -> str | None:
    """The user's role in the organization now, locked as ``Standing.confirm`` says.

    In SQL: the ORM has no ``FOR KEY SHARE`` or ``FOR SHARE``. SQLite (``make run``) has no
    row locks, and needs none: a transaction there holds the whole database from its first
    statement (``transaction_mode`` IMMEDIATE), so nothing changes the membership meanwhile.
    """
    quote = connection.ops.quote_name
    key_share, share = (
        (" FOR KEY SHARE", " FOR SHARE") if connection.vendor == "postgresql" else ("", "")
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {quote(Organization._meta.db_table)} WHERE id = %s{key_share}",  # noqa: S608
            [organization_id],
        )
        cursor.execute(
            f"SELECT role FROM {quote(Membership._meta.db_table)} "  # noqa: S608
            f"WHERE organization_id = %s AND user_id = %s{share}",
            [organization_id, user_id],
        )
        row = cursor.fetchone()
    return str(row[0]) if row is not None else None


@dataclass(frozen=True)
class ProjectAccess:
    project: Project
    membership: Membership
    standing: Standing

    def context(self, **extra: Any) -> dict[str, Any]:
        """Template context of a project page: the project, the user's role, and ``extra``."""
        return {"project": self.project, "membership": self.membership, **extra}

    def require(self, capability: Capability) -> None:
        """``PermissionDenied`` unless the role may; checked again where the change is written."""
        if not capability(self.membership):
            raise PermissionDenied("Your role in this organization can’t make this change.")
        self.standing.capabilities.append(capability)


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
    """``memberships_of``, each with the role this request may use (for lists, and to choose
    an organization), each letting the request in as that role (``Standing``)."""
    memberships = [_capped(request, membership) for membership in memberships_of(request)]
    for membership in memberships:
        _let_in(request, membership)
    return memberships


def _membership(request: HttpRequest, **lookup: Any) -> Membership | None:
    membership = memberships_of(request).filter(**lookup).first()
    return _capped(request, membership) if membership is not None else None


def _let_in(request: HttpRequest, membership: Membership) -> Standing:
    """The request's standing in the membership's organization, left on the acting user (the
    ``actor`` every domain function is given) for ``AuditEvent.record`` to confirm."""
    standings: dict[int, Standing] | None = getattr(request.user, "standings", None)
    if standings is None:
        standings = {}
        setattr(request.user, "standings", standings)  # noqa: B010  # a user has no such field
    standing = standings.get(membership.organization_id)
    if standing is None:
        token = token_of(request)
        standing = standings[membership.organization_id] = Standing(
            organization_id=membership.organization_id,
            organization_name=membership.organization.name,
            user_id=membership.user_id,
            role=membership.role,
            token_role=token.role if token is not None else None,
        )
    return standing


def removed_meanwhile(organization_name: str) -> PermissionDenied:
    return PermissionDenied(
        f"You are no longer a member of {organization_name}: you were removed while this "
        "request was on its way, so nothing was done. An owner can add you again."
    )


def get_project_for_user(request: HttpRequest, project_uid: str) -> ProjectAccess:
    membership = _membership(request, organization__projects__uid=project_uid)
    if membership is None:
        token = token_of(request)
        if token is not None and token.organization_id is not None:
            # The token was good a moment ago, and removing a member revokes their tokens in
            # the same transaction: its holder was removed while the request was on its way.
            # Say so, as a write caught by ``Standing.confirm`` does, not "no such project".
            organization = Organization.objects.filter(
                pk=token.organization_id, projects__uid=project_uid
            ).first()
            if (
                organization is not None
                and not Membership.objects.filter(
                    user_id=request.user.pk or 0, organization=organization
                ).exists()
            ):
                raise removed_meanwhile(organization.name)
        raise Http404("No such project.")
    project = Project.objects.filter(uid=project_uid).first()
    if project is None:  # deleted between the two queries
        raise Http404("No such project.")
    # Reuse the organization already loaded with the membership.
    project.organization = membership.organization
    return ProjectAccess(
        project=project,
        membership=membership,
        standing=_let_in(request, membership),
    )


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
    _let_in(request, membership)  # the caller compares the role itself: no capability to note
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
