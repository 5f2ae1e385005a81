"""The API's documents: what each endpoint reads and answers, as the OpenAPI schema shows it.

Built from the domain objects by the ``from_*`` functions, never by exposing a model whole, so
a field added to a model never leaks into the API by accident. No schema here holds a secret
value except the two reveal answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from django.core.exceptions import ValidationError
from ninja import Schema
from ninja.schema import DjangoGetter
from pydantic import (
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from api.models import ApiToken
from networking import endpoints, mtls, naming, plain_text, rotation
from networking.models import (
    DATABASE_PORTS,
    MAX_PORTS,
    PROJECT_ID_PATTERN,
    AuditEvent,
    ConnectionTest,
    Membership,
    MutualTLS,
    Notification,
    PeeringRequest,
    Project,
    ReferenceVariable,
    SecretRotation,
    Service,
    ServiceAlias,
    SharedSecret,
)


def documented(**constraints: Any) -> Any:
    """Limits shown in the OpenAPI document but checked by the dashboard's forms, so a value
    past them gets the form's own message ("Port 70000 is out of range…"), not pydantic's."""
    return Field(json_schema_extra=constraints)


@dataclass(frozen=True)
class Matching:
    """A string the API takes only if it matches ``pattern``, as the document says; anything
    else is refused (422) with ``refusal(value)``: the rule's own words, as the pages say them.

    The patterns are built from the rules (``networking.naming``, ``plain_text``, ``rotation``)
    and read alike by JSON Schema's ECMA-262 and by Python, so what the document accepts is
    what the server accepts."""

    pattern: str
    refusal: Callable[[str], str]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        compiled = re.compile(self.pattern)

        def check(value: str) -> str:
            if not compiled.fullmatch(value):
                raise ValueError(self.refusal(value))
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = self.pattern
        return json_schema


@dataclass(frozen=True)
class Shown:
    """Constraints the OpenAPI document shows for a value that something else checks (a path
    parameter's own check, say), where ``documented()``'s ``Field`` can't go."""

    constraints: dict[str, Any]

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(schema), **self.constraints}


def _said(rule: Callable[[str], Any], value: str) -> str | None:
    """What ``rule`` says of ``value``; None if it takes it."""
    try:
        rule(value)
    except ValidationError as error:
        return str(error.messages[0])
    return None


def _trimmed(value: str, otherwise: str) -> str:
    return "Remove the spaces before and after it." if value != value.strip() else otherwise


def _one_line(empty: str) -> Callable[[str], str]:
    def refusal(value: str) -> str:
        if not value.strip():
            return empty
        return _said(plain_text.single_line, value) or _trimmed(value, empty)

    return refusal


def _some_text(empty: str) -> Callable[[str], str]:
    def refusal(value: str) -> str:
        return _said(plain_text.multiline, value) or empty

    return refusal


def service_name_refusal(value: str) -> str:
    said = _said(naming.normalize_service_name, value)
    if said or value != value.strip():
        return said or "Remove the spaces before and after the name."
    # Taken by the naming rule but not by the API's pattern ("Straße", "ａｐｉ").
    suggestion = naming.suggest_service_name(value)
    return "Use letters (accents are fine), digits, spaces, hyphens or underscores" + (
        f": try “{suggestion}”." if suggestion else "."
    )


def _label_refusal(value: str) -> str:
    return (
        f"“{value[:63]}” is not a service’s DNS label. Use the labels that `GET …/services` "
        "lists (dns_label), like api or background-worker."
    )


