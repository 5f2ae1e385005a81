"""The API's documents: what each endpoint reads and answers, as the OpenAPI schema shows it.

Built from the domain objects by the ``from_*`` functions, never by exposing a model whole, so
a field added to a model never leaks into the API by accident. No schema here holds a secret
value except the two reveal answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from ninja import Schema
from pydantic import Field, StrictInt

from api.models import ApiToken
from networking import endpoints, rotation
from networking.models import (
    AuditEvent,
    ConnectionTest,
    Membership,
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


# Whole numbers only (pydantic's strict mode: no "3000", no true); the range is the form's.
Port = Annotated[StrictInt, documented(minimum=1, maximum=65535)]
ServiceName = Annotated[str, documented(minLength=1, maxLength=100)]


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


class ServiceCreateIn(Schema):
    name: ServiceName = Field(
        description="Becomes the hostname: “Background Worker” → background-worker.internal"
    )
    kind: Service.Kind = Service.Kind.WEB
    ports: list[Port] | None = Field(
        None,
        max_length=50,
        description="Web services default to 8080; databases always use their standard port.",
    )


class ServiceChangeIn(Schema):
    name: ServiceName | None = None
    ports: list[Port] | None = Field(None, json_schema_extra={"maxItems": 10})
    keep_old_name_for_seconds: int | None = Field(
        None,
        ge=0,
        le=30 * 24 * 3600,
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


class SecretCreateIn(Schema):
    name: str = Field(
        description="An environment variable name, like INTERNAL_API_SECRET",
        json_schema_extra={"maxLength": 100},
    )
    value: str | None = Field(
        None,
        description="Leave out to generate a random 256-bit value",
        json_schema_extra={"minLength": 16, "maxLength": 4096},
    )
    services: list[ServiceName] = Field(
        default_factory=list, max_length=200, description="DNS labels of the receiving services"
    )
    rotate_every_days: int | None = Field(None, ge=1, le=365)


class SecretChangeIn(Schema):
    services: list[ServiceName] = Field(max_length=200)
    rotate_every_days: int | None = Field(None, ge=1, le=365)


class SecretValueOut(Schema):
    """Only in the answer to the audited reveal POST: each variable the services get."""

    name: str
    values: dict[str, str]


class RotateIn(Schema):
    value: str | None = Field(
        None,
        description="Leave out to generate a random 256-bit value",
        json_schema_extra={"minLength": 16, "maxLength": 4096},
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


class PeeringRequestIn(Schema):
    target: str = Field(description="The other project's ID", json_schema_extra={"maxLength": 40})
    justification: str = Field(json_schema_extra={"minLength": 1, "maxLength": 2000})


class RejectIn(Schema):
    reason: str = Field(json_schema_extra={"minLength": 1, "maxLength": 2000})


class OrganizationOut(Schema):
    slug: str = Field(description="Names it in the API: /organizations/{slug}/…")
    name: str
    plan: str
    role: Membership.Role = Field(description="What you may do in it")


ProjectName = Annotated[
    str, Field(json_schema_extra={"minLength": 1, "maxLength": 100, "pattern": r"\S"})
]


class ProjectCreateIn(Schema):
    name: ProjectName
    organization: str | None = Field(
        None,
        description="The organization's slug; may be left out when you belong to one only (a "
        "token always does)",
        json_schema_extra={"maxLength": 50, "pattern": r"^[-a-zA-Z0-9_]+$"},
    )


class ProjectChangeIn(Schema):
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


class ReferenceCreateIn(Schema):
    consumers: list[ServiceName] = Field(
        min_length=1, max_length=200, description="DNS labels of the services that receive it"
    )
    variable: str | None = Field(
        None,
        description="Leave out for the usual name (DATABASE_URL, REDIS_URL, API_URL…), unique "
        "on each consumer",
        json_schema_extra={"maxLength": 100},
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


class AliasExtendIn(Schema):
    seen_expires_at: datetime | None = Field(
        None,
        description="The end you read: the extension is a day past it, and a retry with the "
        "same value extends once. Left out: a day past the end it has now.",
    )


class MemberOut(Schema):
    id: int
    username: str
    email: str
    role: Membership.Role


class MemberInviteIn(Schema):
    who: str = Field(
        description="An existing user's username or email",
        json_schema_extra={"minLength": 1, "maxLength": 254},
    )
    role: Membership.Role = Membership.Role.MEMBER


class MemberChangeIn(Schema):
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


class TokenCreateIn(Schema):
    name: str = Field(
        description="Where it is used, e.g. ci-deploy: the audit log reads “you via token "
        "ci-deploy”",
        json_schema_extra={"minLength": 1, "maxLength": 50},
    )
    role: Membership.Role = Field(
        Membership.Role.VIEWER, description="What it may do: at most what you may, today"
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
