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

Two passes of one project never overlap: each holds the project's lease (``lease.py``), whose
claim is also the pass's first read.

A change's pass is what a user waits for between saving and "In sync", so its path is kept to
what it must do: the claim (one statement, the services that changed included), the objects
that changed (one request each), the applied generation (one statement). Everything else it
records (the digests, the history) is written after the dashboard can already say "In sync".
And it costs what the change does, not what the project holds: the worker remembers its last
pass of the project (``Memory``), patches the desired state it built then with the services
that changed, and digests and compares only those (and what other workers wrote since).
"""

from __future__ import annotations

import functools
import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from networking import live
from networking.cluster import lease, statements
from networking.cluster.backend_choice import get_backend
from networking.cluster.backends import ApplyResult, Backend
from networking.cluster.desired import (
    Changes,
    ClusterSettings,
    DesiredState,
    WorkloadSpec,
    changes_since,
)
from networking.cluster.errors import ClusterError, PermanentClusterError
from networking.cluster.lease import ServiceRow
from networking.models import AppliedRecord, ApplyAttempt, Notification, Project, Service

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


def _nothing_follows(result: ApplyResult, rolling: set[str] | None) -> float | None:
    return None


@dataclass
class Plan:
    """What one pass applies, handed to the loop by the domain (``networking.passes``): the
    loop knows nothing of rotations, peerings or reference variables."""

    desired: DesiredState
    # Values that must never reach an error message (secret values, and their base64).
    sensitive: list[str] = field(default_factory=list)
    # Read the whole namespace whatever the record says (a rotation waits on rollouts).
    read_cluster: bool = False
    # Called once the pass has applied, with the services whose workloads still roll out
    # (None when the pass did not look at workloads); seconds until the next look, if any.
    after_apply: Callable[[ApplyResult, set[str] | None], float | None] = _nothing_follows
    # When the desired state was patched from the last pass's (``Memory.built``): the record
    # keys ("Kind/name") of everything that may differ from it. None: built whole.
    touched: set[str] | None = None
    # What the planner keeps for patching the next pass's desired state (``Memory.built``).
    built: Any = None


# The domain's part of a pass: its plan, from the claim (with the services' rows) and what the
# planner kept from this worker's last pass of the project (None: nothing, build it whole).
Planner = Callable[[lease.Claim, Any], Plan]


@dataclass
class Memory:
    """What this worker's last pass of a project stored, to start the next from.

    A change to one service of a thousand then reads one row (``lease.claim``), rebuilds and
    digests that service's objects, and compares with the record only those and the ones
    other workers wrote since (``AppliedRecord.written``): the pass costs what it changes,
    not what the project holds. A failed pass forgets it.
    """

    # The record's version when the pass ended and its digests then (those of ``built``), the
    # generation and the services it read: what the claim starts from.
    known: lease.Known
    built: Any


# By project id; the projects a worker passed most recently (a thousand-service project's
# memory is a few hundred kilobytes, most of it shared with the builder's caches).
MEMORY_PROJECTS = 64
_memory: dict[int, Memory] = {}
_memory_lock = threading.Lock()


def _remember(project_id: int, memory: Memory) -> None:
    with _memory_lock:
        _memory.pop(project_id, None)
        _memory[project_id] = memory
        while len(_memory) > MEMORY_PROJECTS:
            del _memory[next(iter(_memory))]


def _recall(project_id: int) -> Memory | None:
    """Taken, not read: a pass that fails leaves no memory behind."""
    with _memory_lock:
        return _memory.pop(project_id, None)


def forget() -> None:
    """Forget every project's last pass (each next pass reads its services afresh)."""
    with _memory_lock:
        _memory.clear()


def cluster_settings() -> ClusterSettings:
    return ClusterSettings(
        workload_label=settings.WORKLOAD_LABEL, ingress_namespace=settings.INGRESS_NAMESPACE
    )


def digest_key() -> bytes:
    """The key of the applied record's digests, derived from ``SECRET_KEY``."""
    return _digest_key(settings.SECRET_KEY)


@functools.cache
def _digest_key(secret_key: str) -> bytes:
    return salted_hmac(
        "networking.applied-record", "", secret=secret_key, algorithm="sha256"
    ).digest()