def _whole(value: Any) -> Any:
    """3000.0 is the integer 3000 in JSON (and in the document's JSON Schema); "3000" and true
    are not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Whole numbers only (pydantic's strict mode: no "3000", no true), as the document's integer;
# the bounds go before the validator, or the document gets pydantic's "ge" and "le" instead.
# A port's range is the form's.
Port = Annotated[StrictInt, documented(minimum=1, maximum=65535), BeforeValidator(_whole)]
Days = Annotated[StrictInt, Field(ge=1, le=365), BeforeValidator(_whole)]
ServiceName = Annotated[
    str,
    Matching(naming.DISPLAY_NAME_PATTERN, service_name_refusal),
    documented(maxLength=100),
]
DnsLabel = Annotated[str, Matching(naming.LABEL_PATTERN, _label_refusal)]
SecretName = Annotated[
    str,
    Matching(
        rotation.SECRET_NAME_PATTERN,
        lambda value: (
            _said(rotation.validate_secret_name, value)
            or _trimmed(value, "Enter a name, like INTERNAL_API_SECRET.")
        ),
    ),
]
VariableName = Annotated[
    str,
    Matching(
        rotation.VARIABLE_NAME_PATTERN,
        lambda value: (
            _said(
                lambda typed: rotation.validate_variable_name(typed, example="DATABASE_URL"), value
            )
            or _trimmed(value, "Enter a name, like DATABASE_URL.")
        ),
    ),
]
PastedValue = Annotated[
    str,
    Matching(
        rotation.PASTED_VALUE_PATTERN,
        lambda value: _said(rotation.validate_pasted_value, value) or "",
    ),
]
ProjectIdValue = Annotated[
    str,
    Matching(
        f"^{PROJECT_ID_PATTERN}$",
        lambda value: (
            f"“{value[:40]}” is not a project ID: it is 12 letters and digits, as on "
            "the project’s Settings page (e.g. k7x2m9q4p8ab)."
        ),
    ),
]


class Input(Schema):
    """A request body: a JSON object. (Ninja's schemas also read an object's attributes, so
    without this a ``null`` body would pass for an object with nothing set.)"""

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        sent = data._obj if isinstance(data, DjangoGetter) else data  # ninja wraps what it reads
        if not isinstance(sent, dict):
            raise ValueError("Send a JSON object as the body, as the documentation shows it.")
        return data


class ProblemOut(Schema):
    """An error (RFC 9457): what went wrong, and for invalid input each field's messages."""

    type: str
    title: str
    status: int
    detail: str
    errors: dict[str, list[str]] | None = None


class MeOut(Schema):
    username: str
    organization: str | None = Field(None, description="The token's organization (its slug)")
    role: str | None = Field(None, description="What the token may do there, today")
    token: str | None = Field(None, description="The token's name; null in a browser session")
    support: bool


class SyncOut(Schema):
    state: Project.SyncState
    label: str
    generation: int
    applied_generation: int
    applied_at: datetime | None
    error: str


class ProjectOut(Schema):
    id: str = Field(description="The project ID, as on its Settings page")
    name: str
    organization: str
    namespace: str
    role: Membership.Role = Field(description="What you may do in it")
    sync: SyncOut


class ApplyAttemptOut(Schema):
    generation: int
    started_at: datetime
    duration_ms: int
    result: str
    changes: list[Any]
    error: str


class SyncDetailOut(SyncOut):
    attempts: list[ApplyAttemptOut]


class EndpointOut(Schema):
    label: str
    env_name: str
    value: str
    env_line: str
    masked: bool = Field(description="True when a password in ``value`` is masked")


# Not Service.Status itself, for the reason given at ConnectionTestStatus.
ServiceStatus = Literal["live", "applied", "pending"]


class ServiceOut(Schema):
    id: int
    name: str = Field(description="The name as typed")
    dns_label: str
    kind: Service.Kind
    ports: list[int]
    hostname: str
    address: str | None = Field(description="hostname:port of the first port")
    cluster_ip: str | None
    status: ServiceStatus = Field(
        description="pending: the cluster has not caught up with its last change yet; "
        "applied: it has, and the ClusterIP is not read back yet; live: applied, with its "
        "ClusterIP"
    )
    generation: int = Field(
        description="The project generation that last changed it: applied once the "
        "project's sync.applied_generation reaches it"
    )
    endpoints: list[EndpointOut]
    created_at: datetime
    updated_at: datetime


