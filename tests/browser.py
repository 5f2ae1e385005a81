"""A real browser for tests: Debian's Chromium driven by Playwright.

Playwright never downloads a browser here: it drives the ``chromium`` on PATH, headless, with
every feature that would reach out to the network turned off. Loaded for every test folder
(the root conftest names it), used by ``tests/e2e`` and ``tests/dataplane``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
# around it are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

SignIn = Callable[..., Page]
Screenshot = Callable[[Page, str], Path]

SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-results" / "screenshots"
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
# How long a page may take to show what the worker did (a pass, a rollout), in milliseconds.
CATCH_UP = 60_000


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


class HtmxErrors:
    """Every error htmx reports in a context's pages (it logs each to the console as
    ``htmx:<event>``: a trigger it cannot parse, a target it cannot find, a swap that failed,
    a request the server refused). A browser test fails on any: a user never sees them, and
    each one is a part of a page that silently does not work."""

    def __init__(self, context: BrowserContext) -> None:
        self.seen: list[str] = []
        context.on("console", self._record)

    # Not errors of the page: a request cut short because the user left the page (a form
    # submitted while a preview was on its way), and the generic "afterRequest" htmx logs
    # beside every specific error (which is recorded under its own name).
    NOT_FAULTS = ("htmx:sendAbort", "htmx:afterRequest")

    # What htmx logs: the event's name, or, for an answer the server refused (4xx, 5xx),
    # "Response Status Error Code 403 from /path".
    FAULTS = ("htmx:", "Response Status Error Code")

    def _record(self, message: ConsoleMessage) -> None:
        text = message.text
        if (
            message.type == "error"
            and text.startswith(self.FAULTS)
            and not text.startswith(self.NOT_FAULTS)
        ):
            where = message.page.url if message.page is not None else "a closed page"
            self.seen.append(f"{text} (on {where})")

    def check(self) -> None:
        seen, self.seen = self.seen, []
        if seen:
            pytest.fail("htmx reported errors in the browser:\n" + "\n".join(seen), pytrace=False)


def new_context(browser: Browser, base_url: str, **options: Any) -> BrowserContext:
    """A browser context like every test's: desktop-sized, with its htmx errors recorded
    (``context.htmx_errors``; ``closed`` checks them)."""
    context = browser.new_context(
        viewport=DESKTOP,  # type: ignore[arg-type]
        base_url=base_url,
        **options,
    )
    context.set_default_timeout(15_000)
    context.htmx_errors = HtmxErrors(context)  # type: ignore[attr-defined]
    return context


def closed(context: BrowserContext) -> None:
    """Close ``context``; fail the test if htmx reported an error in any of its pages."""
    errors: HtmxErrors = context.htmx_errors  # type: ignore[attr-defined]
    seen = list(errors.seen)  # before closing: a page torn down may abort its requests
    context.close()
    errors.seen = seen
    errors.check()


@pytest.fixture
def context(browser: Browser, live_server: Any) -> Iterator[BrowserContext]:
    context = new_context(
        browser, live_server.url, permissions=["clipboard-read", "clipboard-write"]
    )
    yield context
    closed(context)


@pytest.fixture
def htmx_errors(context: BrowserContext) -> HtmxErrors:
    errors: HtmxErrors = context.htmx_errors  # type: ignore[attr-defined]
    return errors


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def browser_sign_in(page: Page, live_server: Any) -> SignIn:
    def sign_in_as(username: str, password: str = "pw") -> Page:
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        # Support staff land on their queue; everyone else on their projects.
        landing = "Peering requests waiting for support" if username == "support" else "Projects"
        expect(page.get_by_role("heading", name=landing)).to_be_visible()
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