def projects_to_resync() -> list[int]:
    """Projects the periodic resync must look at: behind, failed, or due a full re-read.

    Those due a re-read have their applied record distrusted, so their passes read the
    cluster (the Secret's values included, which the watcher never sees) instead of trusting
    the record.
    """
    behind = list(
        Project.objects.filter(Q(applied_generation__lt=F("generation")) | ~Q(sync_error=""))
        .exclude(lease.live_lease())
        .values_list("pk", flat=True)
    )
    oldest = list(
        Project.objects.exclude(lease.live_lease())
        .exclude(pk__in=behind)
        .order_by(F("verified_at").asc(nulls_first=True))
        .values_list("pk", flat=True)[: settings.RESYNC_VERIFY_PROJECTS]
    )
    AppliedRecord.distrust(oldest)
    return behind + oldest


def reconcile(
    project_id: int,
    planner: Planner,
    backend: Backend | None = None,
    *,
    take_queued: bool = False,
) -> Outcome:
    """Bring one project's namespace in line with its rows; raise ``ReconcileFailed``.

    ``planner``: what the pass applies (``networking.passes.plan``); ``take_queued``: called
    for the project's queued message (see ``lease.claim``).
    """
    outcome = Outcome("busy")
    for _ in range(MAX_PASSES):
        memory = _recall(project_id)
        claimed = lease.claim(
            project_id, take_queued=take_queued, known=memory.known if memory else None
        )
        take_queued = False
        if claimed is None:
            if memory is not None:  # still what our last pass stored: the next claim's
                _remember(project_id, memory)
            exists, remaining = lease.holder_lease_until(project_id)
            if not exists:
                return Outcome("missing")
            # The holder checks the generation after releasing, so it will see our change.
            return Outcome("busy", generation=outcome.generation, lease_remaining=remaining)
        with live.deferred(), lease.renewed(project_id, claimed.token) as held:
            try:
                try:
                    chosen = backend or get_backend()
                except ClusterError as error:  # no backend to be had (its credentials, say)
                    raise ReconcileFailed(
                        error,
                        generation=claimed.project.generation,
                        changes=[],
                        started_at=time.time(),
                    ) from None
                outcome = _one_pass(claimed, planner, chosen, memory)
            except ReconcileFailed:
                raise
            except Exception:
                logger.exception("Reconcile of project %s crashed", project_id)
                raise ReconcileFailed(
                    PermanentClusterError(
                        "An internal error stopped the apply. It has been logged; "
                        "press Retry once it is fixed."
                    ),
                    generation=claimed.project.generation,
                    changes=[],
                    started_at=time.time(),
                ) from None
        # Read by the release itself: a change committed from then on enqueues a task that can
        # claim the lease, and one committed before is seen here.
        generation = held.released_at_generation
        if generation is None:  # the lease was taken from us: read it
            newer = Project.objects.filter(pk=project_id, generation__gt=outcome.generation)
            if not newer.exists():
                return outcome
        elif generation <= outcome.generation:
            return outcome
    return outcome


def _one_pass(
    claimed: lease.Claim, planner: Planner, backend: Backend, memory: Memory | None
) -> Outcome:
    project = claimed.project
    generation = project.generation
    services = claimed.services
    plan = planner(claimed, memory.built if memory is not None else None)
    desired, sensitive = plan.desired, plan.sensitive
    record = claimed.record or _new_record(project)
    compared = _compare(
        desired,
        record,
        plan.touched,
        memory.known.digests if memory is not None else None,
        claimed.written_since,
    )
    # Read the cluster when the record cannot be trusted (never made, distrusted, or no watcher
    # to distrust it), and while workloads roll out (a rotation waits on them; the dashboard
    # shows how far they are).
    full = not record.trusted or not claimed.watched or record.rolling_out or plan.read_cluster
    started_at = time.time()
    try:
        if full or compared.changes is None:
            result = backend.apply(desired)
        else:
            result = backend.apply_changes(desired, compared.changes)
    except ClusterError as error:
        raise ReconcileFailed(
            error.redacted(sensitive), generation=generation, changes=[], started_at=started_at
        ) from None

    services, version = _record_services(project.pk, services, result, record)
    if result.errors:
        permanent = [error for error in result.errors if not error.transient]
        raise ReconcileFailed(
            (permanent or result.errors)[0].redacted(sensitive),
            generation=generation,
            changes=result.changes,
            started_at=started_at,
        )

    recheck_in = plan.after_apply(
        result, _still_rolling_out(desired, result) if result.all_workloads else None
    )
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

    _record_applied(project, generation, result, started_at=started_at)
    rolling_out = record.rolling_out
    if result.all_workloads:
        names = {service.name for service in services}
        rolling_out = any(
            not status.rolled_out for name, status in result.workloads.items() if name in names
        )
    stored = _store_record(
        project,
        generation,
        record,
        compared,
        rolling_out,
        result=result,
        at=started_at,
        version=version,
    )
    if stored is not None:
        _remember(
            project.pk,
            Memory(
                lease.Known(
                    uid=project.uid,
                    version=stored,
                    digests=compared.every,
                    generation=generation,
                    services={row.pk: row for row in services},
                ),
                built=plan.built,
            ),
        )
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


