"""The dashboard's pages. Each view fetches through ``networking.access`` and stays short."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

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
from django.utils.dateparse import parse_datetime
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import trigger_client_event
from django_htmx.middleware import HtmxDetails

from dashboard import mtls_views, network_drawing, service_list, service_picker
from dashboard.partials import page_or_part, vary_on_htmx, wants_part
from networking import audit_trail, connection_tests, endpoints, live, naming, peering, references
from networking.access import (
    ProjectAccess,
    get_alias_for_user,
    get_organization_for_user,
    get_project_for_user,
    get_reference_for_user,
    get_service_for_user,
    memberships_of,
)
from networking.forms import ProjectForm, ReferenceForm, ServiceForm
from networking.models import (
    ApplyAttempt,
    AuditEvent,
    ConnectionTest,
    Membership,
    Project,
    Service,
    ServiceAlias,
)
from networking.network_map import ProjectNetwork


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
@vary_on_htmx  # the page and its parts share a URL: never cache one as another
def project_overview(request: HtmxHttpRequest, project_uid: str) -> HttpResponse:
    """The project's services, a page at a time, searchable and sortable (``service_list``).

    htmx asks for the table alone when a filter changes, and, on ``project-changed``, for what
    changed since the revision it shows: then only the rows that changed come back (out of
    band), or the whole table if the page now holds other rows.
    """
    access = get_project_for_user(request, project_uid)
    project = access.project
    filters = service_list.Filters.from_query(request.GET)
    page = Paginator(
        filters.apply(project.services.prefetch_related("aliases"), project.applied_generation),
        service_list.PAGE_SIZE,
    ).get_page(request.GET.get("page"))
    services = list(page.object_list)
    context = access.context(
        page=page,
        services=services,
        shown=",".join(str(service.pk) for service in services),
        total=page.paginator.count if not filters.active else project.services.count(),
        filters=filters,
        filter_query=filters.query_string(),
        page_query=urlencode(
            {**filters.params(), **({"page": str(page.number)} if page.number > 1 else {})}
        ),
        sort_links={column: filters.sort_link(column) for column in ("name", "kind", "address")},
        aria_sort={column: filters.sorted_by(column) for column in ("name", "kind", "address")},
        kinds=Service.Kind.choices,
        status_choices=service_list.STATUS_CHOICES.items(),
    )
    if wants_part(request) and "since" in request.GET:
        since = _int_or_none(request.GET.get("since", ""))
        shown = request.GET.get("shown", "")
        context["oob"] = True
        if since is None or shown != context["shown"]:
            # Rows came or went (or the page is not the one the browser shows): the table.
            return render(request, "projects/overview.html#services-table", context)
        context["changed"] = [service for service in services if service.revision > since]
        return render(request, "projects/overview.html#live-rows", context)
    return page_or_part(request, "projects/overview.html", "services-table", context)


@login_required
@require_GET
@vary_on_htmx
def project_network(request: HtmxHttpRequest, project_uid: str) -> HttpResponse:
    """Who can reach whom: a map drawn from the project's desired NetworkPolicies, with the
    same as a table beside it; htmx asks for both again when the project changes."""
    access = get_project_for_user(request, project_uid)
    network = ProjectNetwork.load(access.project)
    return page_or_part(
        request,
        "projects/network.html",
        "network",
        access.context(
            network=network,
            rows=network.rows(),
            drawing=network_drawing.draw(network),
            **mtls_views.network_edges(access.project),
        ),
    )


def _int_or_none(text: str) -> int | None:
    return int(text) if text.isdecimal() and len(text) < 19 else None


@login_required
@require_GET
def project_live(request: HttpRequest, project_uid: str) -> HttpResponse:
    """Polled every few seconds by each open project page: has anything changed since ``since``?

    "No" is an empty 204, which htmx leaves alone: from the cache when it can say so
    (``LivePollMiddleware``), else after one indexed query (the project with the caller's
    membership), which lets the cache answer this session's next polls. "Yes" brings the
    sync badge and a new poll (out of band) and the ``project-changed`` event, on which each
    part of the page fetches what it shows.
    """
    since = _int_or_none(request.GET.get("since", ""))
    found = (
        memberships_of(request)
        .filter(organization__projects__uid=project_uid)
        .values_list("organization__projects__pk", "organization__projects__revision")
        .first()
    )
    if found is None:
        raise Http404("No such project.")
    project_id, revision = found
    # The next poll of this session can be answered from the cache (``LivePollMiddleware``).
    live.seen(request.session.session_key, project_uid, project_id, revision)
    if since == revision:
        return HttpResponse(status=204)
    access = get_project_for_user(request, project_uid)
    response = render(request, "projects/base_project.html#live", access.context(oob=True))
    return trigger_client_event(response, "project-changed", {"revision": revision})


@login_required
@require_POST
def project_sync_retry(request: HtmxHttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    access.require(Membership.can_change_services)
    access.project.retry_sync()
    access.project.refresh_from_db()
    if wants_part(request):
        return render(request, "projects/base_project.html#sync-status", access.context())
    messages.success(request, "Retrying now.")
    return redirect("project-sync", project_uid=project_uid)


@login_required
@require_GET
@vary_on_htmx
def project_sync(request: HtmxHttpRequest, project_uid: str) -> HttpResponse:
    """The sync history: recent apply attempts, what they changed and how they ended."""
    access = get_project_for_user(request, project_uid)
    attempts = ApplyAttempt.objects.filter(project=access.project)[: ApplyAttempt.KEEP_PER_PROJECT]
    return page_or_part(
        request, "projects/sync.html", "sync-history", access.context(attempts=attempts)
    )


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
            except Project.DoesNotExist:
                messages.error(request, f"{old_name} was deleted meanwhile: nothing was renamed.")
                return redirect("home")
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
@vary_on_htmx
def audit_log(request: HtmxHttpRequest, project_uid: str) -> HttpResponse:
    access = get_project_for_user(request, project_uid)
    filters = audit_trail.Filters.from_query(request.GET)
    events = filters.apply(AuditEvent.objects.filter(project=access.project))
    if filters.errors:
        # The form says what is wrong beside the field; a list the dates did not filter would
        # look like an answer.
        events = events.none()
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    who = (
        AuditEvent.objects.filter(project=access.project)
        .order_by("actor_label")
        .values_list("actor_label", flat=True)
        .distinct()
    )
    return page_or_part(
        request,
        "projects/audit.html",
        "audit-rows",
        access.context(
            page=page,
            rows=[
                (event, audit_trail.target_text(event), audit_trail.details_text(event))
                for event in page
            ],
            filters=filters,
            filter_query=filters.query(),
            groups=[(key, label) for key, (label, _) in audit_trail.GROUPS.items()],
            people=list(who[:200]),
        ),
    )


@login_required
@require_GET
def audit_log_csv(request: HttpRequest, project_uid: str) -> HttpResponse | StreamingHttpResponse:
    """The filtered log as CSV, every row (streamed, so a long log costs no memory)."""
    access = get_project_for_user(request, project_uid)
    filters = audit_trail.Filters.from_query(request.GET)
    if filters.errors:
        # A file of every row would pass for the filtered one: refuse, saying what to fix.
        words = {"since": "From (since)", "until": "To (until)"}
        refusal = " ".join(f"{words[key]}: {error}" for key, error in filters.errors.items())
        return HttpResponse(refusal, status=400, content_type="text/plain; charset=utf-8")
    events = filters.apply(AuditEvent.objects.filter(project=access.project)).iterator(
        chunk_size=500
    )
    response = StreamingHttpResponse(audit_trail.csv_rows(events), content_type="text/csv")
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
        except ValidationError as error:
            # Another request took the name (or kept it as an old hostname) meanwhile.
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
    if "reference_form" not in extra and references.can_be_used(service):
        extra["reference_form"] = ReferenceForm(source=service)
    if extra.get("reference_form") is not None:
        extra["consumers_picker"] = service_picker.picker(
            extra["reference_form"]["consumers"], access.project, exclude=service
        )
    return access.context(
        service=service,
        endpoints=endpoints.endpoints(
            service, reveal=revealed, names=endpoints.project_env_names(service)
        ),
        # Callers send the service's shared secret (if it checks one) where verifiers look.
        snippets=endpoints.code_snippets(
            service, service.shared_secrets.order_by("name").values_list("name", flat=True).first()
        ),
        aliases=list(service.aliases.all()),
        used_by=list(service.used_by.select_related("consumer").order_by("consumer__name")),
        receives=list(service.references.select_related("source").order_by("variable")),
        notes=endpoints.notes(service),
        revealed=revealed,
        connection_test=connection_tests.latest(service.pk),
        **extra,
    )


def _reach_context(project: Project, service: Service) -> dict[str, Any]:
    """Who can reach the service and what it can reach, from the project's desired policies."""
    network = ProjectNetwork.for_service(project, service)
    return {
        "who_reaches": network.who_reaches(service.name),
        "reaches": network.reaches(service.name),
        "egress_limited": network.egress_limited(service.name),
        "reach_drift": network.drift_about(service.name),
    }


