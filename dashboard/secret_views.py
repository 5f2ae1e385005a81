"""Shared secrets: create, attach, reveal (audited), rotate without downtime, delete.

Owners do everything; members see names, receiving services and rotations; viewers see names.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import service_picker
from dashboard.partials import page_or_part, vary_on_htmx, wants_part
from dashboard.views import HtmxHttpRequest
from networking import endpoints, rotation
from networking.access import ProjectAccess, get_project_for_user, get_secret_for_user
from networking.forms import RotateForm, SharedSecretForm
from networking.models import AuditEvent, Membership, Service, SharedSecret


@login_required
@require_GET
@vary_on_htmx
def secret_list(request: HtmxHttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    secrets = access.project.shared_secrets.all()
    if access.membership.can_see_secret_details():
        secrets = secrets.prefetch_related("services")
    # htmx refreshes just the table whenever the project changes (the header's poll).
    return page_or_part(
        request, "secrets/list.html", "secrets-table", access.context(secrets=secrets)
    )


@login_required
@require_http_methods(["GET", "POST"])
def secret_create(request: HtmxHttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    access.require(Membership.can_manage_secrets)
    form = SharedSecretForm(
        request.POST if request.method == "POST" else None, project=access.project
    )
    if request.method == "POST" and form.is_valid():
        secret = form.save(commit=False)
        try:
            secret.create(form.cleaned_data["services"], actor=request.user)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(
                request,
                f"Created {secret.name}. The services that receive it restart once to pick it up.",
            )
            return redirect("secret-detail", project_uid=project_uid, secret_id=secret.pk)
    picker = service_picker.picker(form["services"], access.project)
    return render(request, "secrets/form.html", access.context(form=form, services_picker=picker))


def _calling(secret: SharedSecret, receivers: list[Service]) -> dict[str, Any]:
    """Code that calls a service that checks the secret, sending it; empty if none can be
    called (no receiver, or only databases)."""
    for service in receivers:
        snippets = endpoints.code_snippets(service, secret.name)
        if snippets:
            return {"service": service, "snippets": snippets}
    return {}


def _detail_context(access: ProjectAccess, secret: SharedSecret, **extra: Any) -> dict[str, Any]:
    receivers = list(secret.services.order_by("name"))
    count = rotation.rotation_count(secret)
    return access.context(
        secret=secret,
        receivers=[
            {
                "service": service,
                "version": service.secret_version(secret.name),
                "workload": service.workload,
            }
            for service in receivers
        ],
        steps=rotation.phase_steps(secret),
        rotation_count=count,
        # Numbered as people count them, newest first: "Rotation 3", not version 10.
        rotations=[(count - index, item) for index, item in enumerate(secret.rotations.all()[:10])],
        snippets=rotation.verifier_snippets(secret.name),
        calling=_calling(secret, receivers),
        **extra,
    )


@login_required
@require_GET
@vary_on_htmx  # the page and its parts share a URL: never cache one as another
def secret_detail(request: HtmxHttpRequest, project_uid: str, secret_id: int) -> HttpResponse:
    access, secret = get_secret_for_user(request, project_uid, secret_id)
    access.require(Membership.can_see_secret_details)
    # htmx refreshes the rotation's progress whenever the project changes (header's poll); the
    # page's head and its list of rotations come with it, out-of-band.
    context = _detail_context(access, secret, oob=wants_part(request))
    return page_or_part(request, "secrets/detail.html", "rotation", context)


@login_required
@require_http_methods(["GET", "POST"])
def secret_edit(request: HtmxHttpRequest, project_uid: str, secret_id: int) -> HttpResponse:
    access, secret = get_secret_for_user(request, project_uid, secret_id)
    access.require(Membership.can_manage_secrets)
    form = SharedSecretForm(
        request.POST if request.method == "POST" else None, instance=secret, project=access.project
    )
    if request.method == "POST" and form.is_valid():
        try:
            changed = secret.change_receivers(
                form.cleaned_data["services"],
                form.cleaned_data["rotate_every_days"],
                actor=request.user,
            )
        except SharedSecret.DoesNotExist:
            raise Http404("No such secret.") from None
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, f"Saved {secret.name}." if changed else "Nothing changed.")
            return redirect("secret-detail", project_uid=project_uid, secret_id=secret.pk)
    picker = service_picker.picker(form["services"], access.project, secret=secret.pk)
    context = access.context(form=form, secret=secret, services_picker=picker)
    return render(request, "secrets/form.html", context)


@login_required
@require_POST
@never_cache
def secret_reveal(request: HtmxHttpRequest, project_uid: str, secret_id: int) -> HttpResponse:
    """Show the value: an explicit, audited POST, owners only, never cached."""
    access, secret = get_secret_for_user(request, project_uid, secret_id)
    access.require(Membership.can_manage_secrets)
    access.project.audit(
        actor=request.user, action=AuditEvent.Action.SECRET_REVEALED, target=secret.name
    )
    context = _detail_context(access, secret, revealed=rotation.environment(secret))
    return page_or_part(request, "secrets/detail.html", "value", context)


@login_required
@require_http_methods(["GET", "POST"])
def secret_rotate(request: HtmxHttpRequest, project_uid: str, secret_id: int) -> HttpResponse:
    """Start a rotation: one click (the secret page's Rotate button posts here with no value,
    and a random one is generated). A rotation refuses no request, so it asks for nothing;
    the GET page is only for rotating to a value of one's own."""
    access, secret = get_secret_for_user(request, project_uid, secret_id)
    access.require(Membership.can_manage_secrets)
    form = RotateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            rotation.start_rotation(
                secret, actor=request.user, new_value=form.cleaned_data["value"] or None
            )
        except rotation.RotationRefused as refused:
            messages.info(request, str(refused))
        else:
            messages.success(
                request,
                f"Started rotation {rotation.rotation_count(secret)} of {secret.name}. No request "
                "is refused: services first accept the new value, then send it, and the old "
                "value is retired after the grace window. This page follows it.",
            )
        return redirect("secret-detail", project_uid=project_uid, secret_id=secret.pk)
    return render(request, "secrets/rotate.html", access.context(form=form, secret=secret))


@login_required
@require_POST
def secret_end_grace(request: HttpRequest, project_uid: str, secret_id: int) -> HttpResponse:
    """End a rotation's grace window now: the old value is retired at once."""
    access, secret = get_secret_for_user(request, project_uid, secret_id)
    access.require(Membership.can_manage_secrets)
    if rotation.end_grace(secret, actor=request.user):
        messages.success(
            request,
            f"Ended the grace window: the services restart without the old value of "
            f"{secret.name}, which is refused from now on.",
        )
    else:
        messages.info(request, f"{secret.name} has no grace window running any more.")
    return redirect("secret-detail", project_uid=project_uid, secret_id=secret.pk)


@login_required
@require_http_methods(["GET", "POST"])
def secret_delete(request: HtmxHttpRequest, project_uid: str, secret_id: int) -> HttpResponse:
    access, secret = get_secret_for_user(request, project_uid, secret_id)
    access.require(Membership.can_manage_secrets)
    if request.method == "POST":
        if secret.remove(actor=request.user):
            messages.success(
                request,
                f"Deleted {secret.name}; the services that received it restart without it.",
            )
        else:
            messages.info(request, f"{secret.name} was already deleted.")
        return redirect("secret-list", project_uid=project_uid)
    return render(request, "secrets/delete.html", access.context(secret=secret))
