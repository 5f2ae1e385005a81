"""The Organization page: who belongs, in which role; owners invite, change roles, remove."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from networking import plain_text, teams
from networking.access import get_organization_for_user
from networking.models import AuditEvent, Membership, Organization

TEAM_ACTIONS = (
    AuditEvent.Action.MEMBER_ADDED,
    AuditEvent.Action.MEMBER_ROLE_CHANGED,
    AuditEvent.Action.MEMBER_REMOVED,
    AuditEvent.Action.PROJECT_DELETED,
    AuditEvent.Action.TOKEN_CREATED,
    AuditEvent.Action.TOKEN_FIRST_USED,
    AuditEvent.Action.TOKEN_REVOKED,
)


@login_required
@require_GET
def org_team(request: HttpRequest, org_slug: str) -> HttpResponse:
    organization, membership = get_organization_for_user(request, org_slug)
    members = (
        Membership.objects.filter(organization=organization)
        .select_related("user")
        .order_by("user__username")
    )
    owners = sum(1 for member in members if member.role == Membership.Role.OWNER)
    events = AuditEvent.objects.filter(
        organization=organization, project=None, action__in=TEAM_ACTIONS
    )[:20]
    return render(
        request,
        "orgs/team.html",
        {
            "organization": organization,
            "membership": membership,
            "members": members,
            "owners": owners,
            "roles": Membership.Role.choices,
            "events": events,
        },
    )


def _owner_of(request: HttpRequest, org_slug: str) -> Organization:
    organization, membership = get_organization_for_user(request, org_slug)
    if not membership.can_manage_project():
        raise PermissionDenied("Only owners of an organization can change who belongs to it.")
    return organization


@login_required
@require_POST
def org_team_invite(request: HttpRequest, org_slug: str) -> HttpResponse:
    organization = _owner_of(request, org_slug)
    who = request.POST.get("who", "")[:254]
    try:
        plain_text.single_line(who)  # a NUL byte or a control character: said, not a 500
        added = teams.invite(organization, who, request.POST.get("role", ""), actor=request.user)
    except teams.TeamChangeRefused as refused:
        messages.error(request, str(refused))
    except ValidationError as invalid:
        messages.error(request, " ".join(invalid.messages))
    else:
        messages.success(
            request,
            f"Added {added.user.get_username()} as {added.get_role_display().lower()}.",
        )
    return redirect("org-team", org_slug=org_slug)


@login_required
@require_POST
def org_team_role(request: HttpRequest, org_slug: str, membership_id: int) -> HttpResponse:
    organization = _owner_of(request, org_slug)
    role = request.POST.get("role", "")
    try:
        changed = teams.change_role(organization, membership_id, role, actor=request.user)
    except teams.TeamChangeRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, "Role changed." if changed else "That was already their role.")
    return redirect("org-team", org_slug=org_slug)


@login_required
@require_POST
def org_team_remove(request: HttpRequest, org_slug: str, membership_id: int) -> HttpResponse:
    organization = _owner_of(request, org_slug)
    try:
        removed = teams.remove(organization, membership_id, actor=request.user)
    except teams.TeamChangeRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(
            request, "Removed from the organization." if removed else "They were already removed."
        )
    return redirect("org-team", org_slug=org_slug)
