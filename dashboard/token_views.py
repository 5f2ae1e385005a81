"""Personal API tokens, per organization: create (shown once), list with last use, revoke.

Everyone creates and revokes their own tokens, with a role up to their own; owners also see and
revoke everyone's in the organization. The token itself is shown once, in the answer to the
POST that made it (never cached), and stored only as a hash.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from api.forms import ApiTokenForm
from api.models import ApiToken
from networking.access import get_organization_for_user
from networking.models import Membership, Organization


def _visible_tokens(
    request: HttpRequest, organization: Organization, membership: Membership
) -> Any:
    """Owners see every token of the organization; everyone else their own."""
    tokens = ApiToken.objects.filter(organization=organization).select_related("user")
    if not membership.can_manage_project():
        tokens = tokens.filter(user_id=request.user.pk or 0)
    return tokens.order_by("revoked_at", "-created_at")[:200]


def _page(
    request: HttpRequest,
    organization: Organization,
    membership: Membership,
    form: ApiTokenForm,
    **extra: Any,
) -> HttpResponse:
    return render(
        request,
        "orgs/tokens.html",
        {
            "organization": organization,
            "membership": membership,
            "form": form,
            "tokens": _visible_tokens(request, organization, membership),
            "now": timezone.now(),
            **extra,
        },
    )


@login_required
@require_GET
def org_tokens(request: HttpRequest, org_slug: str) -> HttpResponse:
    organization, membership = get_organization_for_user(request, org_slug)
    return _page(request, organization, membership, ApiTokenForm(member_role=membership.role))


@login_required
@require_POST
@never_cache
def org_token_create(request: HttpRequest, org_slug: str) -> HttpResponse:
    """Make the token and show it this once: the page says to copy it now."""
    organization, membership = get_organization_for_user(request, org_slug)
    form = ApiTokenForm(request.POST, member_role=membership.role)
    if form.is_valid():
        try:
            token, raw = form.issue(request.user, organization)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            return _page(
                request,
                organization,
                membership,
                ApiTokenForm(member_role=membership.role),
                new_token=token,
                new_token_value=raw,
            )
    return _page(request, organization, membership, form)


@login_required
@require_POST
def org_token_revoke(request: HttpRequest, org_slug: str, token_id: int) -> HttpResponse:
    organization, membership = get_organization_for_user(request, org_slug)
    tokens = ApiToken.objects.filter(organization=organization, pk=token_id)
    if not membership.can_manage_project():
        tokens = tokens.filter(user_id=request.user.pk or 0)  # another's token: not found
    found = tokens.select_related("user").first()
    if found is None:
        raise Http404("No such token.")
    if found.revoke(actor=request.user):
        messages.success(request, f"Revoked {found.name}: it is refused from now on.")
    else:
        messages.info(request, f"{found.name} was already revoked.")
    return redirect("org-tokens", org_slug=org_slug)
