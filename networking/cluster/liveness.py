"""Whether a watcher is watching the cluster: what lets a change's pass trust its record.

A pass that trusts the applied record reads nothing from the cluster (see ``reconcile.py``);
that is safe only while some watcher would notice, from its watches, anything else changing a
namespace. So "watched" must mean exactly that: a watcher process is alive, has looked at every
project once, and every one of its watches is open on the API server.

On PostgreSQL that is said by an advisory lock, held on a connection of the watcher's own
while all of that is true and let go the moment a watch fails. It is judged by what the watcher
receives from the API server (an open watch: events, bookmarks, a stream reopened when the
server ends it), not by a heartbeat of seconds: a watcher starved of CPU on a saturated machine
still holds it (its watches resume from their resource version and miss nothing), while a
watcher that dies lets it go at once, since PostgreSQL drops a session's locks with its
connection. The connection ends itself when it has been idle a minute (the loop hung, or
starved past any busy machine: it is pinged every few seconds while the loop runs) or when its
peer is gone (TCP keepalives), so a lost node does not vouch for hours.

The watcher holds the lock exclusively (with several watchers, one holds it and the others try
again a second later), and a pass asks in its claim statement (``lease.py``) by trying to take it
shared for an instant: refused means held. That is one lookup in the lock table, where reading
``pg_locks`` copies every lock of the server under all of the lock manager's partition locks,
on every change's path to "In sync" (about a third of the claim's time, growing with the
server's locks). The instant's shared lock is let go within the same expression, so a claim
in a long transaction holds nothing; two claims at once do not see each other's (shared locks
do not conflict); and a watcher whose try meets one tries again a moment later.

SQLite (``make run``: one machine, no server) has no such locks: there a heartbeat row says
it, written every ``WatcherHeartbeat.BEAT`` while the same holds, and stale after
``STALE_AFTER``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from networking.models import WatcherHeartbeat

logger = logging.getLogger(__name__)

# The advisory lock's two int4 keys (PostgreSQL's two-key form: pg_locks shows them as classid
# and objid, with objsubid 2). 0x5B1A: "StackBlAze". The second key was 1 while watchers held the
# lock shared and passes read pg_locks: a worker of that version, during a rolling deploy, would
# take a new claim's instant shared lock for a watcher, so this protocol has a key of its own.
LOCK_KEYS = (0x5B1A, 2)
# A watcher's tries for the lock in one round (a pass's claim may hold it shared for an
# instant), this far apart.
HOLD_TRIES = 3
HOLD_RETRY_SECONDS = 0.01
# Refused those tries (another watcher holds it), a watcher tries again after this long.
HOLD_AGAIN_SECONDS = 1.0
# How often a holder checks that its connection (and so its lock) is still there.
CHECK_SECONDS = 5.0
# The lock's connection says, server side: end me (and so the lock) when I go quiet this long
# (the watcher's loop hung, or starved beyond any busy machine), or when my peer is gone (a lost
# node, a partition: TCP keepalives, instead of the kernel's two hours).
LOCK_SESSION_SETTINGS = (
    "SET idle_session_timeout = '60s'",
    "SET tcp_keepalives_idle = 10",
    "SET tcp_keepalives_interval = 5",
    "SET tcp_keepalives_count = 3",
)


def uses_lock(vendor: str | None = None) -> bool:
    return (vendor or connection.vendor) == "postgresql"


def watched_sql(vendor: str) -> str:
    """A SQL expression, true while a watcher is watching (``%(watched_since)s`` is bound to
    the heartbeat's staleness limit, used on SQLite)."""
    if uses_lock(vendor):
        keys = "%s, %s" % LOCK_KEYS  # noqa: UP031 (two int constants of this module)
        # CASE, not OR: only it promises the order (let go only what was taken).
        return (
            f"(CASE WHEN pg_catalog.pg_try_advisory_lock_shared({keys}) "
            f"THEN NOT pg_catalog.pg_advisory_unlock_shared({keys}) ELSE TRUE END)"
        )
    q = connection.ops.quote_name
    return (
        f"(SELECT {q('seen_at')} FROM {q(WatcherHeartbeat._meta.db_table)} "  # noqa: S608
        f"WHERE {q('id')} = 1) > %(watched_since)s"
    )


def watched_params() -> dict[str, Any]:
    return {
        "watched_since": connection.ops.adapt_datetimefield_value(
            timezone.now() - WatcherHeartbeat.STALE_AFTER
        )
    }


def watching() -> bool:
    """Whether a pass starting now would call its project watched."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {watched_sql(connection.vendor)}", watched_params())
        (watched,) = cursor.fetchone()
    return bool(watched)


class Signal:
    """The watcher's side: say "watching" while ``update(True)`` holds, and stop saying it at
    ``update(False)``, ``close()`` or the process's end.

    Not thread-safe: one thread (the watcher's loop) calls it.
    """

    def __init__(self) -> None:
        self.held = False
        self._connection: BaseDatabaseWrapper | None = None
        self._checked = 0.0
        self._refused_at = float("-inf")
        self._beaten = 0.0

    def update(self, watching: bool) -> None:
        try:
            if not uses_lock():
                self._beat(watching)
            elif watching:
                self._hold()
            else:
                self._let_go()
        except DatabaseError:
            # Not holding is the safe side: passes read the cluster until the next try.
            logger.warning("Could not say whether the watcher is watching", exc_info=True)
            self._drop_connection()

    def close(self) -> None:
        """Stop saying it now (a dying process's connection says it a moment later)."""
        if self.held:
            self.update(False)
        self._drop_connection()

    # -- PostgreSQL ---------------------------------------------------------------------------

    def _hold(self) -> None:
        if self.held:
            if time.monotonic() - self._checked >= CHECK_SECONDS:
                # The connection may have been cut (a restart, an idle timeout): the lock
                # went with it.
                self._execute("SELECT 1")
                self._checked = time.monotonic()
            return
        if time.monotonic() - self._refused_at < HOLD_AGAIN_SECONDS:
            return  # another watcher held it a moment ago: not again each namespace of a batch
        for attempt in range(HOLD_TRIES):
            if attempt:
                # A pass's claim may be asking at this instant: it lets go within microseconds.
                time.sleep(HOLD_RETRY_SECONDS)
            if self._execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEYS):
                break
        else:
            # Another watcher holds it, and says it for us: try again in a while.
            self._refused_at = time.monotonic()
            return
        self.held = True
        self._checked = time.monotonic()
        logger.info("Watching: passes may trust their records")

    def _let_go(self) -> None:
        if not self.held:
            return
        self._execute("SELECT pg_advisory_unlock(%s, %s)", LOCK_KEYS)
        self.held = False
        logger.warning("Not watching (a watch is down): passes read the cluster")

    def _execute(self, sql: str, params: tuple[int, ...] = ()) -> Any:
        """Run one SELECT on the lock's connection; its one value."""
        if self._connection is None:
            # Its own connection, never closed by the request/task cycle's connection
            # handling, in autocommit: a session lock lives as long as it does.
            self._connection = connections["default"].copy()
            for setting in LOCK_SESSION_SETTINGS:
                try:
                    with self._connection.cursor() as cursor:
                        cursor.execute(setting)
                except DatabaseError:
                    # An older PostgreSQL without the setting: the lock still goes with the
                    # process, only not with a hung loop.
                    logger.warning("PostgreSQL refused %r for the watcher's lock", setting)
        with self._connection.cursor() as cursor:
            cursor.execute(sql, params)
            (value,) = cursor.fetchone()
        return value

    def _drop_connection(self) -> None:
        self.held = False
        if self._connection is not None:
            with contextlib.suppress(DatabaseError):
                self._connection.close()
            self._connection = None

    # -- SQLite -------------------------------------------------------------------------------

    def _beat(self, watching: bool) -> None:
        if not watching:
            if self.held:
                # Make the heartbeat stale now, not STALE_AFTER from the last beat.
                WatcherHeartbeat.objects.update(
                    seen_at=timezone.now() - WatcherHeartbeat.STALE_AFTER - timedelta(seconds=1)
                )
                self.held = False
            return
        if self.held and time.monotonic() - self._beaten < WatcherHeartbeat.BEAT.total_seconds():
            return
        WatcherHeartbeat.beat()
        self.held = True
        self._beaten = time.monotonic()