@login_required
@require_GET
def service_choices(request: HttpRequest, project_uid: str) -> HttpResponse:
    """The search of a service picker (see ``dashboard/service_picker.py``): what was ticked
    in its list, still ticked, then the first other services whose name matches ``q``."""
    access = get_project_for_user(request, project_uid)
    field = request.GET.get("field") or "services"
    if field not in ("consumers", "services"):
        raise Http404("No such choice.")
    queryset = Service.objects.filter(project=access.project)
    exclude = _int_or_none(request.GET.get("exclude", ""))
    if exclude is not None:
        queryset = queryset.exclude(pk=exclude)
    picked_ids = service_picker.ids_in(request.GET.getlist(field))
    picked = list(queryset.filter(pk__in=picked_ids).order_by("name")) if picked_ids else []
    # The secret's receivers are listed above the search already: not again among matches.
    secret = _int_or_none(request.GET.get("secret", ""))
    if secret is not None:
        queryset = queryset.exclude(shared_secrets__pk=secret)
    query = request.GET.get("q", "")[:100]
    found, more = service_picker.matches(
        queryset, query, leaving_out=[service.pk for service in picked]
    )
    picker = service_picker.Picker(
        name=field, inline=False, picked=picked, matches=found, more=more, query=query
    )
    return render(request, "includes/service_picker.html#picker-matches", {"picker": picker})


