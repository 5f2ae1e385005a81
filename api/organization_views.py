"""The API's organization operations: the organizations one belongs to, their members and
roles (owners change them), and API tokens (everyone their own, owners everyone's).

The same domain functions as the Organization and API tokens pages, with the same rules: a
token reaches its own organization only, and acts with the lower of its role and its holder's.
"""

from __future__ import annotations

from typing import Annotated

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import F
from django.http import Http404, HttpRequest
from django.views.decorators.cache import never_cache
from ninja import Router, Status
from ninja.decorators import decorate_view
from ninja.params.functions import Path

from api import schemas
from api.forms import ApiTokenForm
from api.idempotency import idempotent
from api.models import ApiToken
from api.problems import Problem, form_invalid
from networking import plain_text, teams
from networking.access import capped_memberships, get_organization_for_user, token_of
from networking.models import Membership, Organization

router = Router()

ERRORS = dict.fromkeys((400, 401, 403, 404, 409, 413, 422, 429), schemas.ProblemOut)
OrgSlug = Annotated[
    str, Path(description="The organization's slug", max_length=50, pattern=r"^[-a-zA-Z0-9_]+$")
]
ObjectId = Annotated[int, Path(ge=1, le=2**63 - 1)]
mutating = decorate_view(idempotent)
# The answer holds a new token: never cached, never kept for a retry (no Idempotency-Key).
revealing = decorate_view(never_cache)


def _organization(request: HttpRequest, slug: str) -> tuple[Organization, Membership]:
    return get_organization_for_user(request, slug)


def _owner_of(request: HttpRequest, slug: str) -> Organization:
    organization, membership = _organization(request, slug)
    if not membership.can_manage_project():
        raise PermissionDenied("Only owners of an organization can change who belongs to it.")
    return organization


def _token_manager(request: HttpRequest, slug: str) -> tuple[Organization, Membership]:
    """The organization and the caller's membership, to create or revoke tokens: a viewer's
    token changes nothing, this included (a viewer does it on the API tokens page)."""
    organization, membership = _organization(request, slug)
    if token_of(request) is not None and membership.role == Membership.Role.VIEWER:
        raise PermissionDenied(
            "A viewer token changes nothing, tokens included: create or revoke tokens on the "
            "API tokens page, or with a member's or an owner's token."
        )
    return organization, membership


def _refused(refused: teams.TeamChangeRefused) -> Problem:
    return Problem(409, str(refused))


@router.get(
    "/organizations",
    response={200: list[schemas.OrganizationOut], **ERRORS},
    tags=["organizations"],
    operation_id="list_organizations",
)
def list_organizations(request: HttpRequest) -> list[schemas.OrganizationOut]:
    """The organizations you belong to, with your role (a token: its own organization)."""
    return [
        schemas.OrganizationOut(
            slug=membership.organization.slug,
            name=membership.organization.name,
            plan=membership.organization.plan,
            role=Membership.Role(membership.role),
        )
        for membership in sorted(capped_memberships(request), key=lambda m: m.organization.name)
    ]


# -- Members -----------------------------------------------------------------------------------


@router.get(
    "/organizations/{slug}/members",
    response={200: list[schemas.MemberOut], **ERRORS},
    tags=["organizations"],
    operation_id="list_members",
)
def list_members(request: HttpRequest, slug: OrgSlug) -> list[schemas.MemberOut]:
    """Who belongs to the organization, in which role."""
    organization, _ = _organization(request, slug)
    members = (
        Membership.objects.filter(organization=organization)
        .select_related("user")
        .order_by("user__username")
    )
    return [schemas.from_member(member) for member in members]


@router.post(
    "/organizations/{slug}/members",
    response={201: schemas.MemberOut, **ERRORS},
    tags=["organizations"],
    operation_id="add_member",
)
@mutating
def add_member(
    request: HttpRequest, slug: OrgSlug, payload: schemas.MemberInviteIn
) -> Status[schemas.MemberOut]:
    """Add an existing user, by username or email, in a role (owners)."""
    organization = _owner_of(request, slug)
    try:
        plain_text.single_line(payload.who)
        added = teams.invite(organization, payload.who, payload.role, actor=request.user)
    except ValidationError as error:
        raise Problem(422, " ".join(error.messages), errors={"who": error.messages}) from None
    except teams.TeamChangeRefused as refused:
        raise _refused(refused) from None
    return Status(201, schemas.from_member(added))


def _member(organization: Organization, membership_id: int) -> Membership:
    found = (
        Membership.objects.filter(organization=organization, pk=membership_id)
        .select_related("user")
        .first()
    )
    if found is None:
        raise Http404("No such member of this organization.")
    return found