class FindingOut(Schema):
    ok: bool
    text: str = Field(description="What the probe met, and what to do about it, in plain words")


class PortResultOut(Schema):
    port: int
    outcome: str = Field(
        description="connected, refused, timeout, unreachable, skipped (the name did not "
        "resolve) or error"
    )
    ms: float | None = Field(None, description="How long connecting took")


# Not ConnectionTest.Status itself: its enum would be named "Status" in the document, as the
# peering's is, and one would replace the other.
ConnectionTestStatus = Literal["queued", "running", "passed", "failed", "error"]


class ConnectionTestOut(Schema):
    id: int
    status: ConnectionTestStatus
    hostname: str
    ports: list[int]
    expected_ip: str | None = Field(description="The ClusterIP the dashboard showed")
    resolved_to: list[str] = Field(description="What the hostname resolved to in the project")
    dns_ms: float | None
    results: list[PortResultOut]
    findings: list[FindingOut]
    error: str = Field(description="Why the test could not run (status error)")
    requested_by: str
    created_at: datetime
    finished_at: datetime | None


class ServicePage(Schema):
    items: list[ServiceOut]
    count: int
    limit: int
    offset: int
    next_offset: int | None


def _ports_by_kind(schema: dict[str, Any]) -> None:
    """Which ports each kind takes, as the document says it (the form refuses the rest, saying
    why): a web service's default to 8080; a worker needs one at least; a database listens on
    its kind's port only."""
    branches: list[dict[str, Any]] = []
    for kind in Service.Kind:
        if kind in DATABASE_PORTS:
            ports: dict[str, Any] = {
                "anyOf": [
                    {"type": "null"},
                    {"type": "array", "maxItems": 1, "items": {"const": DATABASE_PORTS[kind]}},
                ]
            }
            branches.append(
                {"required": ["kind"], "properties": {"kind": {"const": kind}, "ports": ports}}
            )
        elif Service.default_ports(kind):
            branches.append({"properties": {"kind": {"const": kind}}})
        else:
            branches.append(
                {
                    "required": ["kind", "ports"],
                    "properties": {
                        "kind": {"const": kind},
                        "ports": {"type": "array", "minItems": 1},
                    },
                }
            )
    schema["anyOf"] = branches


class ServiceCreateIn(Input):
    name: ServiceName = Field(
        description="Becomes the hostname: “Background Worker” → background-worker.internal"
    )
    kind: Service.Kind = Service.Kind.WEB
    ports: list[Port] | None = Field(
        None,
        max_length=50,
        description="Web services default to 8080; a database always uses its kind's port, so "
        "leave them out (or give that one).",
        json_schema_extra={"maxItems": MAX_PORTS, "uniqueItems": True},
    )

    model_config = ConfigDict(json_schema_extra=_ports_by_kind)


class ServiceChangeIn(Input):
    name: ServiceName | None = None
    ports: list[Port] | None = Field(
        None,
        max_length=50,
        description="At least one; a database's can't change (another is a conflict, 409).",
        json_schema_extra={"minItems": 1, "maxItems": MAX_PORTS, "uniqueItems": True},
    )
    keep_old_name_for_seconds: (
        Annotated[StrictInt, Field(ge=0, le=30 * 24 * 3600), BeforeValidator(_whole)] | None
    ) = Field(
        None,
        description="On a rename, how long the old hostname keeps resolving (a day if not "
        "given; 0: not at all).",
    )


class CredentialsOut(Schema):
    """A database's credentials, revealed: only in the answer to the audited reveal POST."""

    service: str
    user: str
    password: str
    database: str
    endpoints: list[EndpointOut]


class ReceiverOut(Schema):
    service: str
    version: int | None = Field(description="The secret's version the workload runs, if known")
    has_workload: bool
    rolled_out: bool


