"""The API's operations. Each one fetches through ``networking.access``, validates with the
dashboard's own forms and calls the same domain function as the page does.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError
from django.db.models import Count, Q
from django.http import Http404, HttpRequest
from django.utils import timezone
from django.views.decorators.cache import never_cache
from ninja import Router, Schema, Status
from ninja.decorators import decorate_view
from ninja.params.functions import Path, Query
from pydantic import AfterValidator, BeforeValidator, Field

from api import schemas
from api.auth import token_of
from api.idempotency import idempotent
from api.problems import Problem, form_invalid, invalid
from networking import audit_trail, endpoints, mtls, naming, peering, references, rotation
from networking.access import (
    ProjectAccess,
    capped_memberships,
    get_alias_for_user,
    get_peering_for_staff,
    get_peering_for_user,
    get_project_for_user,
    get_reference_for_user,
    get_secret_for_user,
    get_service_for_user,
    require_support_staff,
)
from networking.forms import (
    PeeringRequestForm,
    ProjectForm,
    ReferenceForm,
    RejectForm,
    RotateForm,
    ServiceForm,
    SharedSecretForm,
)
from networking.models import (
    ALIAS_DEFAULT,
    PROJECT_ID_PATTERN,
    ApplyAttempt,
    AuditEvent,
    ConnectionTest,
    Membership,
    PeeringRequest,
    Project,
    Service,
    ServiceAlias,
    SharedSecret,
)

router = Router()

ERRORS: dict[int, Any] = dict.fromkeys((400, 401, 403, 404, 409, 413, 422, 429), schemas.ProblemOut)
# The API calls a service's name what the form calls its display name.
SERVICE_FIELDS = {"display_name": "name"}
_PROJECT_ID = re.compile(PROJECT_ID_PATTERN)
# Query text: no control characters (a NUL byte never reaches a query).
_PLAIN = r"^[^\x00-\x1f\x7f]*$"
_MAX_ID = 2**63 - 1
_SERVICE_NAME = re.compile(naming.DISPLAY_NAME_PATTERN)
_DNS_LABEL = re.compile(r"[a-z0-9-]{1,63}")

# Anything else is no such project (404), as an ID of another organization's project is.
ProjectId = Annotated[
    str,
    schemas.Shown({"pattern": f"^{PROJECT_ID_PATTERN}$"}),
    Path(description="The project ID, as on its Settings page"),
]
ObjectId = Annotated[int, Path(ge=1, le=_MAX_ID)]
mutating = decorate_view(idempotent)
revealing = decorate_view(never_cache)


def _check_project_id(project_id: str) -> None:
    """A project ID as the dashboard makes them; anything else (a NUL byte too) is a 404."""
    if not _PROJECT_ID.fullmatch(project_id):
        raise Http404("No such project.")


def _project(request: HttpRequest, project_id: str) -> ProjectAccess:
    _check_project_id(project_id)
    return get_project_for_user(request, project_id)


# A clash with what exists (a taken name) is a conflict; anything else is invalid input.
_CLASH_FIELDS = frozenset({"name", "display_name", "consumers", "__all__"})
# Taken by a service, or kept by a renamed service's old hostname that still resolves.
CLASH_CODES = frozenset({"duplicate", "reserved"})


def _raise_invalid(error: ValidationError, fields: dict[str, str] | None = None) -> None:
    problem = invalid(error, fields=fields)
    if hasattr(error, "error_dict"):
        codes = {
            item.code
            for field, items in error.error_dict.items()
            if field in _CLASH_FIELDS
            for item in items
        }
    else:
        codes = {item.code for item in error.error_list}
    if codes & CLASH_CODES:
        problem.status = 409
    raise problem


def _conflict(error: ValidationError) -> Problem:
    """What a domain function refuses after the form took the input: the project as it is
    (a name taken meanwhile, a receiver that already gets that variable), a conflict (409)."""
    problem = invalid(error)
    problem.status = 409
    return problem


def _form_problem(form: Any, fields: dict[str, str] | None = None) -> Problem:
    """The form's errors, each field's messages as the page shows them (409 for a clash)."""
    problem = form_invalid(form.errors, fields=fields)
    codes = {
        error.code
        for field, errors in form.errors.as_data().items()
        if field in _CLASH_FIELDS
        for error in errors
    }
    if codes & CLASH_CODES:
        problem.status = 409
    return problem


# -- Who am I ----------------------------------------------------------------------------------


@router.get("/me", response={200: schemas.MeOut, **ERRORS}, tags=["account"], operation_id="me")
def me(request: HttpRequest) -> schemas.MeOut:
    """The caller: the token's holder, organization and role (what `stackblaze login` checks)."""
    token = token_of(request)
    membership = token.membership() if token is not None else None
    return schemas.MeOut(
        username=request.user.get_username(),
        organization=token.organization.slug if token and token.organization else None,
        role=membership.role if membership else (token.role if token else None),
        token=token.name if token else None,
        support=bool(request.user.is_staff and (token is None or token.role == "support")),
    )


# -- Projects ----------------------------------------------------------------------------------


@router.get(
    "/projects",
    response={200: list[schemas.ProjectOut], **ERRORS},
    tags=["projects"],
    operation_id="list_projects",
)
def list_projects(request: HttpRequest) -> list[schemas.ProjectOut]:
    """Every project the caller can see (a token: those of its organization)."""
    memberships = {m.organization_id: m for m in capped_memberships(request)}
    projects = (
        Project.objects.filter(organization_id__in=list(memberships))
        .select_related("organization")
        .order_by("organization__name", "name")
    )
    return [
        schemas.from_project(project, memberships[project.organization_id]) for project in projects
    ]


@router.get(
    "/projects/{project_id}",
    response={200: schemas.ProjectOut, **ERRORS},
    tags=["projects"],
    operation_id="get_project",
)
def get_project(request: HttpRequest, project_id: ProjectId) -> schemas.ProjectOut:
    access = _project(request, project_id)
    return schemas.from_project(access.project, access.membership)


