"""Hand work to the workers once a transaction commits, even when the broker is down.

A Celery message is only a hint to look now: the rows are the truth, and the periodic resync
finds whatever a lost message missed. So a broker outage must not turn a saved change into an
error page. The send is attempted after the commit; if the broker cannot be reached the change
stays saved, a warning is logged (ids only) and the request is told, so the page can say the
cluster will catch up once the queue is back.

Tasks are named, never imported: the domain stays below ``networking.tasks``, which calls into
it (``make lint`` holds that line). The names are the tasks' registered names, checked by
``tests/domain/test_enqueue.py`` against what the Celery app has registered.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)

# Messages that could not be sent during the current request (or task).
_undelivered: ContextVar[int] = ContextVar("undelivered", default=0)


RECONCILE_PROJECT = "networking.tasks.reconcile_project"
RUN_CONNECTION_TEST = "networking.tasks.run_connection_test"
SEND_PEERING_NOTIFICATION = "networking.tasks.send_peering_notification"
DELETE_NAMESPACE_IF_ORPHANED = "networking.tasks.delete_namespace_if_orphaned"
TASK_NAMES = (
    RECONCILE_PROJECT,
    RUN_CONNECTION_TEST,
    SEND_PEERING_NOTIFICATION,
    DELETE_NAMESPACE_IF_ORPHANED,
)


def send(task_name: str, *args: Any) -> bool:
    """Send the task named ``task_name`` now; False (and logged) if the broker is unreachable.

    Through the registered task, so the app's settings apply (its queue, eager mode in tests).
    """
    try:
        _registered(task_name).delay(*args)
    except (OperationalError, OSError) as error:
        _undelivered.set(_undelivered.get() + 1)
        logger.warning(
            "Worker queue unreachable; %s%r not sent (%s). The periodic resync will catch up.",
            task_name,
            args,
            type(error).__name__,
        )
        return False
    return True


def _registered(task_name: str) -> Any:
    """The task registered as ``task_name``. A process that never imported the tasks (the web,
    the watcher) has Celery import every installed app's tasks module first, as a worker does
    at start."""
    tasks = current_app.tasks
    if task_name not in tasks:
        current_app.autodiscover_tasks(force=True)
    return tasks[task_name]


def after_commit(task_name: str, *args: Any) -> None:
    """Send the task named ``task_name`` once the current transaction commits (at once outside
    one)."""
    transaction.on_commit(lambda: send(task_name, *args))


def start_counting() -> None:
    """Begin a request: nothing undelivered yet."""
    _undelivered.set(0)


def undelivered() -> int:
    """How many sends failed since ``start_counting``."""
    return _undelivered.get()
