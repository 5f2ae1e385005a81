"""Work is handed to the workers by task name: each name is a task the workers run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dashboard.celery import app
from networking import enqueue

REPO = Path(__file__).resolve().parents[2]


def test_every_name_is_a_registered_task() -> None:
    app.autodiscover_tasks(force=True)
    assert set(enqueue.TASK_NAMES) <= set(app.tasks)


def test_a_process_that_never_imported_the_tasks_finds_them_by_name() -> None:
    """The web and the watcher import no task module; a send from them must still find the task
    (eager mode runs it here: the orphan check of a namespace nobody owns is a no-op)."""
    script = (
        "import django, sys; django.setup();"
        "from django.conf import settings; from dashboard.celery import app;"
        "app.conf.task_always_eager = True;"
        "assert 'networking.tasks' not in sys.modules;"
        "from networking import enqueue;"
        "assert enqueue.send(enqueue.DELETE_NAMESPACE_IF_ORPHANED, 'prj-nobody'), 'not sent';"
        "assert 'networking.tasks' in sys.modules"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "dashboard.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