def _organization_for_new_project(request: HttpRequest, slug: str | None) -> Membership:
    memberships = capped_memberships(request)
    if slug is not None:
        for membership in memberships:
            if membership.organization.slug == slug:
                return membership
        raise Problem(
            403,
            f"You belong to no organization “{slug[:50]}”.",
            errors={"organization": [f"You belong to no organization “{slug[:50]}”."]},
        )
    if not memberships:
        raise PermissionDenied("You belong to no organization, so there is none to create it in.")
    if len(memberships) != 1:
        # A browser session of someone in several: the document can't say which to give.
        slugs = ", ".join(sorted(m.organization.slug for m in memberships)) or "none"
        raise Problem(
            422,
            "Say which organization the project is for.",
            errors={"organization": [f"Give one of your organizations: {slugs}."]},
        )
    return memberships[0]


@router.post(
    "/projects",
    response={201: schemas.ProjectOut, **ERRORS},
    tags=["projects"],
    operation_id="create_project",
)
@mutating
def create_project(
    request: HttpRequest, payload: schemas.ProjectCreateIn
) -> Status[schemas.ProjectOut]:
    """A new project (owners): its namespace and network policies are set up by the worker."""
    membership = _organization_for_new_project(request, payload.organization)
    if not membership.can_manage_project():
        raise PermissionDenied("Only owners of an organization can create projects.")
    form = ProjectForm({"name": payload.name})
    if not form.is_valid():
        raise _form_problem(form)
    try:
        project = membership.organization.create_project(
            form.cleaned_data["name"], actor=request.user
        )
    except ValidationError as error:
        _raise_invalid(error)
    return Status(201, schemas.from_project(project, membership))


@router.patch(
    "/projects/{project_id}",
    response={200: schemas.ProjectOut, **ERRORS},
    tags=["projects"],
    operation_id="rename_project",
)
@mutating
def rename_project(
    request: HttpRequest, payload: schemas.ProjectChangeIn, project_id: ProjectId
) -> schemas.ProjectOut:
    """Rename the project (owners). Hostnames, the namespace and the ID stay as they are."""
    access = _project(request, project_id)
    access.require(Membership.can_manage_project)
    form = ProjectForm({"name": payload.name}, instance=access.project)
    if not form.is_valid():
        raise _form_problem(form)
    try:
        access.project.rename(form.cleaned_data["name"], actor=request.user)
    except Project.DoesNotExist:
        raise Http404("No such project.") from None
    except ValidationError as error:
        _raise_invalid(error)
    return schemas.from_project(access.project, access.membership)


@router.delete(
    "/projects/{project_id}",
    response={204: None, **ERRORS},
    tags=["projects"],
    operation_id="delete_project",
)
@mutating
def delete_project(
    request: HttpRequest,
    project_id: ProjectId,
    confirm_name: Annotated[
        str,
        Query(
            description="The project's name, typed back, as the dashboard asks for",
            max_length=100,
            pattern=_PLAIN,
        ),
    ],
) -> Status[None]:
    """Delete the project and everything in it (owners); its namespace is removed from the
    cluster, and peered projects stop admitting it."""
    access = _project(request, project_id)
    access.require(Membership.can_manage_project)
    if confirm_name.strip() != access.project.name:
        # Any text is well formed here; one that is not the name is refused as a conflict
        # with the project as it is (it may have been renamed), not as invalid input.
        message = f"Type the project’s name, {access.project.name}, exactly, to delete it."
        raise Problem(409, message, errors={"confirm_name": [message]})
    access.project.remove(actor=request.user)
    return Status(204, None)


@router.get(
    "/projects/{project_id}/sync",
    response={200: schemas.SyncDetailOut, **ERRORS},
    tags=["projects"],
    operation_id="get_sync_status",
)
def get_sync_status(request: HttpRequest, project_id: ProjectId) -> schemas.SyncDetailOut:
    """Whether the cluster has caught up with the project, and the recent apply attempts."""
    access = _project(request, project_id)
    attempts = ApplyAttempt.objects.filter(project=access.project)[:20]
    return schemas.SyncDetailOut(
        **schemas.from_sync(access.project).model_dump(),
        attempts=[
            schemas.ApplyAttemptOut(
                generation=attempt.generation,
                started_at=attempt.started_at,
                duration_ms=attempt.duration_ms,
                result=attempt.result,
                changes=list(attempt.changes or []),
                error=attempt.error,
            )
            for attempt in attempts
        ],
    )


@router.post(
    "/projects/{project_id}/sync/retry",
    response={202: schemas.SyncOut, **ERRORS},
    tags=["projects"],
    operation_id="retry_sync",
)
@mutating
def retry_sync(request: HttpRequest, project_id: ProjectId) -> Status[schemas.SyncOut]:
    """The Retry button: a fresh pass with a fresh retry budget."""
    access = _project(request, project_id)
    access.require(Membership.can_change_services)
    access.project.retry_sync()
    access.project.refresh_from_db()
    return Status(202, schemas.from_sync(access.project))


# -- Services ----------------------------------------------------------------------------------


class ServiceFilters(Schema):
    kind: Service.Kind | None = None
    name: str | None = Field(
        None, max_length=100, pattern=_PLAIN, description="The name as typed or its DNS label"
    )
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


@router.get(
    "/projects/{project_id}/services",
    response={200: schemas.ServicePage, **ERRORS},
    tags=["services"],
    operation_id="list_services",
)
def list_services(
    request: HttpRequest,
    project_id: ProjectId,
    filters: Annotated[ServiceFilters, Query()],
) -> schemas.ServicePage:
    access = _project(request, project_id)
    services = Service.objects.filter(project=access.project).order_by("name")
    if filters.kind:
        services = services.filter(kind=filters.kind)
    if filters.name:
        services = services.filter(
            Q(name__iexact=filters.name.strip()) | Q(display_name__iexact=filters.name.strip())
        )
    count = services.count()
    page = list(services[filters.offset : filters.offset + filters.limit])
    names = endpoints.env_names_for(access.project.pk, page)
    for service in page:
        service.project = access.project
    following = filters.offset + filters.limit
    return schemas.ServicePage(
        items=[schemas.from_service(service, names) for service in page],
        count=count,
        limit=filters.limit,
        offset=filters.offset,
        next_offset=following if following < count else None,
    )