class SecretOut(Schema):
    id: int
    name: str
    version: int = Field(description="Internal: moves on at each phase of a rotation")
    rotations: int = Field(description="How many times it was rotated, one under way included")
    services: list[str]
    rotating: bool
    rotation_phase: str
    rotate_every_days: int | None
    last_rotated_at: datetime | None
    created_at: datetime


class SecretCreateIn(Input):
    name: SecretName = Field(
        description="An environment variable name, like INTERNAL_API_SECRET: upper-case "
        "letters, digits and underscores, not one the platform sets (PATH, KUBERNETES_…), not "
        "ending in _NEXT or _PREVIOUS (rotations use those)",
    )
    value: PastedValue | None = Field(
        None,
        description="Leave out to generate a random 256-bit value",
    )
    services: list[DnsLabel] = Field(
        default_factory=list, max_length=200, description="DNS labels of the receiving services"
    )
    rotate_every_days: Days | None = None


class SecretChangeIn(Input):
    services: list[DnsLabel] = Field(max_length=200)
    rotate_every_days: Days | None = None


class SecretValueOut(Schema):
    """Only in the answer to the audited reveal POST: each variable the services get."""

    name: str
    values: dict[str, str]


class RotateIn(Input):
    value: PastedValue | None = Field(
        None, description="Leave out to generate a random 256-bit value"
    )


class PhaseStepOut(Schema):
    phase: str
    title: str
    detail: str
    state: str = Field(description="done, current or pending")


class RotationLogOut(Schema):
    started_at: datetime
    started_by: str
    result: str
    finished_at: datetime | None
    phases: list[dict[str, str]]


class RotationOut(Schema):
    secret: str
    version: int = Field(description="Internal: moves on at each phase of a rotation")
    number: int = Field(description="Which rotation this is (the last one, when none runs)")
    rotating: bool
    phase: str
    grace_until: datetime | None
    steps: list[PhaseStepOut]
    receivers: list[ReceiverOut]
    latest: RotationLogOut | None


class CertificateAuthorityOut(Schema):
    """One of the project's CAs: its certificate is public (what each service's ca.pem holds);
    its key never leaves the database."""

    generation: int = Field(description="1 for the first CA; each rotation makes the next")
    certificate: str = Field(description="The CA's certificate, PEM")
    created_at: datetime
    retired_at: datetime | None = Field(
        description="When every service had stopped trusting it (a rotation completed)"
    )
    trusted: bool = Field(description="Whether services trust it (it is in their ca.pem)")


class ServiceCertificateOut(Schema):
    service: str = Field(description="The service's DNS label")
    identity: str = Field(
        description="Its SPIFFE ID, which the services it calls check against their accept list"
    )
    hostnames: list[str] = Field(description="The names it serves: its hostname, old ones kept")
    authority: int = Field(description="The generation of the CA that signed it")
    serial: str = Field(description="Its serial number, hexadecimal")
    not_after: datetime = Field(description="When it expires")
    renew_after: datetime = Field(description="When the worker renews it, well before then")
    issued_at: datetime


class CARotationOut(Schema):
    rotating: bool
    phase: str = Field(description="trust_new, issue_new or retire_old; empty when none runs")
    phase_label: str
    phase_started_at: datetime | None
    steps: list[PhaseStepOut]
    last_rotated_at: datetime | None = Field(description="When the last rotation completed")


class MutualTLSOut(Schema):
    """Mutual TLS of a project: public facts only (certificates, never a private key)."""

    enabled: bool
    enabled_at: datetime | None
    enabled_by: str | None
    certificate_hours: int = Field(description="How long each service's certificate is valid")
    rotation: CARotationOut
    authorities: list[CertificateAuthorityOut] = Field(description="Oldest first")
    certificates: list[ServiceCertificateOut] = Field(description="By service name")
    pending: int = Field(
        description="Services with no certificate yet: the worker's next pass issues them"
    )


class CallersOut(Schema):
    any: bool = Field(description="Every service of the project may call this one")
    callers: list[str] = Field(
        description="With any false: the DNS labels of the services that may call it"
    )


