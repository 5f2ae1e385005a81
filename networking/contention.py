"""What a request can lose to another at the same moment, and what the person is told.

Two front ends (the pages and the API) meet the same races: a unique constraint two clicks hit
together, a deadlock or a serializable transaction PostgreSQL chose to abort, an object deleted
while the request worked on it. None is anyone's mistake and nothing was saved, so each is a
409 (or a 404 for the deleted object) with a sentence, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import IntegrityError, OperationalError, transaction

logger = logging.getLogger(__name__)

CONFLICT = (
    "Someone else changed this at the same moment, so nothing was saved. "
    "Reload the page to see the current state, and try again if it is still needed."
)
GONE = (
    "Someone deleted this while your request was on its way. Reload the page you came from to "
    "see what is there now."
)
# The same, to a script: it reads the object again rather than reloading a page.
CONFLICT_FOR_API = CONFLICT.replace("Reload the page", "Read it again")
# PostgreSQL: a deadlock, or a serializable transaction that lost a race. Retrying helps.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def lost_a_race(exception: BaseException) -> bool:
    """True when ``exception`` is a write that lost to a concurrent one (nothing was saved)."""
    return isinstance(exception, IntegrityError) or _aborted(exception)


def _aborted(exception: BaseException) -> bool:
    """PostgreSQL aborted the transaction to break a deadlock, or as a serialization failure."""
    return (
        isinstance(exception, OperationalError)
        and getattr(exception.__cause__, "sqlstate", None) in RETRYABLE_SQLSTATES
    )


def retried_after_deadlock[T](work: Callable[[], T], *, attempts: int = 3) -> T:
    """``work`` in a transaction of its own, run again (``attempts`` times in all) when
    PostgreSQL aborts that transaction to break a deadlock; inside a transaction already, just
    ``work`` (the outer transaction is what would be aborted, and its caller decides).

    A request waiting in line for a row can be the one PostgreSQL aborts when the writers ahead
    of it deadlock with each other: the first in line holds the row's place, so it is part of
    the cycle, and its wait started first, so it is the one that finds the cycle and gives up.
    Nothing of an aborted transaction is saved, so running it again is safe for work that is
    the whole of what the request writes (a reveal's audit event).
    """
    if transaction.get_connection().in_atomic_block:
        return work()
    attempt = 1
    while True:
        try:
            with transaction.atomic():
                return work()
        except OperationalError as error:
            if attempt >= attempts or not _aborted(error):
                raise
            attempt += 1
            logger.info("Trying again (attempt %d of %d) after: %s", attempt, attempts, error)