def _stamped(service: Service) -> None:
    """Read back the generation the database stamped the saved row with (a deleted row keeps
    what it had: the answer is about what was saved)."""
    stamp = Service.objects.filter(pk=service.pk).values_list("changed_generation", flat=True)
    service.changed_generation = stamp.first() or service.changed_generation


def _service_form_data(name: str, kind: str, ports: list[int] | None) -> dict[str, Any]:
    return {
        "display_name": name,
        "kind": kind,
        "ports": ", ".join(str(port) for port in ports) if ports is not None else "",
    }


@router.post(
    "/projects/{project_id}/services",
    response={201: schemas.ServiceOut, **ERRORS},
    tags=["services"],
    operation_id="create_service",
)
@mutating
def create_service(
    request: HttpRequest, payload: schemas.ServiceCreateIn, project_id: ProjectId
) -> Status[schemas.ServiceOut]:
    access = _project(request, project_id)
    access.require(Membership.can_change_services)
    form = ServiceForm(
        _service_form_data(payload.name, payload.kind, payload.ports), project=access.project
    )
    if not form.is_valid():
        raise _form_problem(form, SERVICE_FIELDS)
    service = form.instance
    try:
        service.create(actor=request.user)
    except ValidationError as error:
        _raise_invalid(error, SERVICE_FIELDS)
    _stamped(service)
    return Status(201, schemas.from_service(service, endpoints.project_env_names(service)))


@router.get(
    "/projects/{project_id}/services/{service_id}",
    response={200: schemas.ServiceOut, **ERRORS},
    tags=["services"],
    operation_id="get_service",
)
def get_service(
    request: HttpRequest, project_id: ProjectId, service_id: ObjectId
) -> schemas.ServiceOut:
    """The service with its hostname, ports, ClusterIP and connection strings (masked)."""
    _check_project_id(project_id)
    _, service = get_service_for_user(request, project_id, service_id)
    return schemas.from_service(service, endpoints.project_env_names(service))


@router.patch(
    "/projects/{project_id}/services/{service_id}",
    response={200: schemas.ServiceOut, **ERRORS},
    tags=["services"],
    operation_id="update_service",
)
@mutating
def update_service(
    request: HttpRequest,
    payload: schemas.ServiceChangeIn,
    project_id: ProjectId,
    service_id: ObjectId,
) -> schemas.ServiceOut:
    """Rename or change the ports. A rename keeps the old hostname resolving for
    ``keep_old_name_for_seconds`` (a day unless given; 0 keeps nothing), reserved meanwhile."""
    _check_project_id(project_id)
    access, service = get_service_for_user(request, project_id, service_id)
    access.require(Membership.can_change_services)
    if payload.ports == []:
        message = "Enter the port your service listens on, for example 3000."
        raise Problem(422, message, errors={"ports": [message]})
    form = ServiceForm(
        _service_form_data(
            payload.name if payload.name is not None else service.display_name,
            service.kind,
            payload.ports if payload.ports is not None else list(service.ports),
        ),
        instance=service,
        project=access.project,
    )
    if not form.is_valid():
        problem = _form_problem(form, SERVICE_FIELDS)
        if form.has_error("ports", "fixed_port"):
            problem.status = 409  # well-formed ports, but this service is a database
        raise problem
    keep = payload.keep_old_name_for_seconds
    try:
        service.save_changes(
            actor=request.user,
            keep_old_name_for=ALIAS_DEFAULT if keep is None else timedelta(seconds=keep),
        )
    except Service.DoesNotExist:
        raise Http404("No such service.") from None
    except ValidationError as error:  # the name was claimed meanwhile (an old hostname, say)
        _raise_invalid(ValidationError({"display_name": error}), SERVICE_FIELDS)
    except IntegrityError:  # another request took the name between validation and save
        raise Problem(
            409,
            f"{service.internal_hostname} was just taken.",
            errors={"name": [f"{service.internal_hostname} was just taken."]},
        ) from None
    _stamped(service)
    return schemas.from_service(service, endpoints.project_env_names(service))


@router.delete(
    "/projects/{project_id}/services/{service_id}",
    response={204: None, **ERRORS},
    tags=["services"],
    operation_id="delete_service",
)
@mutating
def delete_service(
    request: HttpRequest, project_id: ProjectId, service_id: ObjectId
) -> Status[None]:
    """Delete the service; its hostname is released."""
    _check_project_id(project_id)
    access, service = get_service_for_user(request, project_id, service_id)
    access.require(Membership.can_change_services)
    service.remove(actor=request.user)
    return Status(204, None)


@router.post(
    "/projects/{project_id}/services/{service_id}/connection-tests",
    response={202: schemas.ConnectionTestOut, **ERRORS},
    tags=["services"],
    operation_id="start_connection_test",
)
@mutating
def start_connection_test(
    request: HttpRequest, project_id: ProjectId, service_id: ObjectId
) -> Status[schemas.ConnectionTestOut]:
    """Test the connection: a short-lived probe in the project resolves the service's hostname
    and connects to each port. Follow it at …/connection-tests/{id}; while one runs, this
    answers with that one."""
    _check_project_id(project_id)
    access, service = get_service_for_user(request, project_id, service_id)
    access.require(Membership.can_change_services)
    test, _ = ConnectionTest.start(service, actor=request.user)
    test.refresh_from_db()  # a broker that is down has finished it already
    return Status(202, schemas.from_connection_test(test))


@router.get(
    "/projects/{project_id}/services/{service_id}/connection-tests/{test_id}",
    response={200: schemas.ConnectionTestOut, **ERRORS},
    tags=["services"],
    operation_id="get_connection_test",
)
def get_connection_test(
    request: HttpRequest, project_id: ProjectId, service_id: ObjectId, test_id: ObjectId
) -> schemas.ConnectionTestOut:
    """How a connection test stands: queued, running, passed, failed, or error."""
    _check_project_id(project_id)
    _, service = get_service_for_user(request, project_id, service_id)
    test = ConnectionTest.objects.filter(service=service, pk=test_id).first()
    if test is None:
        raise Http404("No such connection test of this service.")
    return schemas.from_connection_test(test)


