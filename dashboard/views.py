"""The dashboard's pages. Each view fetches through ``dashboard.access`` and stays short."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import trigger_client_event
from django_htmx.middleware import HtmxDetails

from dashboard import audit_view
from dashboard.access import (
    ProjectAccess,
    get_organization_for_user,
    get_project_for_user,
    get_service_for_user,
    memberships_of,
)
from dashboard.forms import ProjectForm, ServiceForm
from networking import endpoints, naming, peering
from networking.models import ApplyAttempt, AuditEvent, Membership, Project, Service


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Where signing in lands: support staff on their queue, everyone else on their projects."""
    if request.user.is_authenticated and request.user.is_staff:
        return redirect("support-queue")
    return redirect("project-list")


@login_required
@require_GET
def project_list(request: HttpRequest) -> HttpResponse:
    memberships = (
        memberships_of(request)
        .prefetch_related(
            Prefetch("organization__projects", queryset=Project.objects.order_by("name"))
        )
        .order_by("organization__name")
    )
    return render(request, "projects/list.html", {"memberships": memberships})


@login_required
@require_http_methods(["GET", "POST"])
def project_create(request: HttpRequest, org_slug: str) -> HttpResponse:
    organization, membership = get_organization_for_user(request, org_slug)
    if not membership.can_manage_project():
        raise PermissionDenied("Only owners of an organization can create projects.")
    form = ProjectForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            project = organization.create_project(form.cleaned_data["name"], actor=request.user)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(
                request, f"Created {project.name}. Its private network is being set up."
            )
            return redirect("project-overview", project_uid=project.uid)
    return render(request, "projects/create.html", {"form": form, "organization": organization})


