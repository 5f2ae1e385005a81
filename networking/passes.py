"""A project's reconcile pass as the domain sees it: what its namespace should hold, from its
rows and the domain's rules, and what follows from applying it.

The cluster layer (``networking.cluster``) applies desired states and says what the cluster did,
knowing nothing of rotations, peerings or reference variables: each pass asks ``plan`` (handed
to it by ``reconcile`` here) for the desired state, the values that must never show in an error,
and what to do once applied (a rotation moves on once its workloads have rolled out, a peering
becomes active once both namespaces hold their policy). The watcher judges drift against
``desired_state_for``; the dashboard's network map reads it too.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.db.models import Prefetch

from networking import mtls, peering, references, rotation
from networking.cluster import lease
from networking.cluster import reconcile as loop
from networking.cluster.backends import ApplyResult, Backend
from networking.cluster.desired import (
    DesiredState,
    ReferenceSpec,
    SecretSpec,
    ServiceSpec,
    TLSSpec,
    build_desired_state,
    patch_desired_state,
)
from networking.cluster.reconcile import Outcome, Plan, cluster_settings, digest_key
from networking.cluster.watcher import WatchView
from networking.models import (
    PeeringRequest,
    Project,
    ReferenceVariable,
    Service,
    ServiceAlias,
    SharedSecret,
)


def reconcile(
    project_id: int, backend: Backend | None = None, *, take_queued: bool = False
) -> Outcome:
    """Bring one project's namespace in line with its rows (``networking.cluster.reconcile``)."""
    return loop.reconcile(project_id, plan, backend, take_queued=take_queued)


@dataclass(frozen=True)
class _Built:
    """What a pass's desired state was built from, kept to patch the next one's
    (``Plan.built``): everything but the services, and each service's spec by its row's id."""

    inputs: tuple[Any, ...]
    specs: dict[int, ServiceSpec]
    desired: DesiredState
    # The public services' names (the ingress policy's), kept so a pass that changes none
    # leaves the policy as it was instead of listing them again.
    public: set[str]