@router.post(
    "/projects/{project_id}/services/{service_id}/reveal",
    response={200: schemas.CredentialsOut, **ERRORS},
    tags=["services"],
    operation_id="reveal_service_credentials",
)
@revealing
def reveal_service_credentials(
    request: HttpRequest, project_id: ProjectId, service_id: ObjectId
) -> schemas.CredentialsOut:
    """A database's user, password and full connection string: audited, never cached."""
    _check_project_id(project_id)
    access, service = get_service_for_user(request, project_id, service_id)
    access.require(Membership.can_reveal_credentials)
    if not service.is_database or service.database_password is None:
        raise Problem(
            409,
            f"{service.display_name} has no credentials to reveal: only databases have them.",
        )
    access.project.audit(
        actor=request.user, action=AuditEvent.Action.CREDENTIALS_REVEALED, target=service.name
    )
    names = endpoints.project_env_names(service)
    return schemas.CredentialsOut(
        service=service.name,
        user=service.database_user,
        password=service.database_password.reveal(),
        database=service.database_name,
        endpoints=[
            schemas.from_endpoint(endpoint, revealed=True)
            for endpoint in endpoints.endpoints(service, reveal=True, names=names)
        ],
    )


# -- Reference variables and old hostnames -----------------------------------------------------


@router.get(
    "/projects/{project_id}/references",
    response={200: list[schemas.ReferenceOut], **ERRORS},
    tags=["services"],
    operation_id="list_project_references",
)
def list_project_references(
    request: HttpRequest, project_id: ProjectId
) -> list[schemas.ReferenceOut]:
    """Every reference variable of the project: whose address goes to which service."""
    access = _project(request, project_id)
    found = (
        access.project.references.select_related("source", "consumer")
        .order_by("source__name", "consumer__name")
        .iterator(chunk_size=500)
    )
    return [schemas.from_reference(reference) for reference in found]


class NameQuery(Schema):
    name: list[Annotated[str, Field(min_length=1, max_length=100, pattern=_PLAIN)]] = Field(
        min_length=1, max_length=100, description="A name as typed (repeat, up to 100)"
    )


@router.get(
    "/projects/{project_id}/service-names",
    response={200: list[schemas.NameCheckOut], **ERRORS},
    tags=["services"],
    operation_id="check_service_names",
)
def check_service_names(
    request: HttpRequest, project_id: ProjectId, query: Annotated[NameQuery, Query()]
) -> list[schemas.NameCheckOut]:
    """The hostname each name would give a service, or why the naming rule refuses it (what
    the dashboard previews as you type; `stackblaze plan` matches a file's services by it)."""
    _project(request, project_id)
    answers = []
    for name in query.name:
        try:
            label = naming.normalize_service_name(name)
            if not _SERVICE_NAME.fullmatch(name):  # what a create takes (``ServiceName``)
                raise ValidationError(schemas.service_name_refusal(name))
        except ValidationError as error:
            answers.append(
                schemas.NameCheckOut(
                    name=name, dns_label=None, hostname=None, error=error.messages[0]
                )
            )
        else:
            answers.append(
                schemas.NameCheckOut(
                    name=name,
                    dns_label=label,
                    hostname=naming.internal_hostname(label),
                    error=None,
                )
            )
    return answers


@router.get(
    "/projects/{project_id}/services/{service_id}/references",
    response={200: schemas.ReferencesOut, **ERRORS},
    tags=["services"],
    operation_id="list_references",
)
def list_references(
    request: HttpRequest, project_id: ProjectId, service_id: ObjectId
) -> schemas.ReferencesOut:
    """Both sides: the services given this one's address, and the addresses it is given."""
    _check_project_id(project_id)
    _, service = get_service_for_user(request, project_id, service_id)
    return schemas.ReferencesOut(
        gives=[
            schemas.from_reference(reference)
            for reference in service.used_by.select_related("source", "consumer").order_by(
                "consumer__name"
            )
        ],
        receives=[
            schemas.from_reference(reference)
            for reference in service.references.select_related("source", "consumer").order_by(
                "variable"
            )
        ],
    )


@router.post(
    "/projects/{project_id}/services/{service_id}/references",
    response={201: list[schemas.ReferenceOut], **ERRORS},
    tags=["services"],
    operation_id="add_references",
)
@mutating
def add_references(
    request: HttpRequest,
    payload: schemas.ReferenceCreateIn,
    project_id: ProjectId,
    service_id: ObjectId,
) -> Status[list[schemas.ReferenceOut]]:
    """Use in another service: give the consumers this service's address (a database's
    connection string, a service's internal URL) as a variable the worker keeps current.
    Each consumer restarts once to pick it up."""
    _check_project_id(project_id)
    access, service = get_service_for_user(request, project_id, service_id)
    access.require(Membership.can_change_services)
    consumers = _service_pks(access, payload.consumers, field="consumers")
    if service.pk in consumers:
        message = f"{service.display_name} can’t be given its own address."
        raise Problem(409, message, errors={"consumers": [message]})
    form = ReferenceForm(
        {"consumers": consumers, "variable": payload.variable or ""}, source=service
    )
    if not form.is_valid():
        raise _form_problem(form)
    try:
        made = references.add(
            service,
            form.cleaned_data["consumers"],
            form.cleaned_data["variable"],
            actor=request.user,
        )
    except ValidationError as error:
        # A consumer has that variable already, or the service has no port, or was deleted.
        raise _conflict(error) from None
    return Status(201, [schemas.from_reference(reference) for reference in made])