@login_required
@require_GET
@vary_on_htmx
def service_detail(request: HtmxHttpRequest, project_uid: str, service_id: int) -> HttpResponse:
    access, service = get_service_for_user(request, project_uid, service_id)
    if wants_part(request) and request.GET.get("part") == "reach":
        context = access.context(service=service, **_reach_context(access.project, service))
        return render(request, "services/detail.html#reach", context)
    if wants_part(request) and request.GET.get("part") == "mtls":
        context = access.context(service=service, **mtls_views.service_facts(access, service))
        return render(request, "mtls/service_section.html#facts", context)
    # htmx refreshes just the endpoints panel when the cluster assigns the ClusterIP.
    if wants_part(request):
        return render(request, "services/detail.html#endpoints", _service_context(access, service))
    return _service_page(request, access, service)


def _service_page(
    request: HttpRequest, access: ProjectAccess, service: Service, **extra: Any
) -> HttpResponse:
    """The whole service page, "who can reach me" included, whichever view answers with it."""
    context = _service_context(
        access,
        service,
        **extra,
        **_reach_context(access.project, service),
        **mtls_views.service_section(access, service),
    )
    return render(request, "services/detail.html", context)


@login_required
@require_http_methods(["GET", "POST"])
@vary_on_htmx
def service_connection_test(
    request: HtmxHttpRequest, project_uid: str, service_id: int
) -> HttpResponse:
    """Start a "Test connection" (members and owners), or show how the latest one stands.

    The result panel polls this while the test runs, and stops once it has finished.
    """
    access, service = get_service_for_user(request, project_uid, service_id)
    already_running = False
    if request.method == "POST":
        access.require(Membership.can_change_services)
        _, created = ConnectionTest.start(service, actor=request.user)
        already_running = not created
    if not wants_part(request):
        if already_running:
            messages.info(request, "A test of this service is already running: its result follows.")
        return redirect(
            reverse("service-detail", args=[project_uid, service_id]) + "#connection-test"
        )
    context = access.context(
        service=service,
        connection_test=connection_tests.latest(service.pk),
        already_running=already_running,
    )
    return render(request, "services/detail.html#connection-test", context)


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
    if wants_part(request):
        context = _service_context(access, service, revealed=True)
        return render(request, "services/detail.html#endpoints", context)
    return _service_page(request, access, service, revealed=True)


