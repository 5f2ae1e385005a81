"""The header's notifications in a real browser: the count follows events without a reload,
the list opens by keyboard, and nothing scrolls sideways on a phone."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from django.contrib.auth.models import User
from django.urls import reverse
from playwright.sync_api import Page, expect

from networking import peering
from networking.models import Project
from tests.browser import PHONE
from tests.conftest import World

SignIn = Callable[[str], Page]
Screenshot = Callable[[Page, str], Path]
# Two polls of the header (every 5 s), on a machine that may be busy.
LIVE = 20_000


def test_a_peering_request_shows_up_in_the_header_without_a_reload(
    world: World, sign_in: SignIn, screenshot: Screenshot
) -> None:
    page = sign_in("owner")
    page.goto(reverse("project-list"))
    link = page.get_by_role("link", name="Notifications")
    count = page.locator("#inbox-count")
    expect(link).to_be_visible()
    # The header asks once the page has loaded: nothing for Acme's owner yet.
    page.wait_for_selector("#inbox-live[hx-get*='since=']", state="attached")
    expect(count).to_be_hidden()

    # Globex asks to peer with Acme's project while the page stays open.
    reports = Project.objects.create(organization=world.globex, name="Reports")
    peering.request_peering(
        reports,
        world.project.uid,
        "Reports reads the storefront's orders.",
        actor=User.objects.get(username="globex-owner"),
    )
    expect(count).to_have_text("1 unread", timeout=LIVE)
    expect(link).to_have_accessible_name("Notifications 1 unread")

    # By keyboard, on a phone: the list, then the notification, which leads where to act.
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Notifications")).to_be_visible()
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the notifications page is {overflow}px wider than the phone"
    item = page.get_by_role("button", name="Unread: Globex asks to peer Reports with Storefront")
    screenshot(page, "phone-notifications")
    item.focus()
    page.keyboard.press("Enter")
    peering_page = reverse("project-peering", args=[world.project.uid])
    expect(page).to_have_url(re.compile(re.escape(peering_page) + "$"))
    # Read now: the header says so on the next page.
    page.wait_for_selector("#inbox-live[hx-get*='since=']", state="attached")
    expect(page.locator("#inbox-count")).to_be_hidden()