@router.delete(
    "/projects/{project_id}/services/{service_id}/references/{reference_id}",
    response={204: None, **ERRORS},
    tags=["services"],
    operation_id="remove_reference",
)
@mutating
def remove_reference(
    request: HttpRequest, project_id: ProjectId, service_id: ObjectId, reference_id: ObjectId
) -> Status[None]:
    """Take the variable back from its consumer (which restarts once without it); either
    side's service ID names it."""
    _check_project_id(project_id)
    access, _, reference = get_reference_for_user(request, project_id, service_id, reference_id)
    access.require(Membership.can_change_services)
    references.remove(reference, actor=request.user)
    return Status(204, None)


@router.get(
    "/projects/{project_id}/services/{service_id}/aliases",
    response={200: list[schemas.AliasOut], **ERRORS},
    tags=["services"],
    operation_id="list_aliases",
)
def list_aliases(
    request: HttpRequest, project_id: ProjectId, service_id: ObjectId
) -> list[schemas.AliasOut]:
    """The service's old hostnames that still resolve to it after a rename, and until when."""
    _check_project_id(project_id)
    _, service = get_service_for_user(request, project_id, service_id)
    return [schemas.from_alias(alias) for alias in service.aliases.all()]


@router.post(
    "/projects/{project_id}/services/{service_id}/aliases/{alias_id}/extend",
    response={200: schemas.AliasOut, **ERRORS},
    tags=["services"],
    operation_id="extend_alias",
)
@mutating
def extend_alias(
    request: HttpRequest,
    project_id: ProjectId,
    service_id: ObjectId,
    alias_id: ObjectId,
    payload: schemas.AliasExtendIn | None = None,
) -> schemas.AliasOut:
    """Keep an old hostname resolving a day longer than the end you read (members)."""
    _check_project_id(project_id)
    access, alias = get_alias_for_user(request, project_id, service_id, alias_id)
    access.require(Membership.can_change_services)
    seen = payload.seen_expires_at if payload and payload.seen_expires_at else alias.expires_at
    if timezone.is_naive(seen):
        message = "Give the time with its offset, as the answers do (…Z or +00:00)."
        raise Problem(422, message, errors={"seen_expires_at": [message]})
    if abs(seen - alias.expires_at) < timedelta(milliseconds=1):
        seen = alias.expires_at  # the answers give milliseconds; the database keeps microseconds
    try:
        alias.extend(actor=request.user, seen=seen)
    except ServiceAlias.DoesNotExist:
        raise Http404(
            f"{alias.internal_hostname} no longer resolves: it was ended or expired meanwhile."
        ) from None
    return schemas.from_alias(alias)


@router.delete(
    "/projects/{project_id}/services/{service_id}/aliases/{alias_id}",
    response={204: None, **ERRORS},
    tags=["services"],
    operation_id="end_alias",
)
@mutating
def end_alias(
    request: HttpRequest, project_id: ProjectId, service_id: ObjectId, alias_id: ObjectId
) -> Status[None]:
    """Stop an old hostname resolving now (owners); the name is free for another service."""
    _check_project_id(project_id)
    access, alias = get_alias_for_user(request, project_id, service_id, alias_id)
    access.require(Membership.can_manage_project)
    alias.end(actor=request.user)
    return Status(204, None)


# -- Shared secrets ----------------------------------------------------------------------------


def _service_pks(access: ProjectAccess, names: list[str], *, field: str = "services") -> list[int]:
    """The receiving services, named by their DNS labels (the document's pattern, checked
    already). A label no service of the project has is a conflict with the project as it is
    (409), per name: not 404, which would say the URL's own service is not there."""
    wanted = list(names)
    # Only what could be a DNS label is looked up (a NUL byte never reaches the query).
    labels = [name for name in wanted if _DNS_LABEL.fullmatch(name)]
    found = dict(access.project.services.filter(name__in=labels).values_list("name", "pk"))
    unknown = list(dict.fromkeys(name for name in wanted if name not in found))
    if unknown:
        raise Problem(
            409,
            f"This project has no service named “{unknown[0][:63]}”.",
            errors={
                field: [
                    f"This project has no service named “{name[:63]}”. Use the services’ DNS "
                    "labels, as `GET …/services` lists them."
                    for name in unknown
                ]
            },
        )
    return [found[name] for name in wanted]


@router.get(
    "/projects/{project_id}/secrets",
    response={200: list[schemas.SecretOut], **ERRORS},
    tags=["secrets"],
    operation_id="list_secrets",
)
def list_secrets(request: HttpRequest, project_id: ProjectId) -> list[schemas.SecretOut]:
    """The project's shared secrets: names, receivers and rotations, never a value."""
    access = _project(request, project_id)
    access.require(Membership.can_see_secret_details)
    secrets = access.project.shared_secrets.prefetch_related("services").annotate(
        rotation_total=Count("rotations")
    )
    return [schemas.from_secret(secret) for secret in secrets]


@router.post(
    "/projects/{project_id}/secrets",
    response={201: schemas.SecretOut, **ERRORS},
    tags=["secrets"],
    operation_id="create_secret",
)
@mutating
def create_secret(
    request: HttpRequest, payload: schemas.SecretCreateIn, project_id: ProjectId
) -> Status[schemas.SecretOut]:
    """A new secret, with a generated 256-bit value unless one is given."""
    access = _project(request, project_id)
    access.require(Membership.can_manage_secrets)
    form = SharedSecretForm(
        {
            "name": payload.name,
            "value": payload.value or "",
            "services": _service_pks(access, payload.services),
            "rotate_every_days": payload.rotate_every_days or "",
        },
        project=access.project,
    )
    if not form.is_valid():
        raise _form_problem(form)
    secret = form.save(commit=False)
    try:
        secret.create(form.cleaned_data["services"], actor=request.user)
    except ValidationError as error:
        raise _conflict(error) from None
    return Status(201, schemas.from_secret(secret))


def _secret(
    request: HttpRequest, project_id: str, secret_id: int
) -> tuple[ProjectAccess, SharedSecret]:
    _check_project_id(project_id)
    return get_secret_for_user(request, project_id, secret_id)


@router.get(
    "/projects/{project_id}/secrets/{secret_id}",
    response={200: schemas.SecretOut, **ERRORS},
    tags=["secrets"],
    operation_id="get_secret",
)
def get_secret(
    request: HttpRequest, project_id: ProjectId, secret_id: ObjectId
) -> schemas.SecretOut:
    access, secret = _secret(request, project_id, secret_id)
    access.require(Membership.can_see_secret_details)
    return schemas.from_secret(secret)