def _callers_by_choice(schema: dict[str, Any]) -> None:
    """Callers are listed only to restrict them: with ``any`` true the list is empty or left
    out (the operation refuses the rest, saying why)."""
    schema["anyOf"] = [
        {"properties": {"any": {"const": True}, "callers": {"maxItems": 0}}},
        {"properties": {"any": {"const": False}}},
    ]


class CallersIn(Input):
    any: StrictBool = Field(
        description="true: every service of the project may call it; false: only `callers`"
    )
    callers: list[DnsLabel] = Field(
        default_factory=list,
        max_length=200,
        description="With any false, the DNS labels of the services that may call it (empty: "
        "none may)",
    )

    model_config = ConfigDict(json_schema_extra=_callers_by_choice)


class PeerProjectOut(Schema):
    id: str
    name: str
    organization: str


class PeeringHistoryOut(Schema):
    status: str
    by: str
    at: str
    reason: str = ""


class PeeringOut(Schema):
    id: int
    status: PeeringRequest.Status
    status_label: str
    requester: PeerProjectOut
    target: PeerProjectOut
    justification: str
    decision_reason: str
    history: list[PeeringHistoryOut]
    created_at: datetime
    expires_at: datetime


class PeeringRequestIn(Input):
    target: ProjectIdValue = Field(description="The other project's ID")
    justification: Annotated[
        str,
        Matching(
            plain_text.SOME_TEXT,
            _some_text("Say why these projects need to talk privately: support reads it."),
        ),
    ] = Field(max_length=2000, description="Support reads it before approving")


class RejectIn(Input):
    reason: Annotated[
        str,
        Matching(plain_text.SOME_TEXT, _some_text("Give the customer a reason for the rejection.")),
    ] = Field(max_length=2000, description="The customer reads it")


class OrganizationOut(Schema):
    slug: str = Field(description="Names it in the API: /organizations/{slug}/…")
    name: str
    plan: str
    role: Membership.Role = Field(description="What you may do in it")


ProjectName = Annotated[
    str,
    Matching(plain_text.ONE_LINE, _one_line("Enter the project’s name.")),
    documented(maxLength=100),
]


class ProjectCreateIn(Input):
    name: ProjectName
    organization: str | None = Field(
        None,
        description="The organization's slug; may be left out when you belong to one only (a "
        "token always does)",
        json_schema_extra={"maxLength": 50, "pattern": r"^[-a-zA-Z0-9_]+$"},
    )


class ProjectChangeIn(Input):
    name: ProjectName


class ReferenceOut(Schema):
    id: int
    source: str = Field(description="The service whose address is given (its DNS label)")
    consumer: str = Field(description="The service that receives it (its DNS label)")
    variable: str = Field(description="The environment variable the consumer gets")
    created_at: datetime


class ReferencesOut(Schema):
    gives: list[ReferenceOut] = Field(description="Services that receive this one's address")
    receives: list[ReferenceOut] = Field(description="Addresses this service receives")


class ReferenceCreateIn(Input):
    consumers: list[DnsLabel] = Field(
        min_length=1, max_length=200, description="DNS labels of the services that receive it"
    )
    variable: VariableName | None = Field(
        None,
        description="Leave out for the usual name (DATABASE_URL, REDIS_URL, API_URL…), unique "
        "on each consumer",
    )


class NameCheckOut(Schema):
    name: str = Field(description="The name as asked")
    dns_label: str | None = Field(None, description="Its DNS label; null if refused")
    hostname: str | None = None
    error: str | None = Field(None, description="Why the naming rule refuses it")


class AliasOut(Schema):
    id: int
    dns_label: str
    hostname: str = Field(description="The old hostname, still resolving to the service")
    expires_at: datetime = Field(description="When it stops resolving")


class AliasExtendIn(Input):
    seen_expires_at: AwareDatetime | None = Field(
        None,
        description="The end you read: the extension is a day past it, and a retry with the "
        "same value extends once. Left out: a day past the end it has now.",
    )


