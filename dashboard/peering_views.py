"""VPC peering: customers request, accept, cancel and revoke; support approves or rejects."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard.partials import vary_on_htmx, wants_part
from dashboard.views import HtmxHttpRequest
from networking import peering
from networking.access import (
    ProjectAccess,
    get_peering_for_staff,
    get_peering_for_user,
    get_project_for_user,
    memberships_of,
    require_support_staff,
)
from networking.forms import PeeringRequestForm, RejectForm
from networking.models import Membership, Organization, PeeringRequest, Project, Service


def _peerings_of(project: Project) -> list[PeeringRequest]:
    return list(
        PeeringRequest.objects.filter(Q(requester_project=project) | Q(target_project=project))
        .select_related("requester_project__organization", "target_project__organization")
        .order_by("-created_at")[:50]
    )


def _active_peers(project: Project, peerings: list[PeeringRequest]) -> list[dict[str, Any]]:
    """Active peers and their services, with the hostnames that reach them over the peering."""
    peers = [p.peer_of(project) for p in peerings if p.status == PeeringRequest.Status.ACTIVE]
    services = Service.objects.filter(project__in=peers).order_by("name")
    by_project: dict[int, list[Service]] = {}
    for service in services:
        by_project.setdefault(service.project_id, []).append(service)
    return [{"project": peer, "services": by_project.get(peer.pk, [])} for peer in peers]


def _page(
    request: HttpRequest,
    access: ProjectAccess,
    form: PeeringRequestForm,
    template: str = "peering/project.html",
) -> HttpResponse:
    peerings = _peerings_of(access.project)
    part = template.endswith("#peerings")
    return render(
        request,
        template,
        access.context(
            peerings=peerings,
            active_peers=_active_peers(access.project, peerings),
            form=form,
            enterprise=access.project.organization.plan == Organization.Plan.ENTERPRISE,
            settles_within=peering.SETTLES_WITHIN_SECONDS,
            # What the last action said ("Requested. Waiting for support.") describes the
            # peerings as they stood then, so it is shown inside the part that refreshes itself:
            # the next refresh (the project changed: support decided, the worker connected)
            # takes it away instead of leaving it to contradict the new state. ``messages``
            # keeps it out of the page's usual place; a refresh consumes none (one may be
            # another tab's, for its next page).
            notices=[] if part else list(messages.get_messages(request)),
            messages=(),
        ),
    )


@login_required
@require_GET
@vary_on_htmx  # the page and its parts share a URL: never cache one as another
def project_peering(request: HtmxHttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    # htmx refreshes just the peerings whenever the project changes (the header's poll).
    template = "peering/project.html#peerings" if wants_part(request) else "peering/project.html"
    return _page(request, access, PeeringRequestForm(), template)


@login_required
@require_POST
def peering_request(request: HttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    access.require(Membership.can_manage_project)
    form = PeeringRequestForm(request.POST)
    if form.is_valid():
        try:
            created = peering.request_peering(
                access.project,
                form.cleaned_data["target"],
                form.cleaned_data["justification"],
                actor=request.user,
            )
        except peering.PeeringRefused as refused:
            form.add_error(None, str(refused))
        else:
            messages.success(request, f"Requested. {created.get_status_display()}.")
            return redirect("project-peering", project_uid=project_uid)
    return _page(request, access, form)


def _customer_action(
    request: HttpRequest, project_uid: str, peering_id: int, action: str
) -> HttpResponse:
    access, found = get_peering_for_user(request, project_uid, peering_id)
    access.require(Membership.can_manage_project)
    transition = {"accept": peering.accept, "cancel": peering.cancel, "revoke": peering.revoke}
    try:
        transition[action](found, actor=request.user, project=access.project)
    except peering.PeeringRefused as refused:
        messages.error(request, str(refused))
    else:
        found.refresh_from_db()
        messages.success(request, f"Done: the peering is now {found.get_status_display().lower()}.")
    return redirect("project-peering", project_uid=project_uid)


@login_required
@require_POST
def peering_accept(request: HttpRequest, project_uid: str, peering_id: int) -> HttpResponse:
    return _customer_action(request, project_uid, peering_id, "accept")


@login_required
@require_POST
def peering_cancel(request: HttpRequest, project_uid: str, peering_id: int) -> HttpResponse:
    return _customer_action(request, project_uid, peering_id, "cancel")


def _service_names(project: Project) -> list[str]:
    return list(project.services.order_by("name").values_list("name", flat=True))


@login_required
@require_http_methods(["GET", "POST"])
def peering_revoke(request: HttpRequest, project_uid: str, peering_id: int) -> HttpResponse:
    """Says what stops working, then revokes on the confirmation's own button."""
    access, found = get_peering_for_user(request, project_uid, peering_id)
    access.require(Membership.can_manage_project)
    if request.method == "POST" and request.POST.get("confirm") == "revoke":
        return _customer_action(request, project_uid, peering_id, "revoke")
    if found.status not in PeeringRequest.CONNECTED:
        messages.error(request, f"This peering is {found.get_status_display().lower()}.")
        return redirect("project-peering", project_uid=project_uid)
    peer = found.peer_of(access.project)
    return render(
        request,
        "peering/revoke.html",
        access.context(
            peering=found,
            peer=peer,
            own_services=list(
                access.project.services.order_by("name").values_list("name", flat=True)
            ),
            peer_services=list(peer.services.order_by("name").values_list("name", flat=True)),
        ),
    )


@login_required
@require_GET
def support_queue(request: HttpRequest) -> HttpResponse:
    require_support_staff(request)
    pending = (
        PeeringRequest.objects.filter(status=PeeringRequest.Status.PENDING_SUPPORT)
        .select_related(
            "requester_project__organization", "target_project__organization", "requested_by"
        )
        .order_by("created_at")
    )
    own = set(memberships_of(request).values_list("organization_id", flat=True))
    recent = (
        PeeringRequest.objects.exclude(status__in=PeeringRequest.PENDING)
        .select_related("requester_project__organization", "target_project__organization")
        .order_by("-updated_at")[:20]
    )
    return render(
        request,
        "peering/support.html",
        {
            "pending": pending,
            "recent": recent,
            "own_organizations": own,
            "now": timezone.now(),
            "reject_form": RejectForm(),
        },
    )


@login_required
@require_POST
def support_approve(request: HttpRequest, peering_id: int) -> HttpResponse:
    found = get_peering_for_staff(request, peering_id)
    try:
        peering.approve(found, staff=request.user)
    except peering.PeeringRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, "Approved. The worker is connecting both namespaces.")
    return redirect("support-queue")


@login_required
@require_POST
def support_reject(request: HttpRequest, peering_id: int) -> HttpResponse:
    found = get_peering_for_staff(request, peering_id)
    form = RejectForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the customer a reason for the rejection.")
        return redirect("support-queue")
    try:
        peering.reject(found, staff=request.user, reason=form.cleaned_data["reason"])
    except peering.PeeringRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, "Rejected; the customer sees your reason.")
    return redirect("support-queue")