@router.patch(
    "/projects/{project_id}/secrets/{secret_id}",
    response={200: schemas.SecretOut, **ERRORS},
    tags=["secrets"],
    operation_id="update_secret",
)
@mutating
def update_secret(
    request: HttpRequest,
    payload: schemas.SecretChangeIn,
    project_id: ProjectId,
    secret_id: ObjectId,
) -> schemas.SecretOut:
    """Change which services receive the secret, and its rotation schedule."""
    access, secret = _secret(request, project_id, secret_id)
    access.require(Membership.can_manage_secrets)
    form = SharedSecretForm(
        {
            "services": _service_pks(access, payload.services),
            "rotate_every_days": payload.rotate_every_days or "",
        },
        instance=secret,
        project=access.project,
    )
    if not form.is_valid():
        raise _form_problem(form)
    try:
        secret.change_receivers(
            form.cleaned_data["services"],
            form.cleaned_data["rotate_every_days"],
            actor=request.user,
        )
    except SharedSecret.DoesNotExist:
        raise Http404("No such secret.") from None
    except ValidationError as error:
        raise _conflict(error) from None
    return schemas.from_secret(secret)


@router.delete(
    "/projects/{project_id}/secrets/{secret_id}",
    response={204: None, **ERRORS},
    tags=["secrets"],
    operation_id="delete_secret",
)
@mutating
def delete_secret(request: HttpRequest, project_id: ProjectId, secret_id: ObjectId) -> Status[None]:
    access, secret = _secret(request, project_id, secret_id)
    access.require(Membership.can_manage_secrets)
    secret.remove(actor=request.user)
    return Status(204, None)


@router.post(
    "/projects/{project_id}/secrets/{secret_id}/reveal",
    response={200: schemas.SecretValueOut, **ERRORS},
    tags=["secrets"],
    operation_id="reveal_secret",
)
@revealing
def reveal_secret(
    request: HttpRequest, project_id: ProjectId, secret_id: ObjectId
) -> schemas.SecretValueOut:
    """The value (and during a rotation the other accepted one): owners only, audited."""
    access, secret = _secret(request, project_id, secret_id)
    access.require(Membership.can_manage_secrets)
    access.project.audit(
        actor=request.user, action=AuditEvent.Action.SECRET_REVEALED, target=secret.name
    )
    return schemas.SecretValueOut(
        name=secret.name,
        values={name: value.reveal() for name, value in rotation.environment(secret).items()},
    )


@router.post(
    "/projects/{project_id}/secrets/{secret_id}/rotate",
    response={202: schemas.RotationOut, **ERRORS},
    tags=["secrets"],
    operation_id="rotate_secret",
)
@mutating
def rotate_secret(
    request: HttpRequest,
    project_id: ProjectId,
    secret_id: ObjectId,
    payload: schemas.RotateIn | None = None,
) -> Status[schemas.RotationOut]:
    """Start a rotation without downtime; follow it at …/rotation."""
    access, secret = _secret(request, project_id, secret_id)
    access.require(Membership.can_manage_secrets)
    form = RotateForm({"value": payload.value or "" if payload else ""})
    if not form.is_valid():
        raise _form_problem(form)
    try:
        rotation.start_rotation(
            secret, actor=request.user, new_value=form.cleaned_data["value"] or None
        )
    except rotation.RotationRefused as refused:
        raise Problem(409, str(refused)) from None
    return Status(202, schemas.from_rotation(secret))


@router.get(
    "/projects/{project_id}/secrets/{secret_id}/rotation",
    response={200: schemas.RotationOut, **ERRORS},
    tags=["secrets"],
    operation_id="get_rotation",
)
def get_rotation(
    request: HttpRequest, project_id: ProjectId, secret_id: ObjectId
) -> schemas.RotationOut:
    """The rotation's phases (done, current, pending) and each receiving workload's version."""
    access, secret = _secret(request, project_id, secret_id)
    access.require(Membership.can_see_secret_details)
    return schemas.from_rotation(secret)


@router.post(
    "/projects/{project_id}/secrets/{secret_id}/rotation/end-grace",
    response={200: schemas.RotationOut, **ERRORS},
    tags=["secrets"],
    operation_id="end_rotation_grace",
)
@mutating
def end_rotation_grace(
    request: HttpRequest, project_id: ProjectId, secret_id: ObjectId
) -> schemas.RotationOut:
    """End the rotation's grace window now (owners): the old value is refused from the next
    pass, and services restart without it. A caller still sending it is refused: that is
    what the grace window was for."""
    access, secret = _secret(request, project_id, secret_id)
    access.require(Membership.can_manage_secrets)
    if not rotation.end_grace(secret, actor=request.user):
        secret.refresh_from_db()
        if secret.rotation_phase != SharedSecret.Phase.GRACE:
            raise Problem(409, f"{secret.name} has no grace window running.")
    return schemas.from_rotation(secret)


# -- Mutual TLS --------------------------------------------------------------------------------


@router.get(
    "/projects/{project_id}/mtls",
    response={200: schemas.MutualTLSOut, **ERRORS},
    tags=["mtls"],
    operation_id="get_mtls",
)
def get_mtls(request: HttpRequest, project_id: ProjectId) -> schemas.MutualTLSOut:
    """Whether mutual TLS is on, the CA rotation's phases, the CAs and each service's
    certificate (public facts: never a private key)."""
    access = _project(request, project_id)
    return schemas.from_mtls(access.project)


