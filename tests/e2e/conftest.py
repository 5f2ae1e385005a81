"""Real-browser tests (the browser itself: ``tests/browser.py``) against a live server, a real
Celery worker process and the real API server."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.utils import timezone

from networking.models import Project
from tests.browser import SignIn
from tests.kubeapi import TestAPIServer
from tests.worker import WorkerProcess, database_url


# Package-scoped: stopped once the browser tests are done, so it never takes the queued tasks
# of the tests that run after them.
@pytest.fixture(scope="package")
def e2e_worker(
    django_db_setup: Any,
    django_db_blocker: Any,
    kube_api: TestAPIServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """One worker process for the browser tests, applying to the test API server."""
    with django_db_blocker.unblock():
        url = database_url()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": url,
        "CLUSTER_BACKEND": "kubernetes",
        "KUBECONFIG": str(kube_api.kubeconfig_path),
        "LOG_LEVEL": "DEBUG",
    }
    worker = WorkerProcess(env, tmp_path_factory.mktemp("e2e-worker") / "worker.log")
    worker.start()
    yield worker
    worker.stop()


@contextmanager
def worker_held_back(worker: WorkerProcess) -> Iterator[None]:
    """Stop the worker for the block, then start it again.

    What a page shows inside the block cannot be the worker's doing, so a page opened there is
    sure to open on the state before the cluster caught up; whatever it shows later without a
    reload, it shows by itself. Stopping is a warm shutdown: a task under way finishes first,
    and queued messages wait in the broker for the next worker.
    """
    worker.stop()
    try:
        yield
    finally:
        logged = worker.log.stat().st_size
        worker.start()  # returns at once: the log already says "ready." from the last start
        deadline = time.monotonic() + 60
        while b"ready." not in worker.log.read_bytes()[logged:]:
            assert worker.process is not None and worker.process.poll() is None, worker.tail()
            assert time.monotonic() < deadline, f"the worker did not start again:\n{worker.tail()}"
            time.sleep(0.1)


@pytest.fixture
def app(transactional_db: Any, live_server: Any, e2e_worker: WorkerProcess, settings: Any) -> Any:
    """The live dashboard with its worker: what a user's browser talks to."""
    settings.CLUSTER_BACKEND = "kubernetes"
    return live_server


@pytest.fixture
def sign_in(app: Any, browser_sign_in: SignIn) -> SignIn:
    """Sign in to the live dashboard, whose worker applies to the test API server."""
    return browser_sign_in


@pytest.fixture(autouse=True)
def _worker_done_before_the_flush(transactional_db: Any) -> Iterator[None]:
    """After each test, before its database is emptied: wait (a while) for a pass the worker
    is making to end. The worker is a process of its own, and a pass still writing while the
    flush truncates every table can deadlock with it (set up after the database, this runs
    before it is flushed). A pass holds its project's lease while it runs."""
    yield
    deadline = time.monotonic() + 10
    while Project.objects.filter(reconcile_lease_until__gt=timezone.now()).exists():
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
