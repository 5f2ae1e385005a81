"""The overview for real teams: any size, live for everyone, on a phone and with long names."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.urls import reverse
from playwright.sync_api import Page, expect

from networking.models import AuditEvent, Service
from tests.browser import CATCH_UP, PHONE
from tests.conftest import World, make_service

SignIn = Callable[[str], Page]
Screenshot = Callable[[Page, str], Path]
WIDE = {"width": 1440, "height": 900}
# The longest name the naming rule allows: 63 characters once normalized.
LONG_NAME = ("Order Fulfilment Notifications " * 3)[:63].strip()


def long_service(world: World) -> Service:
    service = make_service(world.project, LONG_NAME, Service.Kind.PRIVATE, [3000, 9090])
    assert len(service.name) == 63
    return service


def overview(page: Page, world: World, query: str = "") -> None:
    page.goto(reverse("project-overview", args=[world.project.uid]) + query)
    expect(page.get_by_role("heading", name="Services")).to_be_visible()


CLIPPED = """
(selector) => [...document.querySelectorAll(selector)]
  .filter((el) => {
    const box = el.getBoundingClientRect();
    const outside = box.right > window.innerWidth + 0.5 || box.left < 0;
    return el.scrollWidth > el.clientWidth + 1 || outside;
  })
  .map((el) => el.textContent.trim())