@router.post(
    "/projects/{project_id}/mtls",
    response={200: schemas.MutualTLSOut, 201: schemas.MutualTLSOut, **ERRORS},
    tags=["mtls"],
    operation_id="enable_mtls",
)
@mutating
def enable_mtls(request: HttpRequest, project_id: ProjectId) -> Status[schemas.MutualTLSOut]:
    """Turn mutual TLS on (owners): the project gets its CA, and the worker gives each service
    a certificate, which its workload mounts (restarting once). 201 if this turned it on, 200
    if it was on already. It can't be turned off."""
    access = _project(request, project_id)
    access.require(Membership.can_manage_mtls)
    try:
        enabled = mtls.enable(access.project, actor=request.user)
    except mtls.MTLSRefused as refused:
        raise Problem(409, str(refused)) from None
    return Status(201 if enabled else 200, schemas.from_mtls(access.project))


@router.post(
    "/projects/{project_id}/mtls/rotate-ca",
    response={202: schemas.MutualTLSOut, **ERRORS},
    tags=["mtls"],
    operation_id="rotate_ca",
)
@mutating
def rotate_ca(request: HttpRequest, project_id: ProjectId) -> Status[schemas.MutualTLSOut]:
    """Rotate the project's CA without refusing a request (owners): every service trusts the
    new CA beside the old, then gets a certificate from it, then stops trusting the old.
    Nothing restarts. Follow it at …/mtls."""
    access = _project(request, project_id)
    access.require(Membership.can_manage_mtls)
    try:
        mtls.start_ca_rotation(access.project, actor=request.user)
    except mtls.MTLSRefused as refused:
        raise Problem(409, str(refused)) from None
    return Status(202, schemas.from_mtls(access.project))


@router.get(
    "/projects/{project_id}/services/{service_id}/callers",
    response={200: schemas.CallersOut, **ERRORS},
    tags=["mtls"],
    operation_id="get_callers",
)
def get_callers(
    request: HttpRequest, project_id: ProjectId, service_id: ObjectId
) -> schemas.CallersOut:
    """Which services' certificates the service accepts calls from, with mutual TLS on."""
    _check_project_id(project_id)
    _, service = get_service_for_user(request, project_id, service_id)
    return schemas.from_callers(service)


@router.put(
    "/projects/{project_id}/services/{service_id}/callers",
    response={200: schemas.CallersOut, **ERRORS},
    tags=["mtls"],
    operation_id="set_callers",
)
@mutating
def set_callers(
    request: HttpRequest,
    payload: schemas.CallersIn,
    project_id: ProjectId,
    service_id: ObjectId,
) -> schemas.CallersOut:
    """Choose who may call the service (owners): every service of the project, or only those
    listed (by DNS label). Its accept list changes in place: nothing restarts."""
    _check_project_id(project_id)
    access, service = get_service_for_user(request, project_id, service_id)
    access.require(Membership.can_manage_mtls)
    if payload.any and payload.callers:
        message = (
            "Leave callers out with any: true (every service may call it), or send any: false."
        )
        raise Problem(422, message, errors={"callers": [message]})
    chosen = _service_pks(access, list(dict.fromkeys(payload.callers)), field="callers")
    try:
        mtls.set_callers(
            service,
            any_caller=payload.any,
            callers=Service.objects.filter(pk__in=chosen),
            actor=request.user,
        )
    except Service.DoesNotExist:
        raise Http404("No such service.") from None
    except mtls.MTLSRefused as refused:  # none named, or more than the Secret can hold
        raise Problem(409, str(refused), errors={"callers": [str(refused)]}) from None
    return schemas.from_callers(service)


# -- Peering -----------------------------------------------------------------------------------

# An unknown project to peer with is a conflict too: 404 would say the requester is not there.
_PEERING_STATUS = {"conflict": 409, "forbidden": 403, "unknown": 409}


def _refused(refused: peering.PeeringRefused) -> Problem:
    return Problem(_PEERING_STATUS.get(refused.code, 422), str(refused))


def _peering_rows() -> Any:
    return PeeringRequest.objects.select_related(
        "requester_project__organization", "target_project__organization"
    )


@router.get(
    "/projects/{project_id}/peerings",
    response={200: list[schemas.PeeringOut], **ERRORS},
    tags=["peering"],
    operation_id="list_peerings",
)
def list_peerings(request: HttpRequest, project_id: ProjectId) -> list[schemas.PeeringOut]:
    """The project's peerings, newest first, each with its history."""
    access = _project(request, project_id)
    project = access.project
    rows = _peering_rows().filter(Q(requester_project=project) | Q(target_project=project))
    return [schemas.from_peering(row) for row in rows.order_by("-created_at")[:100]]


@router.post(
    "/projects/{project_id}/peerings",
    response={201: schemas.PeeringOut, **ERRORS},
    tags=["peering"],
    operation_id="request_peering",
)
@mutating
def request_peering(
    request: HttpRequest, payload: schemas.PeeringRequestIn, project_id: ProjectId
) -> Status[schemas.PeeringOut]:
    """Ask to peer with another Enterprise project, by its ID, saying why."""
    access = _project(request, project_id)
    access.require(Membership.can_manage_project)
    form = PeeringRequestForm({"target": payload.target, "justification": payload.justification})
    if not form.is_valid():
        raise _form_problem(form)
    try:
        created = peering.request_peering(
            access.project,
            form.cleaned_data["target"],
            form.cleaned_data["justification"],
            actor=request.user,
        )
    except peering.PeeringRefused as refused:
        raise _refused(refused) from None
    return Status(201, schemas.from_peering(_peering_rows().get(pk=created.pk)))


def _transition(request: HttpRequest, project_id: str, peering_id: int, action: str) -> Any:
    _check_project_id(project_id)
    access, found = get_peering_for_user(request, project_id, peering_id)
    access.require(Membership.can_manage_project)
    transition = {"accept": peering.accept, "cancel": peering.cancel, "revoke": peering.revoke}
    try:
        transition[action](found, actor=request.user, project=access.project)
    except peering.PeeringRefused as refused:
        raise _refused(refused) from None
    return schemas.from_peering(_peering_rows().get(pk=found.pk))


@router.post(
    "/projects/{project_id}/peerings/{peering_id}/accept",
    response={200: schemas.PeeringOut, **ERRORS},
    tags=["peering"],
    operation_id="accept_peering",
)
@mutating
def accept_peering(request: HttpRequest, project_id: ProjectId, peering_id: ObjectId) -> Any:
    """The other organization's owner accepts: the request goes to support."""
    return _transition(request, project_id, peering_id, "accept")