def plan(claimed: lease.Claim, previous: _Built | None = None) -> Plan:
    """What one pass of the claimed project applies, and what follows once it has.

    ``previous``: what this worker's last pass of the project built. When only services
    changed since (``claimed.changed``), its desired state is patched with them instead of
    built again from every service: in place, at the cost of what changed, not of what the
    project holds. The pass owns it (``reconcile._recall`` takes the worker's memory, and a
    pass that fails leaves none behind), so nothing else sees it half patched.
    """
    project = claimed.project
    aliases = aliases_of(project.pk) if claimed.has_aliases else {}
    given = reference_specs(project.pk) if claimed.has_references else []
    secrets = _shared_secrets(project) if claimed.has_secrets else []
    specs = _secret_specs(secrets)
    in_flight = peering.in_flight_peerings(project) if claimed.has_peerings else []
    peerings = [p for p in in_flight if p.status in PeeringRequest.CONNECTED]
    settings = cluster_settings()
    peer_namespaces = sorted({p.peer_of(project).namespace for p in peerings})
    # Mutual TLS: certificates missing or due are issued first; the files go in every pass's
    # desired state (and, like secrets, only as a keyed digest into what the worker keeps).
    tls, ca_rotation = (
        mtls.for_pass(project, {row.pk: row.name for row in claimed.services}, aliases)
        if claimed.has_mtls
        else (None, None)
    )
    inputs = (
        project.namespace,
        project.uid,
        settings,
        peer_namespaces,
        aliases,
        _fingerprint(specs, given),
        tls.fingerprint(digest_key()) if tls is not None else None,
    )
    touched = None
    if previous is not None and claimed.changed is not None and previous.inputs == inputs:
        service_specs, public = previous.specs, previous.public
        removed, added = [], []
        for row in claimed.changed:
            spec = _service_spec(row, aliases)
            before = service_specs.get(row.pk)
            if spec == before:
                continue
            if before is not None:
                removed.append(before)
            added.append(spec)
            service_specs[row.pk] = spec
        if removed or added:
            # The same names out as in: the public services are as they were (most changes).
            gone = {spec.name for spec in removed if spec.public}
            came = {spec.name for spec in added if spec.public}
            public.difference_update(gone)
            public.update(came)
            desired, touched = patch_desired_state(
                previous.desired,
                project_uid=project.uid,
                removed=removed,
                added=added,
                public=public if gone != came else None,
                settings=settings,
                secrets=specs,
                references=given,
                tls=tls,
            )
        else:
            desired, touched = previous.desired, set()
    else:
        service_specs = {row.pk: _service_spec(row, aliases) for row in claimed.services}
        public = {spec.name for spec in service_specs.values() if spec.public}
        desired = build_desired_state(
            namespace=project.namespace,
            project_uid=project.uid,
            services=service_specs.values(),
            settings=settings,
            secrets=specs,
            peer_namespaces=peer_namespaces,
            references=given,
            tls=tls,
        )
    # A cluster's error message could quote what was sent: never let a secret value through.
    values = [value for spec in specs for value in spec.environment.values()]
    values += [reference.value for reference in given]
    values += [files.key for files in tls.services.values()] if tls is not None else []
    sensitive = [
        text for value in values for text in (value, base64.b64encode(value.encode()).decode())
    ]

    def after_apply(result: ApplyResult, rolling: set[str] | None) -> float | None:
        recheck_in = rotation.advance_ready(secrets, rolling) if rolling is not None else None
        connected_ids = {p.pk for p in peerings}
        if peering.needs_recording(project, in_flight, connected_ids):
            peering.record_applied(project, connected_ids)
        if ca_rotation is not None:
            wait = mtls.after_apply(project, ca_rotation)
            if wait is not None:
                recheck_in = wait if recheck_in is None else min(recheck_in, wait)
        return recheck_in

    return Plan(
        desired=desired,
        sensitive=sensitive,
        read_cluster=any(secret.rotating for secret in secrets),
        after_apply=after_apply,
        touched=touched,
        built=_Built(inputs, service_specs, desired, public),
    )


def _fingerprint(secrets: list[SecretSpec], given: list[ReferenceSpec]) -> str:
    """A keyed digest of the shared secrets and reference variables a desired state was built
    with: what a worker keeps between passes instead of their values."""
    text = json.dumps(
        [
            [
                [s.name, s.environment, s.version, sorted(s.receivers), s.references]
                for s in secrets
            ],
            [[r.consumer, r.variable, r.value, r.version] for r in given],
        ],
        sort_keys=True,
    )
    return hashlib.blake2b(text.encode(), digest_size=16, key=digest_key()).hexdigest()


def _service_spec(service: _ServiceLike, aliases: dict[str, tuple[str, ...]]) -> ServiceSpec:
    return ServiceSpec(
        service.name,
        service.kind,
        tuple(service.ports),
        service.kind == Service.Kind.WEB,
        aliases.get(service.name, ()),
    )


def secret_specs(project: Project, *, with_values: bool = True) -> list[SecretSpec]:
    """The project's shared secrets for the desired state; without values for comparisons
    that never look at the Secret itself (the watcher's)."""
    return _secret_specs(_shared_secrets(project), with_values=with_values)


def _secret_specs(secrets: list[SharedSecret], *, with_values: bool = True) -> list[SecretSpec]:
    return [
        SecretSpec(
            name=secret.name,
            environment={
                key: value.reveal() if with_values else ""
                for key, value in rotation.environment(secret).items()
            },
            version=secret.version,
            receivers=frozenset(service.name for service in secret.services.all()),
            references=tuple(rotation.environment_names(secret.name)),
        )
        for secret in secrets
    ]


