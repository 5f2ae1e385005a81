"""What a request can lose to another at the same moment, and what the person is told.

Two front ends (the pages and the API) meet the same races: a unique constraint two clicks hit
together, a deadlock or a serializable transaction PostgreSQL chose to abort, an object deleted
while the request worked on it. None is anyone's mistake and nothing was saved, so each is a
409 (or a 404 for the deleted object) with a sentence, never a 500.
"""

from __future__ import annotations

from django.db import IntegrityError, OperationalError

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
    return isinstance(exception, IntegrityError) or (
        isinstance(exception, OperationalError)
        and getattr(exception.__cause__, "sqlstate", None) in RETRYABLE_SQLSTATES
    )
