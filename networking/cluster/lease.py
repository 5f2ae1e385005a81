"""A worker's claim on one project for one reconcile pass: the lease.

A compare-and-swap lease on the project row keeps two passes of one project from overlapping
without holding a database transaction open during cluster I/O.

The lease is short (``RECONCILE_LEASE_SECONDS``, 10 s by default) and the process's heartbeat
thread (``_Renewer``) renews it every third of that while the pass runs, however long the pass
takes. So a lease that is
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

import contextlib
import functools
import json
import logging
import os
import secrets
import threading
import time
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
    per process. PostgreSQL runs ``_joined_claim_sql`` instead: the same, in fewer subqueries.
    """
    if vendor == "postgresql":
        return _joined_claim_sql(take_queued)
    q = connection.ops.quote_name
    columns = ", ".join(q(str(field.column)) for field in Project._meta.concrete_fields)
    queued = f", {q('reconcile_queued_at')} = NULL" if take_queued else ""
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
        f"AND %(known_large)s) THEN NULL ELSE {q('digests')} END FROM {record} "
        f"WHERE {of_project}) AS record_digests, "
        f"(SELECT {q('rolling_out')} FROM {record} WHERE {of_project}) AS record_rolling_out, "
        f"{_what_it_has_sql()}, "
        f"{liveness.watched_sql(vendor)} AS watched, "
        f"{_removed_sql()} AS services_removed, "
        f"{_services_sql(vendor, changed_only=True)} AS service_rows"
    )


def _removed_sql() -> str:
    """The generation of the latest change that deleted a service, as of the statement's
    snapshot (a subquery, like ``seen_generation``: the row an UPDATE returns may be newer)."""
    q = connection.ops.quote_name
    return (
        f"(SELECT {q('services_removed_generation')} FROM {_table(Project)} "  # noqa: S608
        f"WHERE {q('id')} = %(project)s)"
    )


def _what_it_has_sql() -> str:
    """The claim's has_* columns: whether the project has any of what a pass reads only when
    there is some (shared secrets, aliases, references, peerings in flight, mutual TLS)."""
    q = connection.ops.quote_name
    of_project = f"{q('project_id')} = %(project)s"
    statuses = ", ".join(f"%(status_{index})s" for index in range(len(PeeringRequest.IN_FLIGHT)))
    return (
        f"EXISTS (SELECT 1 FROM {_table(SharedSecret)} WHERE {of_project}) AS has_secrets, "  # noqa: S608
        f"EXISTS (SELECT 1 FROM {_table(ServiceAlias)} WHERE {of_project}) AS has_aliases, "
        f"EXISTS (SELECT 1 FROM {_table(ReferenceVariable)} WHERE {of_project}) "
        "AS has_references, "
        f"EXISTS (SELECT 1 FROM {_table(PeeringRequest)} WHERE "
        f"({q('requester_project_id')} = %(project)s OR {q('target_project_id')} = %(project)s) "
        f"AND {q('status')} IN ({statuses})) AS has_peerings, "
        f"EXISTS (SELECT 1 FROM {_table(MutualTLS)} WHERE {of_project}) AS has_mtls"
    )