@dataclass
class _Compared:
    """A pass's desired state, digested, against the applied record."""

    # Every digest now.
    every: dict[str, str]
    # The record keys that may differ from the record (None: any), with their digests now
    # (a key left out is no longer desired).
    keys: set[str] | None
    now: dict[str, str]
    # What differs from the record (None: it is not trusted).
    changes: Changes | None

    def written(self) -> set[str] | None:
        """The record keys storing ``every`` changes (None: any, the record was not trusted)."""
        if self.changes is None:
            return None
        changes = self.changes
        return {
            f"{kind}/{name}" for kind, name in changes.created | changes.updated | changes.removed
        }


def _compare(
    desired: DesiredState,
    record: lease.Recorded,
    touched: set[str] | None,
    previous: dict[str, str] | None,
    written_since: set[str] | None,
) -> _Compared:
    """Digest the desired state and compare it with the record.

    ``touched``: the record keys the planner changed since the state it patched, whose
    digests were ``previous`` (``touched`` None: it built the state whole, and ``previous`` is
    not used). Then only those are digested; and when the record differs from ``previous``
    only in ``written_since`` (another worker's passes), only those and the touched ones are
    read from the record and compared.

    ``previous`` is the pass's own (``_recall`` took it): it is patched in place into every
    digest now, at the cost of what was touched, once the record, which may hold the very same
    digests (``Recorded.assume``), has been read.
    """
    key = digest_key()
    if touched is None or previous is None:
        every = desired.digests(key)
        before = record.all()
        changes = changes_since(before, every) if before is not None else None
        return _Compared(every, None, every, changes)
    fresh = desired.digests(key, only=touched)
    if written_since is None:
        before = record.all()
        keys = None
    else:
        keys = touched | written_since
        before = record.of(keys) if record.trusted else None
    before = dict(before) if before is previous else before
    for name in touched:
        previous.pop(name, None)
    previous.update(fresh)
    every = previous
    now = every if keys is None else {name: every[name] for name in keys if name in every}
    changes = changes_since(before, now) if before is not None else None
    return _Compared(every, keys, now, changes)


_NAME = operator.attrgetter("name")


