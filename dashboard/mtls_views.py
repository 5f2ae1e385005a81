"""Mutual TLS pages: the project's page (turn it on, its certificates and CAs, rotate the CA,
followed live), who may call a service, and what the service and Network pages show of it.

Every role sees them: certificates and identities are public. Owners change them
(``Membership.can_manage_mtls``). Nothing here reads a private key: the domain's queries defer
them, and the pages show certificates only.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import service_picker
from dashboard.partials import page_or_part, vary_on_htmx, wants_part
from networking import identity, mtls, mtls_snippets
from networking.access import ProjectAccess, get_project_for_user, get_service_for_user
from networking.forms import CallersForm
from networking.models import (
    Membership,
    MutualTLS,
    Project,
    Service,
    ServiceCertificate,
)

# What a service's page shows about a caller when it has no other service to name.
EXAMPLE_CALLER = "caller"


# -- the project's page ----------------------------------------------------------------------


def _steps(state: MutualTLS) -> list[dict[str, str]]:
    """The CA rotation's phases for display, each "done", "current" or "pending"."""
    order: list[str] = [phase for phase, _, _ in mtls.PHASE_STEPS]
    current = order.index(state.rotation_phase) if state.rotation_phase in order else None
    steps = []
    for index, (phase, title, detail) in enumerate(mtls.PHASE_STEPS):
        if current is None:
            step_state = "pending"
        else:
            step_state = "done" if index < current else "current" if index == current else "pending"
        steps.append({"phase": phase, "title": title, "detail": detail, "state": step_state})
    return steps


def _propagation(state: MutualTLS, now: dt.datetime) -> dict[str, Any]:
    """Where the current phase stands: written to the cluster yet, and how long the kubelet
    still has to put the files in every pod before the phase moves on."""
    if state.phase_applied_at is None:
        return {"applied": False}
    until = state.phase_applied_at + dt.timedelta(seconds=settings.MTLS_PROPAGATION_SECONDS)
    return {
        "applied": True,
        "applied_at": state.phase_applied_at,
        "until": until,
        "remaining": max(0, math.ceil((until - now).total_seconds())),
    }


def _fingerprint(certificate_pem: str) -> str:
    """The certificate's SHA-256 fingerprint, as ``openssl x509 -fingerprint -sha256`` says it."""
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def _authorities(project: Project, state: MutualTLS) -> list[dict[str, Any]]:
    """The project's CAs, oldest first, each with what it does now (public facts only)."""
    authorities = mtls.authorities(project)
    roles = mtls.authority_roles(project, state)
    rows = []
    for authority in authorities:
        rows.append(
            {
                "generation": authority.generation,
                "created_at": authority.created_at,
                "retired_at": authority.retired_at,
                "not_after": authority.not_after,
                "fingerprint": _fingerprint(authority.certificate),
                "pem": authority.certificate,
                "role": roles[authority.generation],
            }
        )
    return rows


def _certificate_rows(project: Project) -> list[dict[str, Any]]:
    """Every service of the project with its certificate, or None while it waits for one."""
    issued = {view.service: view for view in mtls.certificates(project)}
    return [
        {
            "pk": pk,
            "name": name,
            "identity": identity.spiffe_id(project.uid, name),
            "certificate": issued.get(name),
        }
        for pk, name in project.services.order_by("name").values_list("pk", "name")
    ]


def _page_context(access: ProjectAccess, **extra: Any) -> dict[str, Any]:
    project = access.project
    state = mtls.state_of(project)
    if state is None:
        return access.context(
            state=None,
            certificate_hours=settings.MTLS_CERTIFICATE_HOURS,
            example_service=project.services.order_by("name")
            .values_list("name", flat=True)
            .first(),
            **extra,
        )
    authorities = _authorities(project, state)
    return access.context(
        state=state,
        newest=authorities[-1]["generation"] if authorities else None,
        signing=next((ca["generation"] for ca in authorities if ca["role"] == "signing"), None),
        steps=_steps(state),
        propagation=_propagation(state, timezone.now()),
        propagation_seconds=settings.MTLS_PROPAGATION_SECONDS,
        certificate_rows=_certificate_rows(project),
        waiting=mtls.services_without_certificate(project),
        authorities=authorities,
        certificate_hours=settings.MTLS_CERTIFICATE_HOURS,
        **extra,
    )


@login_required
@require_GET
@vary_on_htmx  # the page and its parts share a URL: never cache one as another
def mtls_page(request: HttpRequest, project_uid: str) -> HttpResponse:
    """Off: what mutual TLS gives, and (owners) the switch. On: its status, the services'
    certificates and the CAs; htmx refreshes the CA rotation's card whenever the project
    changes, and every few seconds while a rotation runs, the rest coming out-of-band."""
    access = get_project_for_user(request, project_uid)
    context = _page_context(access, oob=wants_part(request))
    return page_or_part(request, "mtls/page.html", "rotation", context)