def _joined_claim_sql(take_queued: bool) -> str:
    """``_claim_sql`` for PostgreSQL: the applied record joined once and the services read in
    one aggregate, instead of a subquery per column (nine of them). Parsing and planning the
    subqueries was most of the claim's time (0.83 against 0.60 ms a claim, quiet), and the
    claim is on every change's path to "In sync". SQLite cannot return what an UPDATE joins.

    The same columns, labels and meaning: a record that is missing reads as NULL (its
    ``record_trusted`` false, not NULL: read only with a version), and ``seen_generation`` is
    still a subquery, so it reads the generation as of the statement's snapshot, not the row
    the UPDATE returns.
    """
    q = connection.ops.quote_name
    project = _table(Project)
    columns = ", ".join(f"p.{q(str(field.column))}" for field in Project._meta.concrete_fields)
    queued = f", {q('reconcile_queued_at')} = NULL" if take_queued else ""
    of_project = f"{q('project_id')} = %(project)s"
    services = ", ".join(q(name) for name in _SERVICE_COLUMNS)
    # Only quoted identifiers from the models' metadata go into the text; values are parameters.
    return (
        f"UPDATE {project} AS p SET {q('reconcile_lease_until')} = %(until)s, "  # noqa: S608
        f"{q('reconcile_lease_token')} = %(token)s, "
        f"{q('revision')} = p.{q('revision')} + 1{queued} "
        f"FROM (SELECT 1) AS one "
        f"LEFT JOIN {_table(AppliedRecord)} AS r ON r.{of_project} "
        # The generation that last deleted a service; and the services, as one text
        # (``_services_sql``): those changed since the generation the worker knows, and the
        # others only while the record is not trusted or once one was deleted since. Each a
        # range of the index on (project, changed_generation) with its bound in the text, so
        # the planner sees how few rows a change reads, and the second skipped whole (a
        # condition on the statement's other reads only) unless everything is to be read.
        f"CROSS JOIN LATERAL (SELECT {_removed_sql()} AS removed) AS d "
        f"CROSS JOIN LATERAL (SELECT {_services_aggregate('postgresql')} AS rows FROM ("
        f"SELECT {services} FROM {_table(Service)} WHERE {of_project} "
        f"AND {q('changed_generation')} > %(known_generation)s UNION ALL "
        f"SELECT {services} FROM {_table(Service)} WHERE {of_project} "
        f"AND {q('changed_generation')} <= %(known_generation)s "
        f"AND (r.{q('digests')} IS NULL OR d.removed > %(known_generation)s)) AS s) AS c "
        f"WHERE p.{q('id')} = %(project)s AND (p.{q('reconcile_lease_until')} IS NULL "
        f"OR p.{q('reconcile_lease_until')} <= %(now)s) "
        f"RETURNING {columns}, "
        f"(SELECT {q('generation')} FROM {project} WHERE {q('id')} = %(project)s) "
        "AS seen_generation, "
        f"r.{q('version')} AS record_version, r.{q('written')} AS record_written, "
        f"r.{q('digests')} IS NOT NULL AS record_trusted, "
        f"CASE WHEN r.{q('version')} = %(known_version)s OR (%(known_version)s >= 0 "
        f"AND %(known_large)s) THEN NULL ELSE r.{q('digests')} END AS record_digests, "
        f"r.{q('rolling_out')} AS record_rolling_out, "
        f"{_what_it_has_sql()}, "
        f"{liveness.watched_sql('postgresql')} AS watched, "
        "d.removed AS services_removed, c.rows AS service_rows"
    )


# The services come back as one text: rows apart by RS, fields by US (neither can be in a
# service's name, kind, ports or address).
_ROW, _FIELD = "\x1e", "\x1f"


# What a pass reads of each service, in ``ServiceRow``'s order.
_SERVICE_COLUMNS = ("id", "name", "kind", "ports", "cluster_ip")


def _services_aggregate(vendor: str) -> str:
    """The aggregate of the services' rows into one text (``_services_sql``)."""
    q = connection.ops.quote_name
    columns = [q(name) for name in _SERVICE_COLUMNS]
    if vendor == "postgresql":
        columns[0] = f"{columns[0]}::text"
        columns[3] = f"{columns[3]}::text"
        columns[4] = f"coalesce(host({columns[4]}), '')"
        return f"string_agg({' || chr(31) || '.join(columns)}, chr(30))"
    columns[4] = f"coalesce({columns[4]}, '')"
    return f"group_concat({' || char(31) || '.join(columns)}, char(30))"