@router.patch(
    "/organizations/{slug}/members/{member_id}",
    response={200: schemas.MemberOut, **ERRORS},
    tags=["organizations"],
    operation_id="change_member_role",
)
@mutating
def change_member_role(
    request: HttpRequest, slug: OrgSlug, member_id: ObjectId, payload: schemas.MemberChangeIn
) -> schemas.MemberOut:
    """Change someone's role (owners); the last owner stays an owner. Their tokens act with
    the new role from their next request."""
    organization = _owner_of(request, slug)
    try:
        teams.change_role(organization, member_id, payload.role, actor=request.user)
    except teams.TeamChangeRefused as refused:
        raise _refused(refused) from None
    return schemas.from_member(_member(organization, member_id))


@router.delete(
    "/organizations/{slug}/members/{member_id}",
    response={204: None, **ERRORS},
    tags=["organizations"],
    operation_id="remove_member",
)
@mutating
def remove_member(request: HttpRequest, slug: OrgSlug, member_id: ObjectId) -> Status[None]:
    """Take someone out of the organization (owners); their tokens for it are revoked."""
    organization = _owner_of(request, slug)
    try:
        teams.remove(organization, member_id, actor=request.user)
    except teams.TeamChangeRefused as refused:
        raise _refused(refused) from None
    return Status(204, None)


# -- API tokens --------------------------------------------------------------------------------


@router.get(
    "/organizations/{slug}/tokens",
    response={200: list[schemas.TokenOut], **ERRORS},
    tags=["organizations"],
    operation_id="list_tokens",
)
def list_tokens(request: HttpRequest, slug: OrgSlug) -> list[schemas.TokenOut]:
    """Your tokens (an owner: everyone's), live ones first: never the token itself."""
    organization, membership = _organization(request, slug)
    tokens = ApiToken.objects.filter(organization=organization).select_related("user")
    if not membership.can_manage_project():
        tokens = tokens.filter(user_id=request.user.pk or 0)
    # Live ones first (a NULL revoked_at; PostgreSQL puts NULLs last unless told).
    ordered = tokens.order_by(F("revoked_at").asc(nulls_first=True), "-created_at")
    return [schemas.from_token(token) for token in ordered]


@router.post(
    "/organizations/{slug}/tokens",
    response={201: schemas.TokenCreatedOut, **ERRORS},
    tags=["organizations"],
    operation_id="create_token",
)
@revealing
def create_token(
    request: HttpRequest, slug: OrgSlug, payload: schemas.TokenCreateIn
) -> Status[schemas.TokenCreatedOut]:
    """A new token for you, with a role up to your own, from a signed-in browser session
    (a token can't make tokens: they would outlive it); the answer holds the token itself,
    this once."""
    organization, membership = _token_manager(request, slug)
    if token_of(request) is not None:
        # A token that could mint tokens would outlive its own expiry and revocation through
        # them (a leaked CI token leaving one behind): tokens are made by a signed-in person.
        raise PermissionDenied(
            "A token can't create tokens: create them on your organization's API tokens page "
            "(signed in), where you see them once."
        )
    if payload.role not in ApiToken.roles_for(membership.role):
        raise PermissionDenied(
            f"A token can do at most what you may: you act as {membership.role} here, so "
            f"choose {' or '.join(ApiToken.roles_for(membership.role))}."
        )
    form = ApiTokenForm(
        {
            "name": payload.name,
            "role": payload.role,
            "expires_in_days": str(payload.expires_in_days or ""),
        },
        member_role=membership.role,
    )
    if not form.is_valid():
        raise form_invalid(form.errors)
    try:
        token, raw = form.issue(request.user, organization)
    except ValidationError as error:
        problem = form_invalid(error.message_dict)
        if any(item.code == "duplicate" for item in error.error_dict.get("name", [])):
            problem.status = 409
        raise problem from None
    return Status(201, schemas.TokenCreatedOut(**schemas.from_token(token).model_dump(), token=raw))


@router.delete(
    "/organizations/{slug}/tokens/{token_id}",
    response={204: None, **ERRORS},
    tags=["organizations"],
    operation_id="revoke_token",
)
@mutating
def revoke_token(request: HttpRequest, slug: OrgSlug, token_id: ObjectId) -> Status[None]:
    """Revoke a token: refused from its next request. Yours, or (owners) anyone's."""
    organization, membership = _token_manager(request, slug)
    tokens = ApiToken.objects.filter(organization=organization, pk=token_id)
    if not membership.can_manage_project():
        tokens = tokens.filter(user_id=request.user.pk or 0)  # another's token: not found
    found = tokens.select_related("user").first()
    if found is None:
        raise Http404("No such token.")
    found.revoke(actor=request.user)
    return Status(204, None)
