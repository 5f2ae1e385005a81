"""The Celery application: workers apply the desired state to the cluster."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("stackblaze")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def close_old_connections(task: Any = None, **kwargs: Any) -> None:
    """Around each task, as around each request: drop connections past their age or broken.

    Not around a task run in-process (``apply()``, eager mode): that is its caller's unit of
    work, perhaps inside a transaction, as Celery's own fixup leaves it alone.
    """
    from django.db import close_old_connections

    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()
