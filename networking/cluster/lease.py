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
from collections.abc import Iterator
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


@dataclass
class Claim:
    """A project claimed for one pass, with what the pass reads first."""

    token: str
    project: Project
    # None before the project's first pass: the pass makes it.
    record: AppliedRecord | None
    has_secrets: bool
    has_aliases: bool
    has_references: bool
    has_peerings: bool
    # A watcher is watching (``liveness``): it would distrust the record if the cluster changed.
    watched: bool
    # The project's services.
    services: list[ServiceRow] = field(default_factory=list)


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
        f"(SELECT {q('digests')} FROM {record} WHERE {of_project}) AS record_digests, "
        f"(SELECT {q('marks')} FROM {record} WHERE {of_project}) AS record_marks, "
        f"(SELECT {q('rolling_out')} FROM {record} WHERE {of_project}) AS record_rolling_out, "
        f"EXISTS (SELECT 1 FROM {_table(SharedSecret)} WHERE {of_project}) AS has_secrets, "
        f"EXISTS (SELECT 1 FROM {_table(ServiceAlias)} WHERE {of_project}) AS has_aliases, "
        f"EXISTS (SELECT 1 FROM {_table(ReferenceVariable)} WHERE {of_project}) "
        "AS has_references, "
        f"EXISTS (SELECT 1 FROM {_table(PeeringRequest)} WHERE "
        f"({q('requester_project_id')} = %(project)s OR {q('target_project_id')} = %(project)s) "
        f"AND {q('status')} IN ({statuses})) AS has_peerings, "
        f"{liveness.watched_sql(vendor)} AS watched, "
        f"{_services_sql(vendor)} AS service_rows"
    )


# The services come back as one text: rows apart by RS, fields by US (neither can be in a
# service's name, kind, ports or address).
_ROW, _FIELD = "\x1e", "\x1f"


def _services_sql(vendor: str) -> str:
    """The project's services, id, name, kind, ports and ClusterIP each: the pass's second read
    folded into its first (one round trip, whatever the project's size).

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
    return f"(SELECT {aggregate} FROM {_table(Service)} WHERE {q('project_id')} = %(project)s)"  # noqa: S608


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


def claim(project_id: int, *, take_queued: bool = False) -> Claim | None:
    """Take the project's lease if nobody holds it (or the holder's lease lapsed).

    ``take_queued``: the caller is the project's queued message, so the next change may queue
    another (``Project.take_queued_reconcile``), said in the same statement.
    """
    token = secrets.token_hex(16)
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    params: dict[str, Any] = {
        "until": adapt(now + timedelta(seconds=settings.RECONCILE_LEASE_SECONDS)),
        "token": token,
        "project": project_id,
        "now": adapt(now),
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
    digests = getattr(project, "record_digests", None)
    marks = getattr(project, "record_marks", None)
    record = None
    if marks is not None:
        record = AppliedRecord(
            project_id=project_id,
            digests=json.loads(digests) if isinstance(digests, str) else digests,
            marks=marks,
            rolling_out=bool(getattr(project, "record_rolling_out", False)),
        )
    return Claim(
        token=token,
        project=project,
        record=record,
        has_secrets=bool(getattr(project, "has_secrets", True)),
        has_aliases=bool(getattr(project, "has_aliases", True)),
        has_references=bool(getattr(project, "has_references", True)),
        has_peerings=bool(getattr(project, "has_peerings", True)),
        watched=bool(getattr(project, "watched", False)),
        # Read, not defaulted: a claim without its services must fail, never mean "none".
        services=_service_rows(project.service_rows),  # type: ignore[attr-defined]
    )


def release(project_id: int, token: str) -> None:
    if Project.objects.filter(pk=project_id, reconcile_lease_token=token).update(
        reconcile_lease_until=None, reconcile_lease_token="", revision=F("revision") + 1
    ):
        live.moved([project_id])


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
