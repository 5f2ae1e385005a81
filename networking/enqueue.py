"""Hand work to the workers once a transaction commits, even when the broker is down.

A Celery message is only a hint to look now: the rows are the truth, and the periodic resync
finds whatever a lost message missed. So a broker outage must not turn a saved change into an
error page. The send is attempted after the commit; if the broker cannot be reached the change
stays saved, a warning is logged (ids only) and the request is told, so the page can say the
cluster will catch up once the queue is back.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from celery import Task
from django.db import transaction
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)

# Messages that could not be sent during the current request (or task).
_undelivered: ContextVar[int] = ContextVar("undelivered", default=0)


def send(task: Task[Any, Any], *args: Any) -> bool:
    """Send ``task(*args)`` now; False (and logged) if the broker is unreachable."""
    try:
        task.delay(*args)
    except (OperationalError, OSError) as error:
        _undelivered.set(_undelivered.get() + 1)
        logger.warning(
            "Worker queue unreachable; %s%r not sent (%s). The periodic resync will catch up.",
            task.name,
            args,
            type(error).__name__,
        )
        return False
    return True


def after_commit(task: Task[Any, Any], *args: Any) -> None:
    """Send ``task(*args)`` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send(task, *args))


def start_counting() -> None:
    """Begin a request: nothing undelivered yet."""
    _undelivered.set(0)


def undelivered() -> int:
    """How many sends failed since ``start_counting``."""
    return _undelivered.get()