@router.post(
    "/projects/{project_id}/peerings/{peering_id}/cancel",
    response={200: schemas.PeeringOut, **ERRORS},
    tags=["peering"],
    operation_id="cancel_peering",
)
@mutating
def cancel_peering(request: HttpRequest, project_id: ProjectId, peering_id: ObjectId) -> Any:
    """Either side withdraws (or declines) a pending request."""
    return _transition(request, project_id, peering_id, "cancel")


@router.post(
    "/projects/{project_id}/peerings/{peering_id}/revoke",
    response={200: schemas.PeeringOut, **ERRORS},
    tags=["peering"],
    operation_id="revoke_peering",
)
@mutating
def revoke_peering(request: HttpRequest, project_id: ProjectId, peering_id: ObjectId) -> Any:
    """Either side disconnects an approved or active peering."""
    return _transition(request, project_id, peering_id, "revoke")


@router.get(
    "/support/peerings",
    response={200: list[schemas.PeeringOut], **ERRORS},
    tags=["support"],
    operation_id="support_queue",
)
def support_queue(request: HttpRequest) -> list[schemas.PeeringOut]:
    """Support staff: requests waiting for a decision, oldest first."""
    require_support_staff(request)
    pending = _peering_rows().filter(status=PeeringRequest.Status.PENDING_SUPPORT)
    return [schemas.from_peering(row) for row in pending.order_by("created_at")[:200]]


@router.post(
    "/support/peerings/{peering_id}/approve",
    response={200: schemas.PeeringOut, **ERRORS},
    tags=["support"],
    operation_id="approve_peering",
)
@mutating
def approve_peering(request: HttpRequest, peering_id: ObjectId) -> schemas.PeeringOut:
    found = get_peering_for_staff(request, peering_id)
    try:
        peering.approve(found, staff=request.user)
    except peering.PeeringRefused as refused:
        raise _refused(refused) from None
    return schemas.from_peering(_peering_rows().get(pk=found.pk))


@router.post(
    "/support/peerings/{peering_id}/reject",
    response={200: schemas.PeeringOut, **ERRORS},
    tags=["support"],
    operation_id="reject_peering",
)
@mutating
def reject_peering(
    request: HttpRequest, payload: schemas.RejectIn, peering_id: ObjectId
) -> schemas.PeeringOut:
    """Reject with a reason, which the customer sees."""
    found = get_peering_for_staff(request, peering_id)
    form = RejectForm({"reason": payload.reason})
    if not form.is_valid():
        raise _form_problem(form)
    try:
        peering.reject(found, staff=request.user, reason=form.cleaned_data["reason"])
    except peering.PeeringRefused as refused:
        raise _refused(refused) from None
    return schemas.from_peering(_peering_rows().get(pk=found.pk))


# -- The audit log -----------------------------------------------------------------------------


# A position in the log: the microsecond an event was recorded (since 1970) and its ID. Any
# position is a place to continue from, so every cursor the pattern takes is one the server
# takes: there is no "cursor not valid" refusal to leave out of the document.
_CURSOR = re.compile(r"([0-9]{1,18})-([0-9]{1,19})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_MICROSECOND = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)


def _group(value: str) -> str:
    if value not in audit_trail.GROUPS:
        raise ValueError(f"Choose one of {', '.join(audit_trail.GROUPS)}.")
    return value


AuditGroup = Annotated[
    str, AfterValidator(_group), schemas.Shown({"enum": list(audit_trail.GROUPS)})
]


def _day(value: Any) -> Any:
    """A day as the document's ``format: date`` has it (pydantic would also take 0 for
    1970-01-01, or a time); refused in the audit page's words."""
    if not (isinstance(value, str) and audit_trail.DAY_PATTERN.fullmatch(value)):
        raise ValueError(audit_trail.DAY_REFUSAL)
    return value


Day = Annotated[date, BeforeValidator(_day)]


class AuditFilters(Schema):
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(
        None,
        pattern=f"^{_CURSOR.pattern}$",
        description="The next_cursor of the previous page, as it is",
    )
    who: str | None = Field(None, max_length=150, pattern=_PLAIN)
    what: AuditGroup | None = None
    since: Day | None = Field(None, description="The first day shown (UTC)")
    until: Day | None = Field(None, description="The last day shown (UTC)")


def _encode_cursor(event: AuditEvent) -> str:
    return f"{(event.created_at - _EPOCH) // timedelta(microseconds=1)}-{event.pk}"


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    found = _CURSOR.fullmatch(cursor)
    assert found is not None  # the query's pattern
    micro, pk = (int(part) for part in found.groups())
    # Past the calendar's end or the largest ID: the same as at them (before everything).
    return _EPOCH + timedelta(microseconds=min(micro, _LAST_MICROSECOND)), min(pk, _MAX_ID)


@router.get(
    "/projects/{project_id}/audit",
    response={200: schemas.AuditPage, **ERRORS},
    tags=["audit"],
    operation_id="list_audit_events",
)
def list_audit_events(
    request: HttpRequest,
    project_id: ProjectId,
    filters: Annotated[AuditFilters, Query()],
) -> schemas.AuditPage:
    """The project's audit log, newest first, a page at a time (``next_cursor``)."""
    access = _project(request, project_id)
    chosen = audit_trail.Filters.from_query(
        {
            key: value.isoformat() if isinstance(value, date) else value
            for key, value in filters.model_dump().items()
            if isinstance(value, (str, date))
        }
    )
    events = chosen.apply(AuditEvent.objects.filter(project=access.project)).order_by(
        "-created_at", "-id"
    )
    if filters.cursor:
        at, pk = _decode_cursor(filters.cursor)
        events = events.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=pk))
    page = list(events[: filters.limit + 1])
    more = len(page) > filters.limit
    page = page[: filters.limit]
    return schemas.AuditPage(
        items=[schemas.from_event(event) for event in page],
        next_cursor=_encode_cursor(page[-1]) if more and page else None,
    )