class MemberOut(Schema):
    id: int
    username: str
    email: str
    role: Membership.Role


class MemberInviteIn(Input):
    who: Annotated[
        str,
        Matching(
            plain_text.ONE_LINE,
            _one_line("Enter the username or email address of the person to add."),
        ),
    ] = Field(max_length=254, description="An existing user's username or email")
    role: Membership.Role = Membership.Role.MEMBER


class MemberChangeIn(Input):
    role: Membership.Role


class TokenOut(Schema):
    id: int
    name: str
    prefix: str = Field(description="Its first characters, to recognise it by")
    role: str
    user: str = Field(description="Whose token it is")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreateIn(Input):
    name: Annotated[
        str,
        Matching(plain_text.ONE_LINE, _one_line("Give the token a name, like ci-deploy.")),
        documented(maxLength=50),
    ] = Field(
        description="Where it is used, e.g. ci-deploy: the audit log reads “you via token "
        "ci-deploy”",
    )
    role: Membership.Role = Field(
        Membership.Role.VIEWER,
        description="What it may do: at most what you may, today (a higher one is refused, 403)",
    )
    expires_in_days: Literal[7, 30, 90, 365] | None = Field(
        None, description="Left out: it never expires"
    )


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The token itself, shown this once (sbk_…)")


class AuditEventOut(Schema):
    id: int
    at: datetime
    actor: str = Field(description="Who, as the log reads it: “alice via token ci”")
    username: str
    via_token: str
    action: str
    action_label: str
    target: str
    details: dict[str, Any]


class AuditPage(Schema):
    items: list[AuditEventOut]
    next_cursor: str | None


# Named apart from ``Service.Kind``, which the document already calls "Kind".
NotificationKind = Annotated[str, Shown({"enum": list(Notification.Kind.values)})]


class NotificationOut(Schema):
    id: int
    kind: NotificationKind
    kind_label: str
    title: str
    detail: str
    organization: str | None = Field(
        description="The organization's slug; null for support staff's (the support queue)"
    )
    project_id: str
    project_name: str
    url: str = Field(description="The dashboard page where to act on it (a path)")
    created_at: datetime
    resolved_at: datetime | None = Field(
        description="When the condition it tells of ended (a sync recovered, a request decided)"
    )
    unread: bool


class NotificationPage(Schema):
    items: list[NotificationOut]
    next_before: int | None = Field(description="Pass as before= for the older ones")
    unread_count: int = Field(ge=0, le=100, description="Unread, counted up to 100")


# -- From the domain objects ---------------------------------------------------------------


def from_project(project: Project, membership: Membership) -> ProjectOut:
    return ProjectOut(
        id=project.uid,
        name=project.name,
        organization=project.organization.slug,
        namespace=project.namespace,
        role=Membership.Role(membership.role),
        sync=from_sync(project),
    )


def from_sync(project: Project) -> SyncOut:
    state = project.sync_state
    return SyncOut(
        state=state,
        label=state.label,
        generation=project.generation,
        applied_generation=project.applied_generation,
        applied_at=project.applied_at,
        error=project.sync_error if state in (state.FAILED, state.RETRYING) else "",
    )


def from_endpoint(endpoint: endpoints.Endpoint, *, revealed: bool) -> EndpointOut:
    return EndpointOut(
        label=endpoint.label,
        env_name=endpoint.env_name,
        value=endpoint.value,
        env_line=endpoint.env_line,
        masked=endpoint.has_secret and not revealed,
    )


def from_service(
    service: Service, names: dict[int, str] | None = None, *, revealed: bool = False
) -> ServiceOut:
    return ServiceOut(
        id=service.pk,
        name=service.display_name,
        dns_label=service.name,
        kind=Service.Kind(service.kind),
        ports=list(service.ports),
        hostname=service.internal_hostname,
        address=(f"{service.internal_hostname}:{service.primary_port}" if service.ports else None),
        cluster_ip=service.cluster_ip,
        status=cast(ServiceStatus, service.status.value),
        generation=service.changed_generation,
        endpoints=[
            from_endpoint(endpoint, revealed=revealed)
            for endpoint in endpoints.endpoints(service, reveal=revealed, names=names)
        ],
        created_at=service.created_at,
        updated_at=service.updated_at,
    )