"""


def test_on_a_phone_no_hostname_is_clipped_and_nothing_scrolls_sideways(
    world: World, sign_in: SignIn, screenshot: Screenshot
) -> None:
    long = long_service(world)
    page = sign_in("owner")
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    overview(page, world)
    addresses = page.locator("code.address")
    expect(addresses.first).to_be_visible()
    assert page.evaluate(CLIPPED, "code.address") == []
    assert f"{long.internal_hostname}:9090" in page.locator("#services-table").inner_text()
    # Tables are cards here: none scrolls inside its box either.
    assert page.evaluate(CLIPPED, ".table-wrap") == []
    # Every tab shows whole (they wrap), Settings included.
    assert page.evaluate(CLIPPED, "nav.tabs a") == []
    expect(page.get_by_role("link", name="Settings")).to_be_visible()
    # The note is one line until opened.
    note = page.locator("details.note")
    assert note.evaluate("(el) => el.open") is False
    note.locator("summary").click()
    expect(note).to_contain_text("Not authenticated by default")
    # A long name is cut with an ellipsis; the whole name is its link's title.
    link = page.get_by_role("link", name=LONG_NAME)
    expect(link).to_have_attribute("title", LONG_NAME)
    screenshot(page, "phone-overview")


def test_at_1440_px_a_63_character_name_leaves_every_column_in_view(
    world: World, sign_in: SignIn, screenshot: Screenshot
) -> None:
    long = long_service(world)
    page = sign_in("owner")
    page.set_viewport_size(WIDE)  # type: ignore[arg-type]
    overview(page, world)
    row = page.locator(f"#service-{long.pk}")
    for cell in ("cell-address", "cell-ip", "cell-status"):
        right = row.locator(f"td.{cell}").evaluate("(el) => el.getBoundingClientRect().right")
        assert right <= WIDE["width"], cell
    assert page.evaluate(CLIPPED, "code.address") == []
    name = row.locator("td.cell-name a")
    assert name.evaluate("(el) => el.scrollWidth > el.clientWidth")  # cut, not overflowing
    expect(name).to_have_attribute("title", LONG_NAME)
    screenshot(page, "overview-long-name")


def test_every_page_fits_a_phone(world: World, sign_in: SignIn) -> None:
    long_service(world)
    page = sign_in("owner")
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    uid = world.project.uid
    pages: list[tuple[str, list[Any]]] = [
        ("project-overview", [uid]),
        ("service-detail", [uid, world.api.pk]),
        ("secret-list", [uid]),
        ("secret-detail", [uid, world.secret.pk]),
        ("project-peering", [uid]),
        ("project-sync", [uid]),
        ("audit-log", [uid]),
        ("project-settings", [uid]),
        ("org-team", [world.acme.slug]),
    ]
    for name, args in pages:
        page.goto(reverse(name, args=args))
        main = page.locator("main")
        expect(main).to_be_visible()
        assert page.evaluate(CLIPPED, "main .table-wrap, main pre, main code.value") == [], name
        wider = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert wider <= 0, name


def test_an_address_on_the_overview_is_copied_with_one_click(world: World, sign_in: SignIn) -> None:
    page = sign_in("owner")
    overview(page, world)
    page.get_by_role("button", name="Copy api.internal:8080").click()
    expect(page.get_by_role("button", name="Copy api.internal:8080")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == "api.internal:8080"


def test_search_sort_and_pages_live_in_the_url(world: World, sign_in: SignIn) -> None:
    Service.objects.bulk_create(
        Service(
            project=world.project,
            display_name=f"svc {i:02}",
            name=f"svc-{i:02}",
            kind=Service.Kind.PRIVATE,
            ports=[3000],
        )
        for i in range(60)
    )
    page = sign_in("owner")
    overview(page, world)
    expect(page.locator(".list-summary")).to_contain_text("62 services · page 1 of 2")
    expect(page.locator("#services-table tbody tr")).to_have_count(50)

    page.get_by_label("Search").fill("svc-5.internal")
    expect(page.locator("#services-table tbody tr")).to_have_count(10)
    expect(page).to_have_url(re.compile(r"\?q=svc-5\.internal"))
    expect(page.locator(".list-summary")).to_contain_text("10 of 62 services match")

    page.get_by_label("Kind").select_option(label="Web service")
    expect(page.locator("#services-table")).to_contain_text("No service matches")
    expect(page).to_have_url(re.compile(r"kind=web"))

    page.go_back()
    expect(page.locator("#services-table tbody tr")).to_have_count(10)
    page.go_back()
    expect(page.locator("#services-table tbody tr")).to_have_count(50)

    page.get_by_role("link", name="Next").click()
    expect(page).to_have_url(re.compile(r"page=2"))
    expect(page.locator("#services-table tbody tr")).to_have_count(12)
    # Sorted by name already (the header says so); a click turns it round.
    header = page.get_by_role("columnheader", name=re.compile(r"^Service"))
    expect(header).to_have_attribute("aria-sort", "ascending")
    header.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"sort=-name"))
    expect(page.locator("#services-table tbody tr").first).to_contain_text("svc 59")
    # A link to this view opens it as it is.
    url = page.url
    page.goto(url)
    expect(page.locator("#services-table tbody tr").first).to_contain_text("svc 59")


def test_a_teammates_change_shows_up_row_by_row_without_a_reload(
    world: World, sign_in: SignIn, screenshot: Screenshot
) -> None:
    world.project.request_reconcile()
    page = sign_in("owner")
    overview(page, world)
    expect(page.locator("#sync-status")).to_contain_text("In sync", timeout=CATCH_UP)
    postgres = page.locator(f"#service-{world.postgres.pk}")
    expect(postgres).to_contain_text("Live", timeout=CATCH_UP)
    # Mark the rows as they are in the page now, to tell a swapped row from a kept one.
    page.evaluate("() => document.querySelectorAll('tbody tr').forEach((r) => r.dataset.kept = 1)")

    # A member changes api's ports from another browser (here: the same domain call).
    world.api.ports = [8081]
    world.api.save_changes(actor=world.users["member"])
    api = page.locator(f"#service-{world.api.pk}")
    expect(api).to_contain_text("api.internal:8081", timeout=CATCH_UP)
    expect(api).to_contain_text("Live", timeout=CATCH_UP)  # and then the cluster caught up
    expect(page.locator("#sync-status")).to_contain_text("In sync", timeout=CATCH_UP)
    assert postgres.get_attribute("data-kept") == "1"  # untouched: only api's row came back
    assert api.get_attribute("data-kept") is None

    # A service added by someone else appears too.
    worker = make_service(world.project, "worker", Service.Kind.PRIVATE, [3000])
    world.project.record_change(
        actor=world.users["member"],
        action=AuditEvent.Action.SERVICE_CREATED,
        target=worker.name,
        service=worker,
    )
    expect(page.locator(f"#service-{worker.pk}")).to_contain_text(
        "worker.internal:3000", timeout=CATCH_UP
    )
    screenshot(page, "overview-live")


def test_back_after_a_history_cache_miss_shows_the_whole_page(
    world: World, sign_in: SignIn
) -> None:
    """Sorting pushes a URL; Back with nothing in htmx's history cache asks the server again,
    and gets the page, not the bare table."""
    make_service(world.project, "Billing", Service.Kind.PRIVATE, [8080])
    page = sign_in("owner")
    overview(page, world)
    table = page.locator("#services-table")
    page.locator("#services-table th").get_by_role("link", name="Kind").click()
    expect(page).to_have_url(re.compile(r"/\?sort=kind$"))
    page.locator("#services-table th").get_by_role("link", name="Service").click()
    # By name is the default: the address is the overview's own (no live-update parameters).
    expect(page).to_have_url(re.compile(r"/projects/\w+/$"))
    # A cache miss: as after a long session, or a snapshot too big to keep.
    page.evaluate("() => sessionStorage.removeItem('htmx-history-cache')")
    page.go_back()
    expect(page).to_have_url(re.compile(r"/\?sort=kind$"))
    expect(page.get_by_role("heading", name="Services")).to_be_visible()
    expect(page.get_by_role("link", name="Settings")).to_be_visible()
    expect(table).to_be_visible()
    expect(table.locator("th[aria-sort]").first).to_be_visible()
    assert page.locator("#services-table").count() == 1
