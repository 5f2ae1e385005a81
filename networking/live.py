"""Each project's revision, mirrored in the cache, so an open page's "anything new?" poll is
answered without the database.

Every open project page asks every few seconds whether its project's revision moved
(``dashboard.views.project_live``). Nearly always it has not, and that answer should cost what
a cache read costs, not a session, a user and a membership read from PostgreSQL: a thousand
open tabs are 500 polls a second. So the cache holds, per project, the revision last read from
the database, and per (session, project) that the session may read it; the dashboard's
``LivePollMiddleware`` answers "nothing new" from those two keys alone, and anything else (a
key missing, a revision that moved, the cache down) goes the whole way, which refills them.

The mirror is never ahead of the database and never behind it for long:

- whoever moves a revision (a saved change, a pass, the watcher) marks the project's key
  "moving" at once and again when its transaction commits (``moved``), so polls take the whole
  way;
- a poll that read the revision from the database stores it only if the key holds no mark and
  no higher revision (``seen``, one atomic script in Redis): a read from before the commit
  cannot overwrite the mark the commit left;
- every key lapses after ``MIRROR_SECONDS``: should a mark be lost (the cache unreachable just
  as a revision moved), an open page learns of the change that much later, never not at all.

Only a cache shared by every process (Redis) can hold the mirror; with the in-process cache of
``make run`` without Redis, the worker's changes would never reach the web server's cache, so
every poll takes the whole way (``enabled``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import transaction

logger = logging.getLogger(__name__)

# How long a mirrored revision, or a session's right to read it, is trusted without the
# database: the longest an open page can miss a change whose mark was lost, and the longest
# a removed member's open page still hears "nothing new".
MIRROR_SECONDS = 30
# How long a "moving" mark stands: longer than a poll takes from reading the database to
# storing what it read.
MOVING_SECONDS = 10
MOVING = -1
# After the cache failed to answer, polls go to the database for this long, instead of each
# waiting on the cache's connect timeout.
BACK_OFF_SECONDS = 10.0
_failed_at = -BACK_OFF_SECONDS

# Store ARGV[1] unless the key holds the mark or a revision at least as high. Django's Redis
# cache keeps integers as plain numbers, so the script and ``cache.get`` read the same value.
_STORE_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local number = tonumber(current)
  if number == nil or number == -1 or number >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


def _cache() -> RedisCache | None:
    backend = caches["default"]
    return backend if isinstance(backend, RedisCache) else None


def _failed() -> None:
    global _failed_at
    _failed_at = time.monotonic()


def _backing_off() -> bool:
    return time.monotonic() - _failed_at < BACK_OFF_SECONDS


def enabled() -> bool:
    return _cache() is not None


def _revision_key(project_id: int) -> str:
    return f"live:revision:{project_id}"


def _access_key(session_key: str, project_uid: str) -> str:
    # The session key itself grants a login: the cache holds only a digest of it.
    digest = hashlib.sha256(session_key.encode()).hexdigest()[:32]
    return f"live:access:{digest}:{project_uid}"


_deferred = threading.local()


def moved(project_ids: Iterable[int]) -> None:
    """These projects' revisions just moved: mark them now and, inside a transaction, again
    once it commits (a poll meanwhile reads the old revision, and the mark keeps it from
    storing it). Inside ``deferred()``, once it ends."""
    if not enabled():
        return
    keys = [_revision_key(project_id) for project_id in project_ids]
    if not keys:
        return
    pending: set[str] | None = getattr(_deferred, "keys", None)
    if pending is not None:
        pending.update(keys)
        return
    _mark(keys)
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: _mark(keys))


@contextmanager
def deferred() -> Iterator[None]:
    """Mark what moves in the block once, when it ends: a reconcile pass moves its project's
    revision several times in a few milliseconds (applied, rows stamped, released), and each
    mark is a round trip on the path to "In sync". Its writes commit as they go (no
    transaction spans the block), so marking at its end is marking after every commit."""
    if getattr(_deferred, "keys", None) is not None:
        yield  # already deferring: the outer block marks
        return
    _deferred.keys = set()
    try:
        yield
    finally:
        keys, _deferred.keys = _deferred.keys, None
        if keys:
            _mark(sorted(keys))


def _mark(keys: list[str]) -> None:
    cache = _cache()
    assert cache is not None
    if _backing_off():
        # Unreachable a moment ago: no write waits on its connect timeout. What the cache holds
        # lapses within MIRROR_SECONDS.
        return
    try:
        # One plain round trip, not the transaction Django's set_many makes of it: a pass marks
        # its project as it claims it, on the path between a click and "In sync".
        client = cache._cache.get_client(write=True)
        if len(keys) == 1:
            client.set(cache.make_and_validate_key(keys[0]), MOVING, ex=MOVING_SECONDS)
        else:
            pipeline = client.pipeline(transaction=False)
            for key in keys:
                pipeline.set(cache.make_and_validate_key(key), MOVING, ex=MOVING_SECONDS)
            pipeline.execute()
    except Exception:
        _failed()
        # The mirror lapses within MIRROR_SECONDS: open pages learn of it that much later.
        logger.warning("Could not mark %d revisions as moving in the cache", len(keys))


def seen(session_key: str | None, project_uid: str, project_id: int, revision: int) -> None:
    """A poll read ``revision`` from the database, with the session's membership: mirror both."""
    cache = _cache()
    if cache is None or not session_key or _backing_off():
        return
    try:
        client = cache._cache.get_client(write=True)
        client.eval(
            _STORE_IF_NEWER,
            1,
            cache.make_and_validate_key(_revision_key(project_id)),
            revision,
            MIRROR_SECONDS,
        )
        cache.set(_access_key(session_key, project_uid), project_id, timeout=MIRROR_SECONDS)
    except Exception:
        _failed()
        logger.warning("Could not mirror the revision of project %s in the cache", project_id)


def unchanged(session_key: str, project_uid: str, since: int) -> bool:
    """Whether the cache alone can say: this session may read the project, and its revision is
    still ``since``. False whenever it cannot say so (then ask the database)."""
    cache = _cache()
    if cache is None or _backing_off():
        return False
    try:
        project_id: Any = cache.get(_access_key(session_key, project_uid))
        if not isinstance(project_id, int):
            return False
        revision = cache.get(_revision_key(project_id))
    except Exception:
        _failed()
        return False
    return isinstance(revision, int) and revision != MOVING and revision == since