def from_secret(secret: SharedSecret) -> SecretOut:
    return SecretOut(
        id=secret.pk,
        name=secret.name,
        version=secret.version,
        rotations=(
            secret.rotation_total
            if hasattr(secret, "rotation_total")
            else rotation.rotation_count(secret)
        ),
        services=sorted(service.name for service in secret.services.all()),
        rotating=secret.rotating,
        rotation_phase=secret.rotation_phase,
        rotate_every_days=secret.rotate_every_days,
        last_rotated_at=secret.last_rotated_at,
        created_at=secret.created_at,
    )


def from_rotation(secret: SharedSecret) -> RotationOut:
    latest: SecretRotation | None = secret.rotations.first()
    receivers = [
        ReceiverOut(
            service=service.name,
            version=service.secret_version(secret.name),
            has_workload=bool(service.workload),
            rolled_out=bool(service.workload.get("rolled_out")),
        )
        for service in secret.services.order_by("name")
    ]
    return RotationOut(
        secret=secret.name,
        version=secret.version,
        number=rotation.rotation_count(secret),
        rotating=secret.rotating,
        phase=secret.rotation_phase,
        grace_until=secret.grace_until,
        steps=[
            PhaseStepOut(**step)
            for step in rotation.phase_steps(
                secret,
                completed=latest is not None
                and latest.result == SecretRotation.Result.COMPLETED
                and not secret.rotating,
            )
        ],
        receivers=receivers,
        latest=(
            RotationLogOut(
                started_at=latest.started_at,
                started_by=latest.started_by_label,
                result=latest.result,
                finished_at=latest.finished_at,
                phases=[
                    {"phase": str(entry.get("phase", "")), "at": str(entry.get("at", ""))}
                    for entry in latest.phases
                ],
            )
            if latest is not None
            else None
        ),
    )


def _ca_rotation(state: MutualTLS | None) -> CARotationOut:
    phases: list[str] = [phase for phase, _, _ in mtls.PHASE_STEPS]
    rotating = state is not None and state.rotating
    current = phases.index(state.rotation_phase) if state is not None and rotating else None
    completed = state is not None and state.last_rotated_at is not None
    steps = []
    for index, (phase, title, detail) in enumerate(mtls.PHASE_STEPS):
        if current is None:
            step = "done" if completed and not rotating else "pending"
        else:
            step = "done" if index < current else "current" if index == current else "pending"
        steps.append(PhaseStepOut(phase=phase, title=title, detail=detail, state=step))
    return CARotationOut(
        rotating=rotating,
        phase=state.rotation_phase if state is not None else "",
        phase_label=state.get_rotation_phase_display() if state is not None and rotating else "",
        phase_started_at=state.phase_started_at if state is not None else None,
        steps=steps,
        last_rotated_at=state.last_rotated_at if state is not None else None,
    )