def _record_services(
    project_id: int, services: list[ServiceRow], result: ApplyResult, record: lease.Recorded
) -> tuple[list[ServiceRow], int | None]:
    """Store what the cluster assigned (ClusterIPs) and reported (workloads) that changed.

    The services' rows as they are now, and the record's version (a recorded ClusterIP is
    logged in it, for other workers: ``lease.claim``; None if it moved on meanwhile).
    """
    changed_ips = []
    rows = services
    addresses = result.cluster_ips
    # A pass that read the namespace knows every address; one that wrote without reading,
    # those of the Services it wrote (one of a thousand, say), and what was recorded of the
    # others still holds: only those are looked at. The rows are copied only if one differs.
    if result.verified:
        candidates: Iterable[int] = range(len(services))
    else:
        written = {name for name, address in addresses.items() if address is not None}
        candidates = (
            [index for index, name in enumerate(map(_NAME, services)) if name in written]
            if written
            else ()
        )
    for index in candidates:
        service = services[index]
        cluster_ip = addresses.get(service.name, None)
        if service.cluster_ip != cluster_ip:
            changed_ips.append(Service(pk=service.pk, cluster_ip=cluster_ip))
            if rows is services:
                rows = list(services)
            rows[index] = service._replace(cluster_ip=cluster_ip)
    changed_workloads = []
    if result.all_workloads:
        stored = Service.objects.filter(pk__in=[service.pk for service in services])
        for pk, name, workload in stored.values_list("pk", "name", "workload"):
            status = result.workloads.get(name)
            now = status.as_dict() if status is not None else {}
            if workload != now:
                changed_workloads.append(Service(pk=pk, workload=now))
    version: int | None = record.version
    if not changed_ips and not changed_workloads:
        return rows, version
    with transaction.atomic():
        # The project's row first, as every change a person saves locks it first: the other
        # order (services, then the project, in ``touch_services``) deadlocks with them, and
        # PostgreSQL would refuse one side, as likely the person's save as this.
        Project.objects.select_for_update().filter(pk=project_id).values_list("pk").first()
        if changed_ips:
            Service.objects.bulk_update(changed_ips, ["cluster_ip"])
            log = record.logged(record.version + 1, (), addresses=True)
            if AppliedRecord.objects.filter(project_id=project_id, version=record.version).update(
                version=record.version + 1, written=log
            ):
                version = record.version + 1
                record.written = log
            else:
                # Moved on meanwhile (a distrust, or a pass that took over the lease): the next
                # pass, whichever worker's, reads everything again.
                AppliedRecord.distrust([project_id])
                version = None
        if changed_workloads:
            Service.objects.bulk_update(changed_workloads, ["workload"])
        changed = {service.pk for service in changed_ips + changed_workloads}
        Project.touch_services(project_id, Service.objects.filter(pk__in=changed))
    return rows, version


def _new_record(project: Project) -> lease.Recorded:
    """The project's applied record, made on its first pass."""
    record, _ = AppliedRecord.objects.get_or_create(project=project)
    return lease.Recorded(
        project.pk,
        trusted=record.digests is not None,
        version=record.version,
        written=record.written,
        rolling_out=record.rolling_out,
        digests=record.digests,
    )


def _record_applied(
    project: Project, generation: int, result: ApplyResult, *, started_at: float
) -> None:
    """Say the generation is applied: the dashboard shows "In sync" as this commits.

    One statement, written first and on its own; compared on the applied generation, so a
    slower pass of an older generation never moves it back. A pass that read the whole
    namespace (``verified``) also clears the drift the watcher saw before it began: it has
    just made the cluster match (a second statement, only when there was drift).
    """
    if result.verified and project.drift_seen_at is not None:
        Project.clear_drift(project.pk, seen_before=datetime.fromtimestamp(started_at, tz=UTC))
    if project.sync_error or project.sync_error_generation or project.sync_retry_at:
        # Rare: a failure ends. Its notification is resolved with the project's error cleared,
        # in one transaction, so neither is seen without the other.
        with transaction.atomic():
            Notification.end_sync_failure(project.pk)  # a failure told in the header is over
            _write_applied(project, generation, result, failure_ended=True)
        return
    _write_applied(project, generation, result, failure_ended=False)


def _write_applied(
    project: Project, generation: int, result: ApplyResult, *, failure_ended: bool
) -> None:
    fields: dict[str, Any] = {}
    if failure_ended:
        fields.update(
            sync_error="",
            sync_error_generation=None,
            sync_retry_at=None,
            revision=F("revision") + 1,
        )
    if result.verified:
        fields["verified_at"] = timezone.now()
    if project.applied_generation < generation:
        if connection.vendor == "postgresql" and not failure_ended:
            moved = statements.mark_applied(
                project.pk,
                generation,
                project.applied_generation,
                timezone.now(),
                verified=result.verified,
            )
        else:
            moved = _mark_applied(project, generation, fields)
        if moved:
            live.moved([project.pk])
            return
        fields["revision"] = F("revision") + 1
    if fields:
        Project.objects.filter(pk=project.pk).update(**fields)
        if "revision" in fields:
            live.moved([project.pk])


def _mark_applied(project: Project, generation: int, fields: dict[str, Any]) -> bool:
    """``statements.mark_applied`` with the ORM (SQLite; and with a failure's fields)."""
    updated = Project.objects.filter(pk=project.pk, applied_generation__lt=generation).update(
        applied_generation=generation,
        applied_at=timezone.now(),
        **{**fields, "revision": F("revision") + 1},
    )
    if updated:
        # The rows of the services this generation changed now read "applied".
        Project.touch_services(
            project.pk,
            Service.objects.filter(
                changed_generation__gt=project.applied_generation,
                changed_generation__lte=generation,
            ),
        )
    return bool(updated)