@login_required
@require_POST
def mtls_enable(request: HttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    access.require(Membership.can_manage_mtls)
    try:
        enabled = mtls.enable(access.project, actor=request.user)
    except mtls.MTLSRefused as refused:
        messages.error(request, str(refused))
    else:
        if enabled:
            messages.success(
                request,
                "Mutual TLS is on. The cluster issues every service its certificate now; each "
                "workload restarts once to mount its files at /var/run/stackblaze/tls.",
            )
        else:
            messages.info(request, "Mutual TLS was already on: nothing changed.")
    return redirect("project-mtls", project_uid=project_uid)


@login_required
@require_POST
def mtls_rotate_ca(request: HttpRequest, project_uid: str) -> HttpResponse:
    """Start a CA rotation: one click, as it refuses no request and restarts nothing."""
    access = get_project_for_user(request, project_uid)
    access.require(Membership.can_manage_mtls)
    try:
        generation = mtls.start_ca_rotation(access.project, actor=request.user)
    except mtls.MTLSRefused as refused:
        messages.info(request, str(refused))
    else:
        messages.success(
            request,
            f"Started rotating to CA {generation}. No request is refused and nothing restarts: "
            "services first trust the new CA beside the old one, then get certificates from "
            "it, then stop trusting the old one. This page follows it.",
        )
    return redirect("project-mtls", project_uid=project_uid)


# -- who may call a service ------------------------------------------------------------------


def _callers_picker(form: CallersForm, project: Project) -> service_picker.Picker:
    return service_picker.picker(form["services"], project)


@login_required
@require_http_methods(["GET", "POST"])
def service_mtls_callers(request: HttpRequest, project_uid: str, service_id: int) -> HttpResponse:
    """Choose who may call a service over mutual TLS (owners). The service page holds the same
    form; this page is where it comes back with what to fix, and where it works alone."""
    access, service = get_service_for_user(request, project_uid, service_id)
    access.require(Membership.can_manage_mtls)
    if mtls.state_of(access.project) is None:
        messages.info(
            request,
            "Mutual TLS is off for this project: turn it on first, then choose who may call "
            f"{service.name}.",
        )
        return redirect("project-mtls", project_uid=project_uid)
    form = CallersForm(request.POST if request.method == "POST" else None, service=service)
    if request.method == "POST" and form.is_valid():
        every = form.cleaned_data["accept"] == CallersForm.EVERY
        try:
            changed = mtls.set_callers(
                service,
                any_caller=every,
                callers=[] if every else form.cleaned_data["services"],
                actor=request.user,
                expected=form.cleaned_data["version"] or None,
            )
        except Service.DoesNotExist:
            raise Http404("No such service.") from None
        except mtls.MTLSRefused as refused:
            service.refresh_from_db()
            form = CallersForm(service=service)  # what it is now, with why it was not saved
            context = access.context(
                service=service,
                callers_form=form,
                callers_picker=_callers_picker(form, access.project),
                callers_refused=str(refused),
            )
            return render(request, "mtls/callers.html", context)
        if not changed:
            messages.info(request, "Nothing changed.")
        elif every:
            messages.success(request, f"{service.name} accepts calls from every service again.")
        else:
            names = ", ".join(caller.name for caller in form.cleaned_data["services"])
            messages.success(
                request,
                f"{service.name} accepts calls only from {names}. Its accept.txt is updated in "
                "place, without a restart.",
            )
        return redirect(reverse("service-detail", args=[project_uid, service.pk]) + "#mtls")
    context = access.context(
        service=service, callers_form=form, callers_picker=_callers_picker(form, access.project)
    )
    return render(request, "mtls/callers.html", context)


# -- what other pages show -------------------------------------------------------------------


def _example_caller(service: Service, listed: list[str]) -> tuple[str, int]:
    """A caller to name in the snippets: one it accepts, else another service of the project."""
    others = Service.objects.filter(project_id=service.project_id).exclude(pk=service.pk)
    if listed:
        others = others.filter(name__in=listed)
    caller = others.exclude(kind__in=Service.DATABASE_KINDS).order_by("name").first()
    if caller is None:
        return EXAMPLE_CALLER, 8080
    return caller.name, caller.primary_port or 8080  # not shown: a caller's port plays no part


def service_facts(access: ProjectAccess, service: Service) -> dict[str, Any]:
    """What the service page's "Mutual TLS" section shows live: its identity, its certificate
    (None until the cluster issues it) and who may call it."""
    if not MutualTLS.objects.filter(project=access.project).exists():
        return {"mtls_on": False}
    return {
        "mtls_on": True,
        "mtls_identity": identity.spiffe_id(access.project.uid, service.name),
        "mtls_certificate": ServiceCertificate.objects.filter(service=service)
        .select_related("authority")
        .defer("key", "certificate", "authority__key", "authority__certificate")
        .first(),
        # None: every service of the project.
        "mtls_callers": mtls.callers_of([service]).get(service.pk),
    }


def service_section(access: ProjectAccess, service: Service) -> dict[str, Any]:
    """The service page's "Mutual TLS" section: ``service_facts``, the form that chooses who
    may call it (owners) and code that serves and calls over mutual TLS."""
    context = service_facts(access, service)
    if not context["mtls_on"]:
        return context
    listed = context["mtls_callers"]
    if access.membership.can_manage_mtls():
        form = CallersForm(service=service)
        context["callers_form"] = form
        context["callers_picker"] = _callers_picker(form, access.project)
    # Code for a service that serves HTTPS itself: not a database, and listening on a port.
    if not service.is_database and service.primary_port is not None:
        caller, caller_port = _example_caller(service, listed or [])
        context["mtls_caller"] = caller
        context["mtls_snippets"] = mtls_snippets.snippets(
            service.name, service.primary_port, caller, caller_port
        )
    return context


def network_edges(project: Project) -> dict[str, Any]:
    """For the Network page: who may call whom over mutual TLS (the services that restrict
    their callers, each with those it accepts; every other service accepts every service)."""
    if not MutualTLS.objects.filter(project=project).exists():
        return {"mtls_on": False}
    restricted = list(
        project.services.filter(accepts_any_caller=False)
        .only("pk", "name", "accepts_any_caller")
        .order_by("name")
    )
    callers = mtls.callers_of(restricted)
    return {
        "mtls_on": True,
        "mtls_edges": [(service, callers[service.pk]) for service in restricted],
        "mtls_open": project.services.filter(accepts_any_caller=True).count(),
    }