class _ServiceLike(Protocol):
    """A service row as the builder reads it: a model instance or a ``_ServiceRow``."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def ports(self) -> Sequence[int]: ...


def desired_state_for(
    project: Project,
    secrets: list[SecretSpec] | None = None,
    peerings: list[PeeringRequest] | None = None,
    services: Sequence[_ServiceLike] | None = None,
    aliases: dict[str, tuple[str, ...]] | None = None,
    references: list[ReferenceSpec] | None = None,
    tls: TLSSpec | None = None,
) -> DesiredState:
    """``aliases``: each service's old names still resolving, by its name; ``references``: the
    reference variables with their values. Each is read when None; ``tls``: mutual TLS's files
    (None: left out, as nothing that reads this needs them)."""
    if services is None:
        services = list(project.services.only("name", "kind", "ports"))
    if aliases is None:
        aliases = aliases_of(project.pk)
    if references is None:
        references = reference_specs(project.pk)
    if secrets is None:
        secrets = _secret_specs(_shared_secrets(project))
    if peerings is None:
        peerings = peering.connected_peerings(project)
    return build_desired_state(
        namespace=project.namespace,
        project_uid=project.uid,
        services=[_service_spec(service, aliases) for service in services],
        settings=cluster_settings(),
        secrets=secrets,
        peer_namespaces=[p.peer_of(project).namespace for p in peerings],
        references=references,
        tls=tls,
    )


def aliases_of(
    project_id: int, services: Collection[str] | None = None
) -> dict[str, tuple[str, ...]]:
    """The old names each service of the project still answers to, by the service's name;
    only those of ``services`` if given."""
    rows = ServiceAlias.objects.filter(project_id=project_id)
    if services is not None:
        rows = rows.filter(service__name__in=list(services))
    found: dict[str, list[str]] = {}
    for service, alias in rows.order_by("name").values_list("service__name", "name"):
        found.setdefault(service, []).append(alias)
    return {service: tuple(names) for service, names in found.items()}


def reference_specs(project_id: int) -> list[ReferenceSpec]:
    """The project's reference variables with their values (a connection string's password
    included: they go into the Secret, nowhere else)."""
    key = digest_key()
    specs = []
    rows = ReferenceVariable.objects.filter(project_id=project_id).select_related(
        "source", "consumer"
    )
    for row in rows:
        value = references.value_of(row.source)
        specs.append(
            ReferenceSpec(
                consumer=row.consumer.name,
                variable=row.variable,
                value=value,
                version=references.version_of(value, key),
            )
        )
    return specs


def _shared_secrets(project: Project) -> list[SharedSecret]:
    return list(
        project.shared_secrets.prefetch_related(Prefetch("services", Service.objects.only("name")))
    )


def watch_view(project: Project, scope: set[str] | None) -> WatchView:
    """What the watcher compares a look at ``project`` with (``scope``: the services whose
    objects changed; None: everything). Secret values are never needed: the watcher does not
    see Secrets."""
    rows = project.services.only("name", "kind", "ports", "cluster_ip", "workload")
    aliases = None
    if scope is not None:
        # A Service named by an old hostname is its service's: look at that service, with
        # every old name it still answers to.
        owners = dict(
            ServiceAlias.objects.filter(project=project, name__in=sorted(scope)).values_list(
                "name", "service__name"
            )
        )
        names = {owners.get(name, name) for name in scope}
        rows = rows.filter(name__in=sorted(names))
        aliases = aliases_of(project.pk, names)
        scope = scope | names | {alias for kept in aliases.values() for alias in kept}
    services = list(rows)
    desired = desired_state_for(
        project,
        secrets=secret_specs(project, with_values=False),
        # Policies are compared only in a look at everything.
        peerings=None if scope is None else [],
        services=services,
        aliases=aliases,
        tls=mtls.shape(project, [service.name for service in services]),
    )
    return WatchView(desired=desired, services=services, scope=scope)
