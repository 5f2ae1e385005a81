"""Waiting for what a user would wait for: a state in the database, a page, a packet."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until[T](
    condition: Callable[[], T | None], what: str, timeout: float = 60, every: float = 0.1
) -> T:
    """Call ``condition`` until it returns something true, and return that; fail after
    ``timeout`` seconds saying what never happened (with the last value seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({value!r})")
        time.sleep(every)
