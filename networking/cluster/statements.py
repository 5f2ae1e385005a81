"""A pass's writes after its apply, each one statement on PostgreSQL.

After the apply a pass says "in sync" (the project's applied generation, and the rows of the
services that generation changed now read "applied"), then stores its record and its history
(the applied record, an attempt, the oldest attempts dropped). Written with the ORM, that is
two transactions of four and five round trips; here each is one statement, its parts joined by
data-modifying CTEs, which PostgreSQL runs in one snapshot and commits together. The worker is
free for the next project sooner, and PostgreSQL parses two statements instead of nine.

SQLite (``make run``) has no such CTEs, and no round trips to save: ``networking.cluster
.reconcile`` writes the same rows with the ORM there, and these functions are not called.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import connection

from networking.models import AppliedRecord, ApplyAttempt, Project, Service


def _table(model: type[object]) -> str:
    return connection.ops.quote_name(model._meta.db_table)  # type: ignore[attr-defined]


def mark_applied(
    project_id: int, generation: int, previous: int, at: datetime, *, verified: bool
) -> bool:
    """The project's applied generation moves to ``generation`` unless it is there already,
    and with it the project's revision; the services changed after ``previous`` and up to it
    are stamped with that revision (their rows now read "applied"). Whether it moved.

    The project's row is updated (and locked) before any service's, as every saved change
    locks them: the services' update is gated on the project's, which PostgreSQL evaluates
    once, before it reads a service.
    """
    q = connection.ops.quote_name
    verified_at = f", {q('verified_at')} = %(at)s" if verified else ""
    sql = f"""
        WITH applied AS (
            UPDATE {_table(Project)}
            SET {q("applied_generation")} = %(generation)s, {q("applied_at")} = %(at)s,
                {q("revision")} = {q("revision")} + 1{verified_at}
            WHERE {q("id")} = %(project)s AND {q("applied_generation")} < %(generation)s
            RETURNING {q("revision")}
        ), stamped AS (
            UPDATE {_table(Service)}
            SET {q("revision")} = (SELECT {q("revision")} FROM applied)
            WHERE {q("project_id")} = %(project)s
              AND {q("changed_generation")} > %(previous)s
              AND {q("changed_generation")} <= %(generation)s
              AND EXISTS (SELECT 1 FROM applied)
            RETURNING 1
        )
        SELECT COUNT(*) FROM applied
    """  # noqa: S608  (quoted names; the values are parameters)
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {"project": project_id, "generation": generation, "previous": previous, "at": at},
        )
        (moved,) = cursor.fetchone()
    return bool(moved)


def store_record(
    project_id: int,
    *,
    record: dict[str, Any] | None,
    attempt: dict[str, Any] | None,
) -> bool | None:
    """Store the applied record and add an attempt to the history, in one statement.

    ``record``: ``version`` (the one the pass read: stored only if it is still that),
    ``digests`` (every digest) or ``merge`` and ``drop`` (digests merged into the stored
    ones, and keys taken out), ``rolling_out``, ``written``; None: the record is left as it is.
    ``attempt``: an ``ApplyAttempt``'s fields; the history then keeps the newest
    ``ApplyAttempt.KEEP_PER_PROJECT``.

    Whether the record was stored (None when none was given).
    """
    q = connection.ops.quote_name
    parts: list[str] = []
    params: dict[str, Any] = {"project": project_id}
    if record is not None:
        if "digests" in record:
            digests = "%(digests)s::jsonb"
            params["digests"] = json.dumps(record["digests"])
        else:
            digests = f"({q('digests')} || %(merge)s::jsonb) - %(drop)s::text[]"
            params["merge"] = json.dumps(record["merge"])
            params["drop"] = sorted(record["drop"])
        params.update(
            version=record["version"],
            rolling_out=record["rolling_out"],
            written=json.dumps(record["written"]),
        )
        parts.append(
            f"""stored AS (
                UPDATE {_table(AppliedRecord)}
                SET {q("digests")} = {digests}, {q("rolling_out")} = %(rolling_out)s,
                    {q("version")} = %(version)s + 1, {q("written")} = %(written)s::jsonb
                WHERE {q("project_id")} = %(project)s AND {q("version")} = %(version)s
                RETURNING 1
            )"""  # noqa: S608
        )
    if attempt is not None:
        attempts = _table(ApplyAttempt)
        columns = ("generation", "started_at", "duration_ms", "result", "changes", "error")
        params.update({f"attempt_{column}": attempt.get(column, "") for column in columns})
        params["attempt_changes"] = json.dumps(attempt["changes"])
        params["keep"] = ApplyAttempt.KEEP_PER_PROJECT - 1  # the new one is not seen here
        values = ", ".join(
            f"%(attempt_{column})s::jsonb" if column == "changes" else f"%(attempt_{column})s"
            for column in columns
        )
        parts.append(
            f"""added AS (
                INSERT INTO {attempts} ({q("project_id")}, {", ".join(map(q, columns))})
                VALUES (%(project)s, {values})
                RETURNING 1
            ), dropped AS (
                DELETE FROM {attempts}
                WHERE {q("project_id")} = %(project)s AND {q("id")} <= (
                    SELECT {q("id")} FROM {attempts} WHERE {q("project_id")} = %(project)s
                    ORDER BY {q("id")} DESC LIMIT 1 OFFSET %(keep)s
                )
                RETURNING 1
            )"""  # noqa: S608
        )
    if not parts:
        return None
    result = "(SELECT COUNT(*) FROM stored)" if record is not None else "NULL"
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(parts)} SELECT {result}", params)
        (stored,) = cursor.fetchone()
    return bool(stored) if record is not None else None
