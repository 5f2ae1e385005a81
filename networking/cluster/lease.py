"""A worker's claim on one project for one reconcile pass: the lease.

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

Taking and releasing the lease move the project's revision on, so open pages show "Applying"
and what follows.

Taking the lease is also the pass's first read. A change's pass is on the path between a
user's click and "In sync", so the claim returns, in the same statement, everything the pass
needs to decide what to read next: the project row, its applied record, whether it has shared
secrets or peerings to read at all, and whether a watcher is watching (``liveness.py``). One
round trip instead of four (about 4 ms of a 5-service pass, with the ORM's own cost of
building them).
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection
from django.db.models import F, Q
from django.utils import timezone

from networking import live
from networking.cluster import liveness
from networking.models import (
    AppliedRecord,
    MutualTLS,
    PeeringRequest,
    Project,
    ReferenceVariable,
    Service,
    ServiceAlias,
    SharedSecret,
)

logger = logging.getLogger(__name__)


class ServiceRow(NamedTuple):
    """A service as a pass reads it (all of them come back with the claim)."""

    pk: int
    name: str
    kind: str
    ports: tuple[int, ...]
    cluster_ip: str | None


class Known(NamedTuple):
    """What this worker's last pass of the project stored: with it, a claim reads only what
    changed since (see ``claim``)."""

    # The project's uid (an id is never the same project again, but a rolled-back one may
    # be taken again).
    uid: str
    # The record's version then, and its digests at that version.
    version: int
    digests: dict[str, str]
    # The generation its services were read at, and those services by id.
    generation: int
    services: dict[int, ServiceRow]


# How many writes the record remembers (``AppliedRecord.written``).
WRITTEN_KEPT = 32
# Up to this many services, a project's digests come with the claim whenever the worker does
# not know them all (about 60 bytes each).
INLINE_SERVICES = 100


class Recorded:
    """The applied record as a pass reads it: what the last pass applied, a digest per object.

    Every digest comes with the claim, or from what the worker knows; or a pass asks for
    those it needs (``of``): a change to one service of a thousand reads its own digests and
    those other workers wrote since, not a thousand.
    """

    def __init__(
        self,
        project_id: int,
        *,
        trusted: bool,
        version: int = 0,
        written: list[Any] | None = None,
        rolling_out: bool = False,
        digests: dict[str, str] | None = None,
    ) -> None:
        self.project_id = project_id
        # False before the first pass and once distrusted: there are no digests to compare.
        self.trusted = trusted
        self.version = version
        self.written: list[Any] = written or []
        self.rolling_out = rolling_out
        self._all = digests if trusted else None

    def known(self) -> dict[str, str] | None:
        """Every digest, if known without reading."""
        return self._all

    def assume(self, digests: dict[str, str]) -> None:
        """Every digest, as a worker that knows this version holds them."""
        self._all = digests

    def all(self) -> dict[str, str] | None:
        """Every digest (None when not trusted)."""
        if self._all is None and self.trusted:
            stored = (
                AppliedRecord.objects.filter(project_id=self.project_id)
                .values_list("digests", flat=True)
                .first()
            )
            self._all = stored if isinstance(stored, dict) else None
            self.trusted = self._all is not None
        return self._all

    def of(self, keys: Collection[str]) -> dict[str, str]:
        """The digests of these record keys (of those the record has)."""
        if self._all is not None or not self.trusted:
            every = self._all or {}
            return {key: every[key] for key in keys if key in every}
        if not keys:
            return {}
        each = "jsonb_each_text" if connection.vendor == "postgresql" else "json_each"
        q = connection.ops.quote_name
        placeholders = ", ".join(["%s"] * len(keys))
        with connection.cursor() as cursor:
            # Only quoted identifiers go into the text; the keys are parameters.
            cursor.execute(
                f"SELECT d.key, d.value FROM {_table(AppliedRecord)} r, "  # noqa: S608
                f"{each}(r.{q('digests')}) d "
                f"WHERE r.{q('project_id')} = %s AND d.key IN ({placeholders})",
                [self.project_id, *keys],
            )
            return dict(cursor.fetchall())

    def written_since(self, version: int) -> tuple[set[str] | None, bool]:
        """The record keys written after ``version`` (None: any may have been), and whether a
        ClusterIP was recorded meanwhile (or may have been)."""
        if version == self.version:
            return set(), False
        if version > self.version:
            # Never after a write of ours: a restored database, say. Nothing known holds.
            return None, True
        entries = {entry[0]: entry for entry in self.written}
        keys: set[str] = set()
        addresses = False
        for moved in range(version + 1, self.version + 1):
            entry = entries.get(moved)
            if entry is None or entry[1] is None:
                return None, True
            keys.update(entry[1])
            addresses = addresses or bool(entry[2])
        return keys, addresses

    def logged(self, version: int, keys: Collection[str] | None, addresses: bool) -> list[Any]:
        """``written`` with a write at ``version`` added."""
        entry = [version, sorted(keys) if keys is not None else None, addresses]
        return [*self.written, entry][-WRITTEN_KEPT:]


@dataclass
class Claim:
    """A project claimed for one pass, with what the pass reads first."""

    token: str
    project: Project
    # None before the project's first pass: the pass makes it.
    record: Recorded | None
    has_secrets: bool
    has_aliases: bool
    has_references: bool
    has_peerings: bool
    # Mutual TLS is on (``networking.mtls``): the pass issues what is due and mounts it.
    has_mtls: bool
    # A watcher is watching (``liveness``): it would distrust the record if the cluster changed.
    watched: bool
    # The project's services.
    services: list[ServiceRow] = field(default_factory=list)
    # The rows read because they changed since what the worker knew (``Known``): all that
    # differs from its last pass's services. None: the services were all read afresh.
    changed: list[ServiceRow] | None = None
    # The record keys other workers' passes wrote since the worker's (None: any, or it knew
    # nothing): its digests of all others are the record's.
    written_since: set[str] | None = None


def _table(model: type[object]) -> str:
    return connection.ops.quote_name(model._meta.db_table)  # type: ignore[attr-defined]


@functools.cache
def _claim_sql(vendor: str, take_queued: bool) -> str:
    """The claim statement: an UPDATE that returns the project and the pass's first reads.

    Plain SQL that PostgreSQL and SQLite (3.35+) both run, with named parameters; built once
    per process.
    """
    q = connection.ops.quote_name
    columns = ", ".join(q(str(field.column)) for field in Project._meta.concrete_fields)
    queued = f", {q('reconcile_queued_at')} = NULL" if take_queued else ""
    statuses = ", ".join(f"%(status_{index})s" for index in range(len(PeeringRequest.IN_FLIGHT)))
    record = _table(AppliedRecord)
    of_project = f"{q('project_id')} = %(project)s"
    # Only quoted identifiers from the models' metadata go into the text; values are parameters.
    return (
        f"UPDATE {_table(Project)} SET {q('reconcile_lease_until')} = %(until)s, "  # noqa: S608
        f"{q('reconcile_lease_token')} = %(token)s, "
        f"{q('revision')} = {q('revision')} + 1{queued} "
        f"WHERE {q('id')} = %(project)s AND ({q('reconcile_lease_until')} IS NULL "
        f"OR {q('reconcile_lease_until')} <= %(now)s) "
        f"RETURNING {columns}, "
        # The generation as this statement's reads see it: the row returned may be newer (a
        # change that committed while the UPDATE waited for the row), and its services are
        # not among what the statement reads.
        f"(SELECT {q('generation')} FROM {_table(Project)} WHERE {q('id')} = %(project)s) "
        "AS seen_generation, "
        f"(SELECT {q('version')} FROM {record} WHERE {of_project}) AS record_version, "
        f"(SELECT {q('written')} FROM {record} WHERE {of_project}) AS record_written, "
        f"(SELECT {q('digests')} IS NOT NULL FROM {record} WHERE {of_project}) "
        "AS record_trusted, "
        # Not sent to a worker that knows them, nor, in a large project, to one that knows an
        # older version (it reads those written since: ``Recorded.of``). A small project's
        # come along: cheaper than another round trip.
        f"(SELECT CASE WHEN {q('version')} = %(known_version)s OR (%(known_version)s >= 0 "
        f"AND (SELECT count(*) FROM {_table(Service)} WHERE {of_project}) > %(inline)s) "
        f"THEN NULL ELSE {q('digests')} END FROM {record} WHERE {of_project}) "
        "AS record_digests, "
        f"(SELECT {q('rolling_out')} FROM {record} WHERE {of_project}) AS record_rolling_out, "
        f"EXISTS (SELECT 1 FROM {_table(SharedSecret)} WHERE {of_project}) AS has_secrets, "
        f"EXISTS (SELECT 1 FROM {_table(ServiceAlias)} WHERE {of_project}) AS has_aliases, "
        f"EXISTS (SELECT 1 FROM {_table(ReferenceVariable)} WHERE {of_project}) "
        "AS has_references, "
        f"EXISTS (SELECT 1 FROM {_table(PeeringRequest)} WHERE "
        f"({q('requester_project_id')} = %(project)s OR {q('target_project_id')} = %(project)s) "
        f"AND {q('status')} IN ({statuses})) AS has_peerings, "
        f"EXISTS (SELECT 1 FROM {_table(MutualTLS)} WHERE {of_project}) AS has_mtls, "
        f"{liveness.watched_sql(vendor)} AS watched, "
        f"(SELECT count(*) FROM {_table(Service)} WHERE {of_project}) AS service_count, "
        f"(SELECT max({q('id')}) FROM {_table(Service)} WHERE {of_project}) AS service_last, "
        f"{_services_sql(vendor, changed_only=True)} AS service_rows"
    )


# The services come back as one text: rows apart by RS, fields by US (neither can be in a
# service's name, kind, ports or address).
_ROW, _FIELD = "\x1e", "\x1f"


def _services_sql(vendor: str, *, changed_only: bool = False) -> str:
    """The project's services, id, name, kind, ports and ClusterIP each: the pass's second read
    folded into its first (one round trip, whatever the project's size).

    ``changed_only``: only those changed after ``%(known_generation)s`` (-1: all of them)
    while the record is trusted.

    One text, not JSON: building a JSON array per row costs PostgreSQL twice as much as the rows
    themselves, and splitting a string is the cheapest parse Python has."""
    q = connection.ops.quote_name
    columns = [q("id"), q("name"), q("kind"), f"{q('ports')}", q("cluster_ip")]
    if vendor == "postgresql":
        columns[0] = f"{columns[0]}::text"
        columns[3] = f"{columns[3]}::text"
        columns[4] = f"coalesce(host({columns[4]}), '')"
        row = " || chr(31) || ".join(columns)
        aggregate = f"string_agg({row}, chr(30))"
    else:
        columns[4] = f"coalesce({columns[4]}, '')"
        row = " || char(31) || ".join(columns)
        aggregate = f"group_concat({row}, char(30))"
    where = f"{q('project_id')} = %(project)s"
    if changed_only:
        # Or all of them while the record is not trusted: a pass that reads the cluster
        # reads the rows afresh too (whatever may have written them).
        where += (
            f" AND ({q('changed_generation')} > %(known_generation)s OR "  # noqa: S608
            f"COALESCE((SELECT {q('digests')} IS NULL FROM {_table(AppliedRecord)} "
            f"WHERE {q('project_id')} = %(project)s), TRUE))"
        )
    return f"(SELECT {aggregate} FROM {_table(Service)} WHERE {where})"  # noqa: S608


@functools.lru_cache(maxsize=4096)
def _ports(stored: str) -> tuple[int, ...]:
    """A service's ports as stored (JSON text): the same few texts come back pass after pass."""
    return tuple(json.loads(stored))


def _service_rows(stored: str | None) -> list[ServiceRow]:
    rows = []
    for row in stored.split(_ROW) if stored else ():
        pk, name, kind, ports, ip = row.split(_FIELD)
        rows.append(ServiceRow(int(pk), name, kind, _ports(ports), ip or None))
    return rows


def claim(
    project_id: int, *, take_queued: bool = False, known: Known | None = None
) -> Claim | None:
    """Take the project's lease if nobody holds it (or the holder's lease lapsed).

    ``take_queued``: the caller is the project's queued message, so the next change may queue
    another (``Project.take_queued_reconcile``), said in the same statement.

    ``known``: what this worker's last pass of the project stored. Every change to what a
    service should be (created, renamed, new ports) moves the service's ``changed_generation``
    on in the transaction that moves the project's generation, so the services are those
    known with the rows changed since read again (``Claim.changed``); a service deleted since
    shows as a count that does not add up, and then they are all read. The rest of a row (its
    ClusterIP) only passes write, and they log it in the record (``AppliedRecord.written``),
    as they log the record keys they wrote: so the worker's digests hold for every key but
    those (``Claim.written_since``), whichever worker passed meanwhile. A change to one
    service of a thousand reads one row, and the digests of what changed. A record that is not
    trusted (distrusted: the cluster may differ) has its pass read everything afresh, the
    rows included.
    """
    token = secrets.token_hex(16)
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    params: dict[str, Any] = {
        "until": adapt(now + timedelta(seconds=settings.RECONCILE_LEASE_SECONDS)),
        "token": token,
        "project": project_id,
        "now": adapt(now),
        "known_version": known.version if known is not None else -1,
        "known_generation": known.generation if known is not None else -1,
        "inline": INLINE_SERVICES,
        **liveness.watched_params(),
        **{f"status_{index}": status for index, status in enumerate(PeeringRequest.IN_FLIGHT)},
    }
    rows = list(Project.objects.raw(_claim_sql(connection.vendor, take_queued), params))
    if not rows:
        if take_queued:
            Project.take_queued_reconcile(project_id)
        return None
    project = rows[0]
    live.moved([project_id])
    # The pass applies what the statement read, no newer: the loop passes again for the rest.
    project.generation = min(project.generation, project.seen_generation)  # type: ignore[attr-defined]
    # Read, not defaulted: a claim without its services must fail, never mean "none".
    read = _service_rows(project.service_rows)  # type: ignore[attr-defined]
    services, changed, since = read, None, None
    record = None
    version = getattr(project, "record_version", None)
    if version is not None:
        written = project.record_written  # type: ignore[attr-defined]
        digests = project.record_digests  # type: ignore[attr-defined]
        record = Recorded(
            project_id,
            trusted=bool(project.record_trusted),  # type: ignore[attr-defined]
            version=version,
            written=json.loads(written) if isinstance(written, str) else written,
            rolling_out=bool(project.record_rolling_out),  # type: ignore[attr-defined]
            digests=json.loads(digests) if isinstance(digests, str) else digests,
        )
    # (Without a trusted record, the statement read every row: nothing known is used.)
    if known is not None and record is not None and record.trusted:
        services, changed, since = _from_known(project, known, record, read)
    return Claim(
        token=token,
        project=project,
        record=record,
        has_secrets=bool(getattr(project, "has_secrets", True)),
        has_aliases=bool(getattr(project, "has_aliases", True)),
        has_references=bool(getattr(project, "has_references", True)),
        has_peerings=bool(getattr(project, "has_peerings", True)),
        has_mtls=bool(getattr(project, "has_mtls", True)),
        watched=bool(getattr(project, "watched", False)),
        services=services,
        changed=changed,
        written_since=since,
    )


def _from_known(
    project: Project, known: Known, record: Recorded, read: list[ServiceRow]
) -> tuple[list[ServiceRow], list[ServiceRow] | None, set[str] | None]:
    """The services, those read because they changed, and the record keys written since: from
    what the worker knows and the rows the claim read (those changed since)."""
    if known.uid != project.uid:
        # Another project under a reused id: nothing known holds.
        return _service_rows(_all_service_rows(project.pk)), None, None
    since, addresses = record.written_since(known.version)
    if since == set():
        record.assume(known.digests)
    merged = {**known.services, **{row.pk: row for row in read}}
    if (
        len(merged) != project.service_count  # type: ignore[attr-defined]
        or max(merged, default=None) != project.service_last  # type: ignore[attr-defined]
    ):
        # One was deleted since (or made without its generation): the rows alone can say.
        return _service_rows(_all_service_rows(project.pk)), None, since
    if addresses:
        # Another pass recorded ClusterIPs: theirs as they are now. Only those: the
        # services are the statement's, whatever was saved since (the next pass's).
        current = {row.pk: row for row in _service_rows(_all_service_rows(project.pk))}
        merged = {
            pk: row._replace(cluster_ip=current[pk].cluster_ip) if pk in current else row
            for pk, row in merged.items()
        }
    return list(merged.values()), read, since


def _all_service_rows(project_id: int) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_services_sql(connection.vendor)}", {"project": project_id})
        (stored,) = cursor.fetchone()
    return stored  # type: ignore[no-any-return]


