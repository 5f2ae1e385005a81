"""The Network page in a real browser: the map and its table on a desktop and a phone, a
peering drawn, and drift marked while the worker repairs it, all without a reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.urls import reverse
from playwright.sync_api import Page, expect

from networking.models import PeeringRequest, Service
from tests.browser import CATCH_UP, DESKTOP, PHONE
from tests.conftest import World, make_service
from tests.e2e.conftest import worker_held_back
from tests.worker import WorkerProcess

SignIn = Callable[[str], Page]
Screenshot = Callable[[Page, str], Path]


# The texts of the map's nodes wider than their node.
OVERFLOWING = """
(svg) => [...svg.querySelectorAll("g.node")].filter((node) => {
  const frame = node.querySelector("rect").getBoundingClientRect();
  return [...node.querySelectorAll("text")].some((text) => {
    const box = text.getBoundingClientRect();
    return box.left < frame.left || box.right > frame.right;
  });
}).map((node) => node.querySelector("text").textContent)
"""


def demo_like(world: World) -> None:
    """The demo's Storefront (its four services) actively peered with Globex's Analytics."""
    make_service(world.project, "cache", Service.Kind.REDIS)
    make_service(world.project, "background-worker", Service.Kind.PRIVATE, [3000])
    make_service(world.other_project, "api", Service.Kind.WEB)
    PeeringRequest.objects.filter(pk=world.peering.pk).update(status=PeeringRequest.Status.ACTIVE)
    for project in (world.project, world.other_project):
        project.request_reconcile()


def open_network(page: Page, world: World) -> None:
    page.goto(reverse("project-network", args=[world.project.uid]))
    expect(page.get_by_role("heading", name="Who can reach whom")).to_be_visible()


def test_the_map_and_its_table_on_a_desktop_and_a_phone(
    world: World, sign_in: SignIn, screenshot: Screenshot
) -> None:
    demo_like(world)
    page = sign_in("owner")
    page.get_by_role("link", name="Storefront").click()
    page.get_by_role("link", name="Network").click()
    expect(page.get_by_role("heading", name="Who can reach whom")).to_be_visible()

    the_map = page.get_by_role("img", name="Who can reach whom in Storefront")
    expect(the_map).to_be_visible()
    for label in ("Ingress controller", "Storefront", "background-worker", "Analytics (Globex)"):
        expect(the_map.locator("text", has_text=label).first).to_be_visible()
    table = page.get_by_role("table", name="Who can reach which services of Storefront")
    expect(table).to_be_visible()
    expect(table.get_by_role("row")).to_have_count(5)  # the header and four rows
    expect(table).to_contain_text("Peering with Analytics")
    # Beside each other on a desktop.
    map_box, table_box = the_map.bounding_box(), table.bounding_box()
    assert map_box is not None and table_box is not None
    assert map_box["x"] + map_box["width"] <= table_box["x"]
    # No name runs out of its box.
    assert the_map.evaluate(OVERFLOWING) == []
    expect(page.locator("#sync-status")).to_contain_text("In sync", timeout=CATCH_UP)
    screenshot(page, "network-map")

    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    expect(the_map).to_be_visible()
    expect(table).to_be_visible()
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow}px wider than the phone"
    map_box, table_box = the_map.bounding_box(), table.bounding_box()
    assert map_box is not None and table_box is not None
    assert map_box["width"] <= PHONE["width"]
    # One above the other, the table as labelled cards.
    assert table_box["y"] >= map_box["y"] + map_box["height"]
    expect(table.locator("thead")).to_be_hidden()
    label = table.locator("td").first.evaluate("(td) => getComputedStyle(td, '::before').content")
    assert label == '"From"'
    # The map's type stays readable once scaled down to the phone.
    size = the_map.locator("text.node-name").first.evaluate(
        "(text) => text.getBoundingClientRect().height"
    )
    assert size >= 10, f"service names are {size:.1f}px tall on a phone"
    assert the_map.evaluate(OVERFLOWING) == []
    screenshot(page, "phone-network")

    # The widest names the naming rule allows still stay inside their boxes, at both sizes.
    make_service(world.project, "m" * 63, Service.Kind.PRIVATE, [3000])
    make_service(world.project, "w" * 40, Service.Kind.WEB)
    for viewport in (PHONE, DESKTOP):
        page.set_viewport_size(viewport)  # type: ignore[arg-type]
        open_network(page, world)
        expect(the_map.locator("g.node")).to_have_count(8)
        assert the_map.evaluate(OVERFLOWING) == []


def test_drift_is_marked_while_the_worker_repairs_it_without_a_reload(
    world: World, sign_in: SignIn, app: Any, e2e_worker: WorkerProcess, screenshot: Screenshot
) -> None:
    demo_like(world)
    page = sign_in("owner")
    open_network(page, world)
    note = page.locator(".drift-note")
    expect(note).to_be_hidden()
    with worker_held_back(e2e_worker):
        # What the watcher reports when someone edits the policy by hand.
        world.project.report_drift(
            [
                {
                    "kind": "NetworkPolicy",
                    "name": "project-isolation",
                    "text": "NetworkPolicy project-isolation differs",
                }
            ]
        )
        expect(note).to_contain_text("NetworkPolicy project-isolation differs")
        expect(page.locator("table.reach tr.is-drifted")).to_have_count(1)
        expect(page.locator(".network-map .box-caption.is-drifted")).to_contain_text(
            "project-isolation"
        )
        screenshot(page, "network-drift")
    # The worker's full pass makes the cluster match, and the page says so by itself.
    expect(note).to_be_hidden(timeout=CATCH_UP)
    expect(page.locator("table.reach tr.is-drifted")).to_have_count(0)