@login_required
@require_GET
@vary_on_headers("HX-Request")  # the page and its partial share a URL: never cache one as the other
def project_overview(request: HtmxHttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    services = list(access.project.services.all())
    # htmx refreshes just the table when the cluster catches up.
    template = "projects/overview.html#services-table" if request.htmx else "projects/overview.html"
    return render(request, template, access.context(services=services))


@login_required
@require_GET
def project_sync_status(request: HttpRequest, project_uid: str) -> HttpResponse:
    """The live sync badge, polled by htmx until the cluster has caught up."""
    access = get_project_for_user(request, project_uid)
    response = render(request, "projects/base_project.html#sync-status", access.context())
    previous = request.GET.get("was", "")
    if access.project.in_sync and previous and previous != Project.SyncState.IN_SYNC:
        # Pages listening for this event refresh what the cluster just assigned (ClusterIPs).
        trigger_client_event(response, "cluster-synced")
    return response


@login_required
@require_POST
def project_sync_retry(request: HtmxHttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    access.require(Membership.can_change_services)
    access.project.retry_sync()
    access.project.refresh_from_db()
    if request.htmx:
        return render(request, "projects/base_project.html#sync-status", access.context())
    messages.success(request, "Retrying now.")
    return redirect("project-sync", project_uid=project_uid)


@login_required
@require_GET
def project_sync(request: HttpRequest, project_uid: str) -> HttpResponse:
    """The sync history: recent apply attempts, what they changed and how they ended."""
    access = get_project_for_user(request, project_uid)
    attempts = ApplyAttempt.objects.filter(project=access.project)[: ApplyAttempt.KEEP_PER_PROJECT]
    return render(request, "projects/sync.html", access.context(attempts=attempts))


@login_required
@require_http_methods(["GET", "POST"])
def project_settings(request: HttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    project = access.project
    form = ProjectForm(request.POST if request.method == "POST" else None, instance=project)
    if request.method == "POST":
        access.require(Membership.can_manage_project)
        old_name = project.name
        if form.is_valid():
            try:
                renamed = project.rename(form.cleaned_data["name"], actor=request.user)
            except ValidationError as error:
                form.add_error(None, error)
            else:
                messages.success(
                    request,
                    "Project renamed. Hostnames and the namespace are unchanged."
                    if renamed
                    else "Nothing to save: the project already has that name.",
                )
                return redirect("project-settings", project_uid=project.uid)
        project.name = old_name
    return render(request, "projects/settings.html", access.context(form=form))


@login_required
@require_http_methods(["GET", "POST"])
def project_delete(request: HttpRequest, project_uid: str) -> HttpResponse:
    """Owners delete a project by typing its name; the worker then removes its namespace."""
    access = get_project_for_user(request, project_uid)
    access.require(Membership.can_manage_project)
    project = access.project
    error = ""
    if request.method == "POST":
        typed = request.POST.get("confirm_name", "")
        if typed.strip() != project.name:
            error = f"Type the project’s name, {project.name}, exactly, to delete it."
        else:
            if project.remove(actor=request.user):
                messages.success(
                    request,
                    f"Deleted {project.name}. Its namespace {project.namespace} and everything "
                    "in it are being removed from the cluster.",
                )
            else:
                messages.info(request, f"{project.name} was already deleted.")
            return redirect("project-list")
    return render(
        request,
        "projects/delete.html",
        access.context(
            error=error,
            services=project.services.count(),
            secrets=project.shared_secrets.count(),
            peered=[p.peer_of(project).name for p in peering.connected_peerings(project)],
        ),
    )


@login_required
@require_GET
def audit_log(request: HttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    filters = audit_view.Filters.from_query(request.GET)
    events = filters.apply(AuditEvent.objects.filter(project=access.project))
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    who = (
        AuditEvent.objects.filter(project=access.project)
        .order_by("actor_label")
        .values_list("actor_label", flat=True)
        .distinct()
    )
    return render(
        request,
        "projects/audit.html",
        access.context(
            page=page,
            rows=[
                (event, audit_view.target_text(event), audit_view.details_text(event))
                for event in page
            ],
            filters=filters,
            filter_query=filters.query(),
            groups=[(key, label) for key, (label, _) in audit_view.GROUPS.items()],
            people=list(who[:200]),
        ),
    )


@login_required
@require_GET
def audit_log_csv(request: HttpRequest, project_uid: str) -> StreamingHttpResponse:
    """The filtered log as CSV, every row (streamed, so a long log costs no memory)."""
    access = get_project_for_user(request, project_uid)
    filters = audit_view.Filters.from_query(request.GET)
    events = filters.apply(AuditEvent.objects.filter(project=access.project)).iterator(
        chunk_size=500
    )
    response = StreamingHttpResponse(audit_view.csv_rows(events), content_type="text/csv")
    filename = f"audit-{access.project.uid}-{timezone.now():%Y%m%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
@require_http_methods(["GET", "POST"])
def service_create(request: HttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    access.require(Membership.can_change_services)
    form = ServiceForm(request.POST if request.method == "POST" else None, project=access.project)
    if request.method == "POST" and form.is_valid():
        service = form.instance
        try:
            service.create(actor=request.user)
        except ValidationError as error:  # another request took the name meanwhile
            form.add_error(None, error)
        else:
            messages.success(
                request,
                f"Created {service.display_name}: reachable at "
                f"{service.internal_hostname}:{service.primary_port} inside this project.",
            )
            return redirect("service-detail", project_uid=project_uid, service_id=service.pk)
    return render(request, "services/form.html", access.context(form=form))


@login_required
@require_GET
def service_name_preview(request: HttpRequest, project_uid: str) -> HttpResponse:
    """The live hostname preview under the name field (htmx, as the user types)."""
    access = get_project_for_user(request, project_uid)
    display_name = request.GET.get("display_name", "")[:200]
    service_id = request.GET.get("service", "")
    exclude_pk = int(service_id) if service_id.isdecimal() and len(service_id) < 19 else None
    context: dict[str, Any] = {"display_name": display_name}
    if display_name.strip():
        try:
            name = Service.name_for(access.project.pk, display_name, exclude_pk=exclude_pk)
        except ValidationError as error:
            context["preview_error"] = error.messages[0]
        else:
            context["preview_hostname"] = naming.internal_hostname(name)
            current = (
                access.project.services.filter(pk=exclude_pk).values_list("name", flat=True).first()
                if exclude_pk is not None
                else None
            )
            if current is not None and current != name:
                context["old_hostname"] = naming.internal_hostname(current)
    return render(request, "services/form.html#name-preview", context)


def _service_context(
    access: ProjectAccess, service: Service, *, revealed: bool = False, **extra: Any
) -> dict[str, Any]:
    return access.context(
        service=service,
        endpoints=endpoints.endpoints(
            service, reveal=revealed, names=endpoints.project_env_names(service)
        ),
        snippets=endpoints.code_snippets(service),
        revealed=revealed,
        **extra,
    )


@login_required
@require_GET
@vary_on_headers("HX-Request")
def service_detail(request: HtmxHttpRequest, project_uid: str, service_id: int) -> HttpResponse:
    access, service = get_service_for_user(request, project_uid, service_id)
    # htmx refreshes just the endpoints panel when the cluster assigns the ClusterIP.
    template = "services/detail.html#endpoints" if request.htmx else "services/detail.html"
    return render(request, template, _service_context(access, service))


@login_required
@require_POST
@never_cache
def service_reveal(request: HtmxHttpRequest, project_uid: str, service_id: int) -> HttpResponse:
    """Show a database's password: an explicit, audited POST; never cached."""
    access, service = get_service_for_user(request, project_uid, service_id)
    access.require(Membership.can_reveal_credentials)
    if not service.is_database:
        return render(
            request,
            "400.html",
            {"exception": f"{service.display_name} has no credentials to reveal."},
            status=400,
        )
    access.project.audit(
        actor=request.user,
        action=AuditEvent.Action.CREDENTIALS_REVEALED,
        target=service.name,
    )
    context = _service_context(access, service, revealed=True)
    template = "services/detail.html#endpoints" if request.htmx else "services/detail.html"
    return render(request, template, context)


@login_required
@require_http_methods(["GET", "POST"])
def service_edit(request: HttpRequest, project_uid: str, service_id: int) -> HttpResponse:
    access, service = get_service_for_user(request, project_uid, service_id)
    access.require(Membership.can_change_services)
    original_hostname = service.internal_hostname  # before the form writes the new name on it
    form = ServiceForm(
        request.POST if request.method == "POST" else None, instance=service, project=access.project
    )
    if request.method == "POST" and form.is_valid():
        try:
            service.save_changes(actor=request.user)
        except Service.DoesNotExist:
            raise Http404("No such service.") from None
        except IntegrityError:
            form.add_error("display_name", f"{service.internal_hostname} was just taken.")
        else:
            messages.success(
                request, f"Saved. {service.display_name} is at {service.internal_hostname}."
            )
            return redirect("service-detail", project_uid=project_uid, service_id=service.pk)
    return render(
        request,
        "services/form.html",
        access.context(form=form, service=service, original_hostname=original_hostname),
    )


@login_required
@require_http_methods(["GET", "POST"])
def service_delete(request: HttpRequest, project_uid: str, service_id: int) -> HttpResponse:
    access, service = get_service_for_user(request, project_uid, service_id)
    access.require(Membership.can_change_services)
    if request.method == "POST":
        if service.remove(actor=request.user):
            messages.success(
                request, f"Deleted {service.display_name}; {service.internal_hostname} is released."
            )
        else:
            messages.info(request, f"{service.display_name} was already deleted.")
        return redirect(reverse("project-overview", kwargs={"project_uid": project_uid}))
    return render(request, "services/delete.html", access.context(service=service))


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return render(
        request,
        "403.html",
        {
            "exception": "This form has expired or was not sent from this site. "
            "Reload the page and try again; nothing was changed."
        },
        status=403,
    )