def release(project_id: int, token: str) -> int | None:
    """Give the lease back; the project's generation as it was then (None: the lease was no
    longer ours). One statement, so the pass knows whether a change came meanwhile without a
    read of its own; SQLite (3.35+) runs it too."""
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table(Project)} SET {q('reconcile_lease_until')} = NULL, "  # noqa: S608
            f"{q('reconcile_lease_token')} = '', {q('revision')} = {q('revision')} + 1 "
            f"WHERE {q('id')} = %s AND {q('reconcile_lease_token')} = %s "
            f"RETURNING {q('generation')}",
            [project_id, token],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    live.moved([project_id])
    return int(row[0])


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


@dataclass
class Held:
    """A lease held for a pass: once released, the project's generation then."""

    released_at_generation: int | None = None


@contextmanager
def renewed(project_id: int, token: str) -> Iterator[Held]:
    """Hold a claimed lease while the block runs, renewing it, then release it."""
    held = Held()
    stop = threading.Event()
    heartbeat = threading.Thread(
        target=_keep_renewing,
        args=(project_id, token, stop),
        name=f"reconcile-lease-{project_id}",
        daemon=True,
    )
    heartbeat.start()
    try:
        yield held
    finally:
        stop.set()
        heartbeat.join()
        held.released_at_generation = release(project_id, token)


def holder_lease_until(project_id: int) -> tuple[bool, float]:
    """Whether the project exists, and the seconds until its holder's lease lapses."""
    row = Project.objects.filter(pk=project_id).values_list("reconcile_lease_until").first()
    if row is None:
        return False, 0.0
    (lease_until,) = row
    if lease_until is None:
        return True, 0.0
    return True, max((lease_until - timezone.now()).total_seconds(), 0.0)


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
    if Project.objects.filter(
        pk=project_id, reconcile_lease_token=token, reconcile_lease_until__lte=timezone.now()
    ).update(reconcile_lease_until=None, reconcile_lease_token="", revision=F("revision") + 1):
        live.moved([project_id])


def live_lease() -> Q:
    """Projects a living worker holds right now."""
    return Q(reconcile_lease_until__gt=timezone.now())