def _store_record(
    project: Project,
    generation: int,
    record: lease.Recorded,
    compared: _Compared,
    rolling_out: bool,
    *,
    result: ApplyResult,
    at: float,
    version: int | None,
) -> int | None:
    """Store what the pass applied, for the next one to compare with; and the history.

    ``version``: the record's, as the pass left it (None: it moved on under the pass). A pass
    that compared only some keys (``compared.keys``) sends only their digests on PostgreSQL,
    merged into the stored ones, and logs which they were (``AppliedRecord.written``). There
    the record, the attempt and the history's trim are one statement (``statements``).

    The record's version now, if it holds what this pass applied (None: it was distrusted or
    written meanwhile, and the next pass reads everything).
    """
    differs = compared.changes is None or bool(compared.changes)
    # (None: the record moved on under the pass, and ``_record_services`` distrusted it; the
    # history is still written.)
    store = version is not None and (differs or rolling_out != record.rolling_out)
    attempt = (
        {
            "generation": generation,
            "started_at": datetime.fromtimestamp(at, tz=UTC),
            "duration_ms": int((time.time() - at) * 1000),
            "result": ApplyAttempt.Result.APPLIED,
            "changes": result.changes,
        }
        if result.changes
        else None
    )
    if connection.vendor == "postgresql":
        written: dict[str, Any] | None = None
        if store and version is not None:
            written = {
                "version": version,
                "rolling_out": rolling_out,
                "written": record.logged(version + 1, compared.written(), addresses=False),
            }
            if compared.keys is not None and record.trusted:
                written.update(merge=compared.now, drop=compared.keys - compared.now.keys())
            else:
                written["digests"] = compared.every
        stored = statements.store_record(project.pk, record=written, attempt=attempt)
        if stored is None or version is None:  # the record left as it was
            return version
        if stored:
            return version + 1
        # Distrusted or written meanwhile (its version moved on: a pass that outlived its
        # lease, say): then the next pass reads everything.
        AppliedRecord.distrust([project.pk])
        return None
    with transaction.atomic():
        if store and version is not None:
            stored_rows = AppliedRecord.objects.filter(
                project_id=project.pk, version=version
            ).update(
                digests=compared.every,
                rolling_out=rolling_out,
                version=version + 1,
                written=record.logged(version + 1, compared.written(), addresses=False),
            )
            if stored_rows:
                version += 1
            else:
                AppliedRecord.distrust([project.pk])
                version = None
        if attempt is not None:
            ApplyAttempt.record(project=project, **attempt)
    return version


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


def summarize(changes: Sequence[str], limit: int = 10) -> str:
    shown = "; ".join(changes[:limit])
    return shown if len(changes) <= limit else f"{shown}; and {len(changes) - limit} more"


def record_failure(project_id: int, failure: ReconcileFailed, *, retry_in: float | None) -> None:
    """Show the failure on the project; ``retry_in`` says a retry is already scheduled."""
    now = timezone.now()
    with transaction.atomic():
        # Some objects may have been written, some not: the next pass reads everything.
        AppliedRecord.distrust([project_id])
        # The attempt is history either way; the project shows the failure unless a pass
        # that started after this one has applied or verified this generation or a later one
        # meanwhile (this pass's lease ended before this runs): that failure is over already,
        # and nobody is told of it. A later pass of an older generation proves nothing.
        after = datetime.fromtimestamp(failure.started_at, tz=UTC)
        exists = Project.objects.filter(pk=project_id).exists()
        healed = Q(applied_generation__gte=failure.generation) & (
            Q(applied_at__gt=after) | Q(verified_at__gt=after)
        )
        updated = (
            Project.objects.filter(pk=project_id)
            .exclude(healed)
            .update(
                sync_error=str(failure.error),
                sync_error_generation=failure.generation,
                sync_retry_at=now + timedelta(seconds=retry_in) if retry_in is not None else None,
                revision=F("revision") + 1,
            )
        )
        if updated:
            live.moved([project_id])
            if retry_in is None:  # given up: told in the header, once per failure episode
                Notification.announce_sync_failure(project_id, str(failure.error))
        if exists:
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
        failure.error.for_log,
    )