def from_mtls(project: Project) -> MutualTLSOut:
    state = mtls.state_of(project)
    roles = mtls.authority_roles(project, state) if state is not None else {}
    return MutualTLSOut(
        enabled=state is not None,
        enabled_at=state.enabled_at if state is not None else None,
        enabled_by=state.enabled_by_label if state is not None else None,
        certificate_hours=int(mtls.lifetime().total_seconds() // 3600),
        rotation=_ca_rotation(state),
        authorities=[
            CertificateAuthorityOut(
                generation=authority.generation,
                certificate=authority.certificate,
                created_at=authority.created_at,
                retired_at=authority.retired_at,
                trusted=roles.get(authority.generation) in ("signing", "next", "trusted"),
            )
            for authority in (mtls.authorities(project) if state is not None else [])
        ],
        certificates=[
            ServiceCertificateOut(
                service=view.service,
                identity=view.identity,
                hostnames=view.hostnames,
                authority=view.authority,
                serial=view.serial,
                not_after=view.not_after,
                renew_after=view.renew_after,
                issued_at=view.issued_at,
            )
            for view in (mtls.certificates(project) if state is not None else [])
        ],
        pending=mtls.services_without_certificate(project) if state is not None else 0,
    )


def from_callers(service: Service) -> CallersOut:
    if service.accepts_any_caller:
        return CallersOut(any=True, callers=[])
    return CallersOut(any=False, callers=mtls.callers_of([service])[service.pk])


def _peer(project: Project) -> PeerProjectOut:
    return PeerProjectOut(id=project.uid, name=project.name, organization=project.organization.name)


def from_peering(peering: PeeringRequest) -> PeeringOut:
    return PeeringOut(
        id=peering.pk,
        status=PeeringRequest.Status(peering.status),
        status_label=peering.get_status_display(),
        requester=_peer(peering.requester_project),
        target=_peer(peering.target_project),
        justification=peering.justification,
        decision_reason=peering.decision_reason,
        history=[
            PeeringHistoryOut(
                status=str(entry.get("status", "")),
                by=str(entry.get("by", "")),
                at=str(entry.get("at", "")),
                reason=str(entry.get("reason", "") or ""),
            )
            for entry in peering.history
        ],
        created_at=peering.created_at,
        expires_at=peering.expires_at,
    )


def from_reference(reference: ReferenceVariable) -> ReferenceOut:
    return ReferenceOut(
        id=reference.pk,
        source=reference.source.name,
        consumer=reference.consumer.name,
        variable=reference.variable,
        created_at=reference.created_at,
    )


def from_alias(alias: ServiceAlias) -> AliasOut:
    return AliasOut(
        id=alias.pk,
        dns_label=alias.name,
        hostname=alias.internal_hostname,
        expires_at=alias.expires_at,
    )


def from_member(membership: Membership) -> MemberOut:
    return MemberOut(
        id=membership.pk,
        username=membership.user.get_username(),
        email=membership.user.email,
        role=Membership.Role(membership.role),
    )


def from_token(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.pk,
        name=token.name,
        prefix=token.prefix,
        role=token.role,
        user=token.user.get_username(),
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )


def from_notification(notification: Notification, *, unread: bool) -> NotificationOut:
    project = notification.project
    return NotificationOut(
        id=notification.pk,
        kind=notification.kind,
        kind_label=notification.get_kind_display(),
        title=notification.title,
        detail=notification.detail,
        organization=project.organization.slug if notification.organization_id else None,
        project_id=project.uid,
        project_name=project.name,
        url=notification.get_absolute_url(),
        created_at=notification.created_at,
        resolved_at=notification.resolved_at,
        unread=unread,
    )


def from_event(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut(
        id=event.pk,
        at=event.created_at,
        actor=event.actor_display,
        username=event.actor_label,
        via_token=event.via_token,
        action=event.action,
        action_label=event.get_action_display(),
        target=event.target,
        details=dict(event.details or {}),
    )


def from_connection_test(test: ConnectionTest) -> ConnectionTestOut:
    dns = test.report.get("dns") or {}
    return ConnectionTestOut(
        id=test.pk,
        status=cast(ConnectionTestStatus, test.status),
        hostname=test.hostname,
        ports=list(test.ports),
        expected_ip=test.expected_ip,
        resolved_to=[str(address) for address in dns.get("addresses") or []],
        dns_ms=dns.get("ms"),
        results=[
            PortResultOut(port=r["port"], outcome=r["outcome"], ms=r.get("ms"))
            for r in test.report.get("ports") or []
        ],
        findings=[FindingOut(ok=f["ok"], text=f["text"]) for f in test.findings],
        error=test.error,
        requested_by=test.requested_by.get_username() if test.requested_by else "",
        created_at=test.created_at,
        finished_at=test.finished_at,
    )