def _services_sql(vendor: str, *, changed_only: bool = False) -> str:
    """The project's services, id, name, kind, ports and ClusterIP each: the pass's second read
    folded into its first (one round trip, whatever the project's size).

    ``changed_only``: only those changed after ``%(known_generation)s`` (-1: all of them)
    while the record is trusted.

    One text, not JSON: building a JSON array per row costs PostgreSQL twice as much as the rows
    themselves, and splitting a string is the cheapest parse Python has."""
    q = connection.ops.quote_name
    aggregate = _services_aggregate(vendor)
    where = f"{q('project_id')} = %(project)s"
    if changed_only:
        # Or all of them while the record is not trusted: a pass that reads the cluster
        # reads the rows afresh too (whatever may have written them).
        # And all of them once a service was deleted since: the worker's own list of them
        # is out of date, and only the rows can say which is gone.
        where += (
            f" AND ({q('changed_generation')} > %(known_generation)s OR "  # noqa: S608
            f"COALESCE((SELECT {q('digests')} IS NULL FROM {_table(AppliedRecord)} "
            f"WHERE {q('project_id')} = %(project)s), TRUE) "
            f"OR {_removed_sql()} > %(known_generation)s)"
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
    known with the rows changed since read again (``Claim.changed``); once a service was
    deleted since (``Project.services_removed_generation``), they are all read. The rest of a
    row (its ClusterIP) only passes write, and they log it in the record
    (``AppliedRecord.written``), as they log the record keys they wrote: so the worker's
    digests hold for every key but those (``Claim.written_since``), whichever worker passed
    meanwhile. A change to one service of a thousand reads one row, and the digests of what
    changed: nothing in the statement or after it scans every service. A record that is not
    trusted (distrusted: the cluster may differ) has its pass read everything afresh, the
    rows included.

    A service made without its generation (a row written around ``Service.create``) is not
    among them until a pass reads everything (the watcher's, or the periodic re-read).
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
        # Not sent, in a large project, to a worker that knows an older version of them.
        "known_large": known is not None and len(known.services) > INLINE_SERVICES,
        **liveness.watched_params(),
        **{f"status_{index}": status for index, status in enumerate(PeeringRequest.IN_FLIGHT)},
    }
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(connection.vendor, take_queued), params)
        row = cursor.fetchone()
        labels = [column[0] for column in cursor.description or ()]
    if row is None:
        if take_queued:
            Project.take_queued_reconcile(project_id)
        return None
    project, read_with = _project_from(row, labels)
    live.moved_beside([project_id])
    # The pass applies what the statement read, no newer: the loop passes again for the rest.
    project.generation = min(project.generation, read_with["seen_generation"])
    # Read, not defaulted: a claim without its services must fail, never mean "none".
    read = _service_rows(read_with["service_rows"])
    services, changed, since = read, None, None
    record = None
    version = read_with["record_version"]
    if version is not None:
        written = read_with["record_written"]
        digests = read_with["record_digests"]
        record = Recorded(
            project_id,
            trusted=bool(read_with["record_trusted"]),
            version=version,
            written=json.loads(written) if isinstance(written, str) else written,
            rolling_out=bool(read_with["record_rolling_out"]),
            digests=json.loads(digests) if isinstance(digests, str) else digests,
        )
    # (Without a trusted record, the statement read every row: nothing known is used.)
    if known is not None and record is not None and record.trusted:
        services, changed, since = _from_known(project, known, record, read, read_with)
    return Claim(
        token=token,
        project=project,
        record=record,
        has_secrets=bool(read_with["has_secrets"]),
        has_aliases=bool(read_with["has_aliases"]),
        has_references=bool(read_with["has_references"]),
        has_peerings=bool(read_with["has_peerings"]),
        has_mtls=bool(read_with["has_mtls"]),
        watched=bool(read_with["watched"]),
        services=services,
        changed=changed,
        written_since=since,
    )


def _project_from(row: tuple[Any, ...], labels: list[str]) -> tuple[Project, dict[str, Any]]:
    """The claim's row as the project (its columns converted as the ORM converts them) and
    what the statement read with it, by label.

    A plain cursor, not ``Project.objects.raw``: a raw queryset works out, on every call, which
    column is which field (a third of a millisecond here, on the path to "In sync"); the
    project's columns come first, in the order of its fields.
    """
    names, converters = _project_columns(connection.alias)
    values = list(row[: len(names)])
    for index, steps in converters:
        value = values[index]
        for convert, column in steps:
            value = convert(value, column, connection)
        values[index] = value
    project = Project.from_db(connection.alias, names, values)
    return project, dict(zip(labels[len(names) :], row[len(names) :], strict=True))


@functools.cache
def _project_columns(
    alias: str,
) -> tuple[list[str], list[tuple[int, list[tuple[Any, Any]]]]]:
    """Project's field names in the claim's column order, and each column's converters (the
    backend's and the field's, as a query's compiler applies them): per database alias."""
    fields = Project._meta.concrete_fields
    converters = []
    for index, model_field in enumerate(fields):
        column = model_field.get_col(Project._meta.db_table)
        steps = [
            *connection.ops.get_db_converters(column),
            *model_field.get_db_converters(connection),
        ]
        if steps:
            converters.append((index, [(step, column) for step in steps]))
    return [model_field.attname for model_field in fields], converters


def _from_known(
    project: Project,
    known: Known,
    record: Recorded,
    read: list[ServiceRow],
    read_with: dict[str, Any],
) -> tuple[list[ServiceRow], list[ServiceRow] | None, set[str] | None]:
    """The services, those read because they changed, and the record keys written since: from
    what the worker knows and the rows the claim read (those changed since)."""
    if (
        known.uid != project.uid
        or known.version > record.version
        or known.generation > project.generation
    ):
        # Another project under a reused id, or a database put back to before what the
        # worker knows: nothing known holds.
        return _service_rows(_all_service_rows(project.pk)), None, None
    since, addresses = record.written_since(known.version)
    if since == set():
        record.assume(known.digests)
    if read_with["services_removed"] > known.generation:
        # One was deleted since: the statement read them all, and they are what the rows say.
        return read, None, since
    # The worker's own (``reconcile._recall`` took it): the rows changed since put in place.
    merged = known.services
    merged.update((row.pk, row) for row in read)
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


