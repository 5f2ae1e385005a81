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
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


def moved_beside(project_ids: Iterable[int]) -> None:
    """As ``moved``, with the cache's round trip made beside the caller, outside a transaction:
    a pass's claim marks its project so open pages show "Applying", and that mark need not be
    waited for on the path to "In sync". It lands within a moment; ``deferred`` waits for it
    before its own mark, so a pass's marks land in order."""
    if not enabled():
        return
    ids = list(project_ids)
    keys = [_revision_key(project_id) for project_id in ids]
    if not keys or transaction.get_connection().in_atomic_block:
        moved(ids)
        return
    try:
        _beside.marking = _marker().submit(_mark, keys)
    except RuntimeError:  # the interpreter is shutting down: no new threads
        _mark(keys)


_beside = threading.local()
_markers: dict[int, ThreadPoolExecutor] = {}
_markers_lock = threading.Lock()


def _marker() -> ThreadPoolExecutor:
    """This process's marking thread (per process: a forked child has none of its parent's)."""
    pid = os.getpid()
    with _markers_lock:
        if pid not in _markers:
            _markers.clear()
            _markers[pid] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-mark")
        return _markers[pid]


def _marked_beside() -> None:
    """Wait for this thread's mark made beside it, if any (``_mark`` reports its own errors)."""
    marking: Future[None] | None = getattr(_beside, "marking", None)
    if marking is not None:
        _beside.marking = None
        marking.result()


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
        _marked_beside()
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


# -- The header's notifications count ---------------------------------------------------------
#
# Every page of a signed-in person asks every few seconds whether their unread count changed
# (``dashboard.notification_views.notifications_live``). The cache holds one token per
# audience: per organization ("org:ID"), for support staff ("support") and per person
# ("user:ID", who read something). Whatever changes what an audience sees (a notification for
# it, once its transaction commits; a person marking things read) replaces the audience's token
# with a new random one. A poll's ``since`` is a digest of the tokens of the audiences the
# person belonged to, with their roles: the same digest means nothing new. A token that is
# missing (never made, evicted, lapsed) is made afresh by the next full poll, which reads the
# tokens before the database: whatever commits after that read changes a token the poll's
# digest did not include, so the next poll goes the whole way again.
#
# As with the projects' revisions, per session the cache holds for ``MIRROR_SECONDS`` which
# audiences the database let it read (``inbox_seen``), and the dashboard's
# ``InboxPollMiddleware`` answers "nothing new" from those keys alone (``inbox_unchanged``).

# A token outlives any open page's interest in it; one that lapses costs one full poll.
INBOX_TOKEN_SECONDS = 24 * 3600


def _inbox_token_key(audience: str) -> str:
    return f"live:inbox:{audience}"


def _inbox_access_key(session_key: str) -> str:
    digest = hashlib.sha256(session_key.encode()).hexdigest()[:32]
    return f"live:inbox-access:{digest}"


def _fresh_token() -> str:
    return secrets.token_hex(8)


def inbox_audiences(organization_ids: Iterable[int | None]) -> list[str]:
    """The audiences of notifications for these organizations (None: support staff's)."""
    return sorted({f"org:{pk}" if pk is not None else "support" for pk in organization_ids})


def inbox_person(user_id: int) -> str:
    """The audience of one person's own changes to what they see (read marks, memberships)."""
    return f"user:{user_id}"


def inbox_moved(audiences: Iterable[str]) -> None:
    """What these audiences see changed: their open pages' next poll goes the whole way. Now
    and, inside a transaction, again once it commits (a poll in between read the database
    before the commit: the second new token sends the next poll the whole way again)."""
    keys = [_inbox_token_key(audience) for audience in audiences]
    if not enabled() or not keys:
        return
    _inbox_mark(keys)
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: _inbox_mark(keys))


def _inbox_mark(keys: list[str]) -> None:
    cache = _cache()
    if cache is None or _backing_off():
        return
    try:
        cache.set_many({key: _fresh_token() for key in keys}, timeout=INBOX_TOKEN_SECONDS)
    except Exception:
        _failed()
        logger.warning("Could not mark %d notification audiences as changed", len(keys))


def _digest(scope: list[str], tokens: list[str]) -> str:
    text = "\n".join(f"{entry}={token}" for entry, token in zip(scope, tokens, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _audience(entry: str) -> str:
    """A scope entry's audience: "org:5/owner" is audience "org:5", seen as an owner."""
    return entry.split("/", 1)[0]


def inbox_fingerprint(scope: list[str]) -> str | None:
    """A digest of the tokens of ``scope``'s audiences now, making those that are missing;
    None when the cache cannot say (then the caller's digest comes from the database)."""
    cache = _cache()
    if cache is None or _backing_off():
        return None
    keys = [_inbox_token_key(_audience(entry)) for entry in scope]
    try:
        found = cache.get_many(keys)
        for key in keys:
            if not isinstance(found.get(key), str):
                cache.add(key, _fresh_token(), timeout=INBOX_TOKEN_SECONDS)
                found[key] = cache.get(key)
    except Exception:
        _failed()
        return None
    tokens = [found.get(key) for key in keys]
    if not all(isinstance(token, str) for token in tokens):
        return None
    return _digest(scope, [str(token) for token in tokens])


def inbox_seen(session_key: str | None, scope: list[str]) -> None:
    """The database let this session read ``scope`` (its audiences, with its roles)."""
    cache = _cache()
    if cache is None or not session_key or _backing_off():
        return
    try:
        cache.set(_inbox_access_key(session_key), scope, timeout=MIRROR_SECONDS)
    except Exception:
        _failed()
        logger.warning("Could not mirror a session's notification audiences in the cache")


def inbox_unchanged(session_key: str, since: str) -> bool:
    """Whether the cache alone can say: nothing this session sees changed since ``since``."""
    cache = _cache()
    if cache is None or _backing_off():
        return False
    try:
        scope: Any = cache.get(_inbox_access_key(session_key))
        if not isinstance(scope, list):
            return False
        keys = [_inbox_token_key(_audience(str(entry))) for entry in scope]
        found = cache.get_many(keys)
    except Exception:
        _failed()
        return False
    tokens = [found.get(key) for key in keys]
    if not all(isinstance(token, str) for token in tokens):
        return False
    return _digest([str(entry) for entry in scope], [str(token) for token in tokens]) == since