@login_required
@require_http_methods(["GET", "POST"])
def service_edit(request: HttpRequest, project_uid: str, service_id: int) -> HttpResponse:
    access, service = get_service_for_user(request, project_uid, service_id)
    access.require(Membership.can_change_services)
    original_name = service.name  # before the form writes the new name on it
    original_hostname = service.internal_hostname
    form = ServiceForm(
        request.POST if request.method == "POST" else None, instance=service, project=access.project
    )
    if request.method == "POST" and form.is_valid():
        try:
            changed = service.save_changes(actor=request.user, keep_old_name_for=form.keep_old_name)
        except Service.DoesNotExist:
            raise Http404("No such service.") from None
        except ValidationError as error:
            form.add_error("display_name", error)
        except IntegrityError:
            form.add_error("display_name", f"{service.internal_hostname} was just taken.")
        else:
            kept = service.aliases.filter(name=original_name).first() if "name" in changed else None
            messages.success(
                request,
                f"Saved. {service.display_name} is at {service.internal_hostname}"
                + (
                    f"; {original_hostname} keeps resolving until "
                    f"{kept.expires_at:%Y-%m-%d %H:%M} UTC."
                    if kept is not None
                    else "."
                ),
            )
            return redirect("service-detail", project_uid=project_uid, service_id=service.pk)
    return render(
        request,
        "services/form.html",
        access.context(form=form, service=service, original_hostname=original_hostname),
    )


@login_required
@require_POST
def service_reference_add(request: HttpRequest, project_uid: str, service_id: int) -> HttpResponse:
    """Give chosen services this one's address (connection string or URL) as a variable."""
    access, service = get_service_for_user(request, project_uid, service_id)
    access.require(Membership.can_change_services)
    form = ReferenceForm(request.POST, source=service)
    if form.is_valid():
        try:
            made = references.add(
                service,
                form.cleaned_data["consumers"],
                form.cleaned_data["variable"],
                actor=request.user,
            )
        except ValidationError as error:
            by_field = error.message_dict if hasattr(error, "error_dict") else {"": error.messages}
            for field, problems in by_field.items():
                form.add_error(field if field in form.fields else None, problems)
        else:
            given = ", ".join(f"{r.consumer.name} as {r.variable}" for r in made)
            messages.success(
                request,
                f"{service.name}’s address goes to {given}; each restarts once to pick it up.",
            )
            return redirect("service-detail", project_uid=project_uid, service_id=service.pk)
    return _service_page(request, access, service, reference_form=form)


@login_required
@require_POST
def service_reference_remove(
    request: HttpRequest, project_uid: str, service_id: int, reference_id: int
) -> HttpResponse:
    """Take a reference variable back from its consumer (which restarts once without it)."""
    access, service, reference = get_reference_for_user(
        request, project_uid, service_id, reference_id
    )
    access.require(Membership.can_change_services)
    if references.remove(reference, actor=request.user):
        messages.success(
            request,
            f"{reference.consumer.name} no longer gets {reference.variable}; it restarts once "
            "without it.",
        )
    else:
        messages.info(request, f"{reference.consumer.name} no longer had {reference.variable}.")
    return redirect("service-detail", project_uid=project_uid, service_id=service.pk)


@login_required
@require_POST
def service_alias_extend(
    request: HttpRequest, project_uid: str, service_id: int, alias_id: int
) -> HttpResponse:
    """Keep a renamed service's old hostname resolving a day longer."""
    access, alias = get_alias_for_user(request, project_uid, service_id, alias_id)
    access.require(Membership.can_change_services)
    try:
        seen = parse_datetime(request.POST.get("seen", "")[:40])
    except ValueError:  # shaped like a date, but not one (month 13)
        seen = None
    try:
        extended = alias.extend(actor=request.user, seen=seen)
    except ServiceAlias.DoesNotExist:
        messages.info(
            request,
            f"{alias.internal_hostname} no longer resolves: it was ended or expired meanwhile. "
            "Rename the service back to use that name again.",
        )
        return redirect("service-detail", project_uid=project_uid, service_id=service_id)
    until = f"{alias.expires_at:%Y-%m-%d %H:%M} UTC"
    if extended:
        messages.success(request, f"{alias.internal_hostname} now resolves until {until}.")
    else:
        messages.info(
            request,
            f"{alias.internal_hostname} resolves until {until}: it was extended (or the page "
            "was out of date), so nothing changed.",
        )
    return redirect("service-detail", project_uid=project_uid, service_id=service_id)


@login_required
@require_POST
def service_alias_end(
    request: HttpRequest, project_uid: str, service_id: int, alias_id: int
) -> HttpResponse:
    """Stop a renamed service's old hostname resolving now (owners)."""
    access, alias = get_alias_for_user(request, project_uid, service_id, alias_id)
    access.require(Membership.can_manage_project)
    if alias.end(actor=request.user):
        messages.success(
            request,
            f"{alias.internal_hostname} stops resolving as the cluster catches up; the name is "
            "free for another service.",
        )
    else:
        messages.info(request, f"{alias.internal_hostname} had already stopped resolving.")
    return redirect("service-detail", project_uid=project_uid, service_id=service_id)


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