class _Renewer:
    """The heartbeat: one thread per process renews every lease the process holds, each every
    third of the lease, until it is let go or taken.

    One thread for the process, not one per pass: starting a thread and joining it cost a
    change's pass about a third of a millisecond on its path to "In sync" (most passes end
    long before their first renewal). Django gives the thread its own database connection,
    closed after each renewal.
    """

    def __init__(self) -> None:
        self._due: dict[tuple[int, str], float] = {}  # a held lease: its next renewal
        self._renewing: tuple[int, str] | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="reconcile-leases", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def adopt(self, dead: _Renewer) -> None:
        """Renew the leases a renewer whose thread died was holding."""
        with dead._changed:
            leases = dict(dead._due)
        with self._changed:
            self._due.update(leases)
            self._changed.notify()

    def hold(self, project_id: int, token: str) -> None:
        with self._changed:
            self._due[project_id, token] = time.monotonic() + _renew_every()
            self._changed.notify()

    def let_go(self, project_id: int, token: str) -> None:
        """Stop renewing; once this returns no renewal of the lease is under way, so none
        lands after the release that follows."""
        with self._changed:
            self._due.pop((project_id, token), None)
            self._changed.wait_for(lambda: self._renewing != (project_id, token))

    def _run(self) -> None:
        while True:
            with self._changed:
                lease = self._next()
                self._renewing = lease
            kept = True
            try:
                kept = self._renew(*lease)
            finally:
                # Whatever happened, the lease is no longer being renewed: never leave a
                # ``let_go`` waiting.
                with self._changed:
                    self._renewing = None
                    try:
                        if lease in self._due:
                            if kept:
                                self._due[lease] = time.monotonic() + _renew_every()
                            else:
                                del self._due[lease]
                    finally:
                        self._changed.notify_all()

    @staticmethod
    def _renew(project_id: int, token: str) -> bool:
        """Renew one lease; False if it is no longer ours (a failure keeps it: retried)."""
        try:
            if renew(project_id, token):
                return True
            # Taken over (our renewals stalled past the lease) or released: the other
            # holder's pass is just as correct as ours, so stop claiming the project.
            logger.warning("Lost the reconcile lease of project %s", project_id)
            return False
        except Exception:
            # The database may be back by the next renewal: the lease outlasts two misses.
            logger.exception("Could not renew the reconcile lease of project %s", project_id)
            return True
        finally:
            # Renewals are seconds apart, and most passes end before their first: no
            # connection is kept open for them.
            with contextlib.suppress(Exception):
                connection.close()

    def _next(self) -> tuple[int, str]:
        """Wait until a held lease is due; it (called holding the condition)."""
        while True:
            if not self._due:
                self._changed.wait()
                continue
            lease = min(self._due, key=self._due.__getitem__)
            wait = self._due[lease] - time.monotonic()
            if wait <= 0:
                return lease
            self._changed.wait(wait)


def _renew_every() -> float:
    return settings.RECONCILE_LEASE_SECONDS / 3


_renewers: dict[int, _Renewer] = {}
_renewers_lock = threading.Lock()


def _renewer() -> _Renewer:
    """This process's renewer (per process: a forked worker has none of its parent's threads)."""
    pid = os.getpid()
    with _renewers_lock:
        dead = _renewers.get(pid)
        if dead is None or not dead.alive():
            _renewers.clear()
            _renewers[pid] = _Renewer()
            if dead is not None:
                _renewers[pid].adopt(dead)
        return _renewers[pid]


@dataclass
class Held:
    """A lease held for a pass: once released, the project's generation then."""

    released_at_generation: int | None = None


@contextmanager
def renewed(project_id: int, token: str) -> Iterator[Held]:
    """Hold a claimed lease while the block runs, renewing it, then release it."""
    held = Held()
    renewer = _renewer()
    renewer.hold(project_id, token)
    try:
        yield held
    finally:
        renewer.let_go(project_id, token)
        if (current := _renewer()) is not renewer:  # it died meanwhile: its leases moved
            current.let_go(project_id, token)
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
