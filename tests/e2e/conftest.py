"""Real-browser tests: Debian's Chromium driven by Playwright, against a live server, a real
Celery worker process and the real API server.

Playwright never downloads a browser here: it drives the ``chromium`` on PATH, headless, with
every feature that would reach out to the network turned off.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.kubeapi import TestAPIServer
from tests.worker import WorkerProcess, database_url

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
# around it are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-results" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Chromium is not installed (apt-get install chromium; .ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    executable = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(browser: Browser, live_server: Any) -> Iterator[BrowserContext]:
    context = browser.new_context(
        viewport=DESKTOP,  # type: ignore[arg-type]
        base_url=live_server.url,
        permissions=["clipboard-read", "clipboard-write"],
    )
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


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
def sign_in(page: Page, app: Any) -> Callable[[str], Page]:
    def sign_in_as(username: str, password: str = "pw") -> Page:
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Projects")).to_be_visible()
        return page

    return sign_in_as


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    def take(page: Page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
