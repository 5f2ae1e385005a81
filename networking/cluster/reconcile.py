"""The reconcile loop: make the cluster match a project's rows, the way a controller does.

Level-triggered: a pass reads the current rows, builds the full desired state and lets the
backend apply only what differs, so running it again, twice at once, or after a lost message
is harmless.

What differs is judged against the ``AppliedRecord``, a keyed digest of every object the last
pass applied, so a change's pass writes what changed and reads nothing from the cluster (one
Service patched for one service's new port, at any project size). The record is trusted only
while nothing else could have changed the namespace: the watcher distrusts it the moment it
sees a difference in its watch cache, the resync distrusts the records of the projects verified
longest ago, and a failed pass distrusts its own; the next pass then reads everything, as
Argo CD compares with the live state, and records afresh. A pass also reads everything while
workloads roll out (a rotation waits on them), and whenever no watcher is watching
(``WatcherHeartbeat``), since then nobody would distrust the record.

A compare-and-swap lease on the project row keeps two passes of one project from overlapping
without holding a database transaction open during cluster I/O.

The lease is short (``RECONCILE_LEASE_SECONDS``, 10 s by default) and a heartbeat thread renews
it every third of that while the pass runs, however long the pass takes. So a lease that is
still live means a living worker is applying (the dashboard's "Applying"), and a worker that
was killed (``kill -9``, an OOM kill, a lost node) lets its lease lapse within one lease time;
the badge then falls back to what is true ("Queued", or "In sync").

What re-runs the dead worker's project: not the broker. Tasks ack late, but Redis hands an
unacknowledged message to another worker only after its visibility timeout, and that must stay
long (``CELERY_VISIBILITY_TIMEOUT``, 600 s): a retry's countdown is held unacknowledged by a
worker for as long as the countdown runs, and a long pass would be handed out again while it
still runs. Instead beat runs ``requeue_abandoned_reconciles`` every half lease: one query on a
partial index of the leases held right now finds those that lapsed with their token still set
(their holder never released them), enqueues a reconcile for each, then clears the lease by
compare-and-swap. A killed worker's project is thus picked up again within 1.5 lease times plus
one pass (about 15 s), and standing still costs one cheap query per tick, not work per project.
The killed worker's own message still comes back after the visibility timeout: a no-op pass.
"""

from __future__ import annotations

import base64
import functools
import logging
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Exists, F, OuterRef, Prefetch, Q, Subquery, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.crypto import salted_hmac

from networking import peering, rotation
from networking.cluster.backend_choice import get_backend
from networking.cluster.backends import ApplyResult, Backend
from networking.cluster.desired import (
    ClusterSettings,
    DesiredState,
    SecretSpec,
    ServiceSpec,
    WorkloadSpec,
    build_desired_state,
    changes_since,
)
from networking.cluster.errors import ClusterError, PermanentClusterError
from networking.models import (
    AppliedRecord,
    ApplyAttempt,
    PeeringRequest,
    Project,
    Service,
    SharedSecret,
    WatcherHeartbeat,
)

logger = logging.getLogger(__name__)

# Passes in one task when the generation keeps moving; the next change enqueues another task.
MAX_PASSES = 5


@dataclass
class Outcome:
    status: str  # "applied", "in_sync", "busy" (another worker holds it), "missing"
    generation: int = 0
    changes: list[str] = field(default_factory=list)
    # For "busy": seconds until the holder's lease lapses, should the holder have died.
    lease_remaining: float = 0.0
    # A rotation waits on rollouts or a grace window: look again in this many seconds.
    recheck_in: float | None = None


