"""The pages work on a phone and a desktop, by keyboard, with labelled controls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Page

from tests.browser import DESKTOP, PHONE
from tests.conftest import World

SignIn = Callable[[str], Page]
Screenshot = Callable[[Page, str], Path]


def pages(world: World) -> dict[str, str]:
    uid = world.project.uid
    return {
        "projects": reverse("project-list"),
        "overview": reverse("project-overview", args=[uid]),
        "network": reverse("project-network", args=[uid]),
        "service": reverse("service-detail", args=[uid, world.postgres.pk]),
        "new-service": reverse("service-create", args=[uid]),
        "sync": reverse("project-sync", args=[uid]),
        "audit": reverse("audit-log", args=[uid]),
        "settings": reverse("project-settings", args=[uid]),
        "secrets": reverse("secret-list", args=[uid]),
        "secret": reverse("secret-detail", args=[uid, world.secret.pk]),
        "new-secret": reverse("secret-create", args=[uid]),
        "peering": reverse("project-peering", args=[uid]),
    }


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_no_page_scrolls_sideways(
    world: World, sign_in: SignIn, screenshot: Screenshot, viewport: dict[str, int]
) -> None:
    page = sign_in("owner")
    page.set_viewport_size(viewport)  # type: ignore[arg-type]
    for name, url in pages(world).items():
        page.goto(url)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} is {overflow}px wider than the screen"
        if viewport is PHONE and name in ("overview", "service"):
            screenshot(page, f"phone-{name}")


def test_every_control_has_a_label(world: World, sign_in: SignIn) -> None:
    page = sign_in("owner")
    unlabelled_script = """
    () => [...document.querySelectorAll(
        'input:not([type=hidden]), select, textarea, button, a[href]')]
      .filter(el => {
        const labelled = (el.labels && el.labels.length) || el.getAttribute('aria-label')
          || el.getAttribute('aria-labelledby') || (el.textContent || '').trim();
        return !labelled;
      })
      .map(el => el.outerHTML.slice(0, 120))
    """
    for name, url in pages(world).items():
        page.goto(url)
        assert page.evaluate(unlabelled_script) == [], name


def test_keyboard_focus_is_visible(world: World, sign_in: SignIn) -> None:
    page = sign_in("owner")
    page.goto(reverse("service-create", args=[world.project.uid]))
    page.keyboard.press("Tab")
    for _ in range(12):
        page.keyboard.press("Tab")
        style = page.evaluate(
            """() => { const s = getComputedStyle(document.activeElement);
                       return {shadow: s.boxShadow, outline: s.outlineStyle,
                               tag: document.activeElement.tagName}; }"""
        )
        if style["tag"] == "BODY":
            continue
        assert style["shadow"] != "none" or style["outline"] != "none", style