class ReconcileFailed(Exception):
    def __init__(
        self, error: ClusterError, *, generation: int, changes: list[str], started_at: float
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.generation = generation
        self.changes = changes
        self.started_at = started_at


def cluster_settings() -> ClusterSettings:
    return ClusterSettings(
        workload_label=settings.WORKLOAD_LABEL, ingress_namespace=settings.INGRESS_NAMESPACE
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
    def ports(self) -> list[int]: ...


def desired_state_for(
    project: Project,
    secrets: list[SecretSpec] | None = None,
    peerings: list[PeeringRequest] | None = None,
    services: Sequence[_ServiceLike] | None = None,
) -> DesiredState:
    if services is None:
        services = list(project.services.only("name", "kind", "ports"))
    if secrets is None:
        secrets = _secret_specs(_shared_secrets(project))
    if peerings is None:
        peerings = peering.connected_peerings(project)
    return build_desired_state(
        namespace=project.namespace,
        project_uid=project.uid,
        services=[
            ServiceSpec(
                name=service.name,
                kind=service.kind,
                ports=service.ports,
                public=service.kind == Service.Kind.WEB,
            )
            for service in services
        ],
        settings=cluster_settings(),
        secrets=secrets,
        peer_namespaces=[p.peer_of(project).namespace for p in peerings],
    )


def digest_key() -> bytes:
    """The key of the applied record's digests, derived from ``SECRET_KEY``."""
    return _digest_key(settings.SECRET_KEY)


@functools.cache
def _digest_key(secret_key: str) -> bytes:
    return salted_hmac(
        "networking.applied-record", "", secret=secret_key, algorithm="sha256"
    ).digest()


def _shared_secrets(project: Project) -> list[SharedSecret]:
    return list(
        project.shared_secrets.prefetch_related(Prefetch("services", Service.objects.only("name")))
    )


def claim(project_id: int, *, take_queued: bool = False) -> str | None:
    """Take the project's lease if nobody holds it (or the holder's lease lapsed).

    ``take_queued``: the caller is the project's queued message, so the next change may queue
    another (``Project.take_queued_reconcile``), said in the same statement.
    """
    token = secrets.token_hex(16)
    now = timezone.now()
    fields: dict[str, object] = {
        "reconcile_lease_until": now + timedelta(seconds=settings.RECONCILE_LEASE_SECONDS),
        "reconcile_lease_token": token,
    }
    if take_queued:
        fields["reconcile_queued_at"] = None
    claimed = (
        Project.objects.filter(pk=project_id)
        .filter(Q(reconcile_lease_until__isnull=True) | Q(reconcile_lease_until__lte=now))
        .update(**fields)
    )
    if not claimed and take_queued:
        Project.take_queued_reconcile(project_id)
    return token if claimed else None


def release(project_id: int, token: str) -> None:
    Project.objects.filter(pk=project_id, reconcile_lease_token=token).update(
        reconcile_lease_until=None, reconcile_lease_token=""
    )


def renew(project_id: int, token: str) -> bool:
    """Extend the lease we hold by a full lease time; False if it is no longer ours."""
    return bool(
        Project.objects.filter(pk=project_id, reconcile_lease_token=token).update(
            reconcile_lease_until=timezone.now()
            + timedelta(seconds=settings.RECONCILE_LEASE_SECONDS)
        )
    )


def _keep_renewing(project_id: int, token: str, stop: threading.Event) -> None:
    """The heartbeat: renew every third of the lease until stopped or the lease is taken.

    It runs in its own thread, so Django gives it its own database connection, closed here.
    """
    try:
        while not stop.wait(settings.RECONCILE_LEASE_SECONDS / 3):
            try:
                if not renew(project_id, token):
                    # Taken over (our renewals stalled past the lease) or released: the other
                    # holder's pass is just as correct as ours, so stop claiming the project.
                    logger.warning("Lost the reconcile lease of project %s", project_id)
                    return
            except Exception:
                # The database may be back by the next renewal: the lease outlasts two misses.
                logger.exception("Could not renew the reconcile lease of project %s", project_id)
                connection.close()
    finally:
        connection.close()


@contextmanager
def renewed(project_id: int, token: str) -> Iterator[None]:
    """Hold a claimed lease while the block runs, renewing it, then release it."""
    stop = threading.Event()
    heartbeat = threading.Thread(
        target=_keep_renewing,
        args=(project_id, token, stop),
        name=f"reconcile-lease-{project_id}",
        daemon=True,
    )
    heartbeat.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.join()
        release(project_id, token)


def abandoned_leases() -> list[tuple[int, str]]:
    """The projects whose lease holder died mid-pass, with the token it left behind.

    A living holder renews its lease and releases it when done, so a lease that lapsed with its
    token still set was left by a worker that is gone. One query on a partial index that holds
    only the leases taken right now.
    """
    return list(
        Project.objects.filter(reconcile_lease_until__lte=timezone.now())
        .exclude(reconcile_lease_token="")
        .values_list("pk", "reconcile_lease_token")
    )


def clear_abandoned_lease(project_id: int, token: str) -> None:
    """Forget a dead holder's lease, so the next tick does not enqueue its project again.

    Compared on the token and the lapse, so a worker that claimed the project meanwhile (or a
    holder that was only slow and renewed) keeps its lease.
    """
    Project.objects.filter(
        pk=project_id, reconcile_lease_token=token, reconcile_lease_until__lte=timezone.now()
    ).update(reconcile_lease_until=None, reconcile_lease_token="")


def projects_to_resync() -> list[int]:
    """Projects the periodic resync must look at: behind, failed, or due a full re-read.

    Those due a re-read have their applied record distrusted, so their passes read the
    cluster (the Secret included, which no process watches) instead of trusting the record.
    """
    live_lease = Q(reconcile_lease_until__gt=timezone.now())
    behind = list(
        Project.objects.filter(Q(applied_generation__lt=F("generation")) | ~Q(sync_error=""))
        .exclude(live_lease)
        .values_list("pk", flat=True)
    )
    oldest = list(
        Project.objects.exclude(live_lease)
        .exclude(pk__in=behind)
        .order_by(F("verified_at").asc(nulls_first=True))
        .values_list("pk", flat=True)[: settings.RESYNC_VERIFY_PROJECTS]
    )
    AppliedRecord.distrust(oldest)
    return behind + oldest


def reconcile(
    project_id: int, backend: Backend | None = None, *, take_queued: bool = False
) -> Outcome:
    """Bring one project's namespace in line with its rows; raise ``ReconcileFailed``.

    ``take_queued``: called for the project's queued message (see ``claim``).
    """
    outcome = Outcome("busy")
    for _ in range(MAX_PASSES):
        token = claim(project_id, take_queued=take_queued)
        take_queued = False
        if token is None:
            lease_until = (
                Project.objects.filter(pk=project_id)
                .values_list("reconcile_lease_until", flat=True)
                .first()
            )
            if lease_until is None and not Project.objects.filter(pk=project_id).exists():
                return Outcome("missing")
            # The holder checks the generation after releasing, so it will see our change.
            remaining = (lease_until - timezone.now()).total_seconds() if lease_until else 0.0
            return Outcome(
                "busy", generation=outcome.generation, lease_remaining=max(remaining, 0.0)
            )
        with renewed(project_id, token):
            project = _project_for_pass(project_id)
            if project is None:
                return Outcome("missing")
            try:
                outcome = _one_pass(project, backend or get_backend())
            except ReconcileFailed:
                raise
            except Exception:
                logger.exception("Reconcile of project %s crashed", project_id)
                raise ReconcileFailed(
                    PermanentClusterError(
                        "An internal error stopped the apply. It has been logged; "
                        "press Retry once it is fixed."
                    ),
                    generation=project.generation,
                    changes=[],
                    started_at=time.time(),
                ) from None
        # Checked after releasing: a change committed from here on enqueues a task that can
        # claim the lease, and one committed before is seen here.
        if not Project.objects.filter(pk=project_id, generation__gt=outcome.generation).exists():
            return outcome
    return outcome


def _project_for_pass(project_id: int) -> Project | None:
    """The project with its applied record, whether it has secrets or peerings to read, and
    when a watcher last said it was watching: one query."""
    of_project = Q(requester_project=OuterRef("pk")) | Q(target_project=OuterRef("pk"))
    return (
        Project.objects.select_related("applied_record")
        .annotate(
            has_secrets=Exists(SharedSecret.objects.filter(project=OuterRef("pk"))),
            has_peerings=Exists(
                PeeringRequest.objects.filter(of_project, status__in=peering.IN_FLIGHT)
            ),
            watcher_seen_at=Subquery(WatcherHeartbeat.objects.filter(pk=1).values("seen_at")),
        )
        .filter(pk=project_id)
        .first()
    )


class _ServiceRow(NamedTuple):
    pk: int
    name: str
    kind: str
    ports: list[int]
    cluster_ip: str | None
    workload: dict[str, Any]


def _one_pass(project: Project, backend: Backend) -> Outcome:
    generation = project.generation
    services = [
        _ServiceRow(*row)
        for row in project.services.values_list(
            "pk", "name", "kind", "ports", "cluster_ip", "workload"
        )
    ]
    secrets = _shared_secrets(project) if getattr(project, "has_secrets", True) else []
    specs = _secret_specs(secrets)
    in_flight = (
        peering.in_flight_peerings(project) if getattr(project, "has_peerings", True) else []
    )
    peerings = [p for p in in_flight if p.status in PeeringRequest.CONNECTED]
    desired = desired_state_for(project, specs, peerings, services)
    digests = desired.digests(digest_key())
    record = _applied_record(project)
    # A cluster's error message could quote what was sent: never let a secret value through.
    sensitive = [
        text
        for spec in specs
        for value in spec.environment.values()
        for text in (value, base64.b64encode(value.encode()).decode())
    ]
    # Read the cluster when the record cannot be trusted (never made, distrusted, or no watcher
    # to distrust it), and while workloads roll out (a rotation waits on them; the dashboard
    # shows how far they are).
    full = (
        record.digests is None
        or not WatcherHeartbeat.watching(getattr(project, "watcher_seen_at", None))
        or any(secret.rotating for secret in secrets)
        or any(service.workload.get("rolled_out") is False for service in services)
    )
    started_at = time.time()
    try:
        if full:
            result = backend.apply(desired)
        else:
            assert record.digests is not None
            changes = changes_since(record.digests, digests)
            result = backend.apply_changes(desired, changes)
    except ClusterError as error:
        raise ReconcileFailed(
            error.redacted(sensitive), generation=generation, changes=[], started_at=started_at
        ) from None

    changed = []
    for service in services:
        cluster_ip = result.cluster_ips.get(service.name, None)
        if not result.verified and cluster_ip is None:
            cluster_ip = service.cluster_ip  # not read: what was recorded still holds
        workload = service.workload
        if result.all_workloads:
            status = result.workloads.get(service.name)
            workload = status.as_dict() if status is not None else {}
        if service.cluster_ip != cluster_ip or service.workload != workload:
            changed.append(Service(pk=service.pk, cluster_ip=cluster_ip, workload=workload))
    if changed:
        Service.objects.bulk_update(changed, ["cluster_ip", "workload"])

    if result.errors:
        permanent = [error for error in result.errors if not error.transient]
        raise ReconcileFailed(
            (permanent or result.errors)[0].redacted(sensitive),
            generation=generation,
            changes=result.changes,
            started_at=started_at,
        )

    recheck_in = None
    if result.all_workloads:
        recheck_in = rotation.advance_ready(secrets, _still_rolling_out(desired, result))
    connected_ids = {p.pk for p in peerings}
    if peering.needs_recording(project, in_flight, connected_ids):
        peering.record_applied(project, connected_ids)
    # Restarts we caused are still rolling out: keep the dashboard's view of them fresh for a
    # while (the watcher notices the rest; the periodic resync covers a rollout that takes longer).
    rolling = any(status.secrets and not status.rolled_out for status in result.workloads.values())
    last_change = timezone.now() if result.changes else project.applied_at
    if (
        rolling
        and last_change is not None
        and (timezone.now() - last_change).total_seconds() < settings.ROLLOUT_WATCH_SECONDS
    ):
        poll = float(settings.ROTATION_POLL_SECONDS)
        recheck_in = poll if recheck_in is None else min(recheck_in, poll)

    _record_applied(project, generation, record, digests, result=result, at=started_at)
    if result.changes:
        logger.info(
            "Applied generation %s of project %s: %s",
            generation,
            project.uid,
            summarize(result.changes),
        )
    return Outcome(
        "applied" if result.changes else "in_sync",
        generation=generation,
        changes=result.changes,
        recheck_in=recheck_in,
    )


def _applied_record(project: Project) -> AppliedRecord:
    """The project's applied record (read with the project), made on its first pass."""
    try:
        return project.applied_record
    except AppliedRecord.DoesNotExist:
        record, _ = AppliedRecord.objects.get_or_create(project=project)
        return record


def _record_applied(
    project: Project,
    generation: int,
    record: AppliedRecord,
    digests: dict[str, str],
    *,
    result: ApplyResult,
    at: float,
) -> None:
    """Store what the pass achieved: nothing at all when it changed and learned nothing."""
    fields: dict[str, Any] = {}
    if project.applied_generation < generation:
        fields.update(
            applied_generation=Greatest(F("applied_generation"), Value(generation)),
            applied_at=Case(
                When(applied_generation__lt=generation, then=Value(timezone.now())),
                default=F("applied_at"),
            ),
        )
    if project.sync_error or project.sync_error_generation or project.sync_retry_at:
        fields.update(sync_error="", sync_error_generation=None, sync_retry_at=None)
    if result.verified:
        fields["verified_at"] = timezone.now()
    if fields:
        # First and on its own: the dashboard says "In sync" as soon as this commits.
        Project.objects.filter(pk=project.pk).update(**fields)
    with transaction.atomic():
        if digests != record.digests:
            # Unless the record was distrusted meanwhile: then the next pass reads everything.
            AppliedRecord.objects.filter(project_id=project.pk, marks=record.marks).update(
                digests=digests
            )
        if result.changes:
            ApplyAttempt.record(
                project=project,
                generation=generation,
                started_at=datetime.fromtimestamp(at, tz=UTC),
                duration_ms=int((time.time() - at) * 1000),
                result=ApplyAttempt.Result.APPLIED,
                changes=result.changes,
            )


def _still_rolling_out(desired: DesiredState, result: ApplyResult) -> set[str]:
    """The services whose workloads do not all run the pod template we want yet."""
    return {
        service
        for service, status in result.workloads.items()
        if not (
            status.secrets == desired.workloads.get(service, WorkloadSpec()).annotation
            and status.rolled_out
        )
    }


def summarize(changes: list[str], limit: int = 10) -> str:
    shown = "; ".join(changes[:limit])
    return shown if len(changes) <= limit else f"{shown}; and {len(changes) - limit} more"


def record_failure(project_id: int, failure: ReconcileFailed, *, retry_in: float | None) -> None:
    """Show the failure on the project; ``retry_in`` says a retry is already scheduled."""
    now = timezone.now()
    with transaction.atomic():
        # Some objects may have been written, some not: the next pass reads everything.
        AppliedRecord.distrust([project_id])
        updated = Project.objects.filter(pk=project_id).update(
            sync_error=str(failure.error),
            sync_error_generation=failure.generation,
            sync_retry_at=now + timedelta(seconds=retry_in) if retry_in is not None else None,
        )
        if updated:
            ApplyAttempt.record(
                project_id=project_id,
                generation=failure.generation,
                started_at=datetime.fromtimestamp(failure.started_at, tz=UTC),
                duration_ms=int((time.time() - failure.started_at) * 1000),
                result=ApplyAttempt.Result.FAILED,
                changes=failure.changes,
                error=str(failure.error),
            )
    logger.warning(
        "Reconcile of project %s failed (%s): %s",
        project_id,
        f"retrying in {retry_in:.1f}s" if retry_in is not None else "not retrying",
        failure.error,
    )
