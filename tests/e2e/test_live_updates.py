"""Pages follow the cluster by themselves while it catches up, and only while they are seen."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from django.urls import reverse
from playwright.sync_api import Page, Response, expect

from networking.models import AuditEvent, PeeringRequest
from tests.browser import CATCH_UP, HtmxErrors
from tests.cluster.workloads import deploy
from tests.cluster_fixtures import Cluster
from tests.conftest import World
from tests.e2e.conftest import worker_held_back
from tests.worker import WorkerProcess

SignIn = Callable[[str], Page]
Screenshot = Callable[[Page, str], Path]
# A reconcile, the deployment controller and the worker's recheck of the rollout, after a worker
# restart, on a machine that may be busy.


def test_a_service_that_starts_receiving_a_secret_shows_its_rollout_without_a_reload(
    world: World,
    cluster: Cluster,
    sign_in: SignIn,
    e2e_worker: WorkerProcess,
    screenshot: Screenshot,
) -> None:
    world.project.request_reconcile()
    page = sign_in("owner")
    page.goto(reverse("secret-detail", args=[world.project.uid, world.secret.pk]))
    expect(page.locator("#sync-status")).to_contain_text("In sync", timeout=CATCH_UP)
    # The customer's deploy system runs the database (no replicas: it rolls out with no kubelet).
    deploy(cluster, world.project.namespace, "postgres")

    with worker_held_back(e2e_worker):
        page.get_by_role("link", name="Change services").click()
        page.get_by_label("postgres").check()
        page.get_by_role("button", name="Save").click()
        row = page.locator("#rotation").get_by_role("row", name=re.compile("postgres"))
        expect(row).to_contain_text("no workload deployed yet")

    # The worker restarts the Deployment onto the secret and watches it roll out; the open page
    # follows both without a reload.
    expect(row.locator(".status")).to_have_text("up to date", timeout=CATCH_UP)
    expect(row).to_contain_text("Deployment postgres")
    screenshot(page, "secret-receiver-rolled-out")


def fetched(url: str) -> Callable[[Response], bool]:
    """A request htmx made for ``url`` (a poll, or a part of the page refreshing itself)."""

    def matches(response: Response) -> bool:
        request = response.request
        return (
            request.url.split("?")[0].endswith(url) and request.headers.get("hx-request") == "true"
        )

    return matches


def test_a_hidden_tab_stops_polling_and_resumes_when_shown(world: World, sign_in: SignIn) -> None:
    url = reverse("project-peering", args=[world.project.uid])
    live = reverse("project-live", args=[world.project.uid])
    page = sign_in("owner")
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text))
    polled = fetched(live)
    with page.expect_response(polled):
        page.goto(url)

    # Hide the tab, then count the polls htmx starts: each must be dropped before it is sent.
    page.evaluate(
        """() => {
          window.polls = {dropped: 0, sent: 0};
          const hidden = {configurable: true, get: () => "hidden"};
          Object.defineProperty(document, "visibilityState", hidden);
          document.addEventListener("htmx:beforeRequest", (event) => {
            event.defaultPrevented ? window.polls.dropped++ : window.polls.sent++;
          });
        }"""
    )
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url))
    page.wait_for_function("() => window.polls.dropped >= 2")
    assert page.evaluate("() => window.polls.sent") == 0
    assert [u for u in sent if live in u] == []

    # Shown again, it polls again.
    with page.expect_response(polled):
        page.evaluate(
            """() => Object.defineProperty(
                document, "visibilityState", {configurable: true, get: () => "visible"})"""
        )
    # The CSP let every script run and htmx never needed eval.
    assert [p for p in problems if "Content Security Policy" in p or "eval" in p] == []


def test_back_to_a_page_that_refreshed_itself_shows_the_whole_page(
    world: World, sign_in: SignIn
) -> None:
    url = reverse("project-peering", args=[world.project.uid])
    page = sign_in("owner")
    page.goto(url)
    # Support approves meanwhile: the page's poll hears of it and the list refreshes itself.
    with page.expect_response(fetched(url), timeout=CATCH_UP):
        PeeringRequest.objects.filter(pk=world.peering.pk).update(
            status=PeeringRequest.Status.APPROVED
        )
        world.project.audit(actor=None, action=AuditEvent.Action.PEERING_APPROVED, target="peering")
    expect(page.locator(".peering .status").first).to_have_text("Approved, being connected")
    # The browser's cache last saw the partial at this URL: Back must not show it as the page.
    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    page.go_back()
    expect(page.get_by_role("heading", name="VPC peering")).to_be_visible()
    expect(page.get_by_role("heading", name="Request peering")).to_be_visible()


def test_a_rotation_started_with_one_click_reads_completed_without_a_reload(
    world: World, sign_in: SignIn, e2e_worker: WorkerProcess, screenshot: Screenshot
) -> None:
    world.project.request_reconcile()
    page = sign_in("owner")
    page.goto(reverse("secret-detail", args=[world.project.uid, world.secret.pk]))
    expect(page.locator("#sync-status")).to_contain_text("In sync", timeout=CATCH_UP)
    history = page.locator("#rotation-history")
    with worker_held_back(e2e_worker):
        # One click, no confirmation page: the rotation refuses no request.
        page.get_by_role("button", name="Rotate", exact=True).click()
        expect(page.locator(".messages")).to_contain_text("Started rotation 1")
        expect(history).to_contain_text("Rotation 1:")
        expect(history).to_contain_text("in progress")
        expect(page.locator("#secret-head")).to_contain_text("Rotation 1 running")
        page.evaluate("() => { window.notReloaded = true; }")

    # The worker runs the phases (no receiver runs a workload: none waits); the open page
    # follows to the end, its list, its head and its progress alike.
    expect(history).to_contain_text("completed at", timeout=CATCH_UP)
    expect(history).not_to_contain_text("in progress")
    expect(page.locator("#secret-head")).to_contain_text("rotated 1 time")
    expect(page.get_by_role("button", name="Rotate", exact=True)).to_be_visible()
    assert page.evaluate("() => window.notReloaded") is True
    screenshot(page, "secret-rotation-completed")


def test_an_htmx_error_fails_the_browser_test_that_meets_it(
    world: World, sign_in: SignIn, htmx_errors: HtmxErrors
) -> None:
    """The guard every browser test runs under catches what htmx reports: the overview's old
    filter trigger, whose selector htmx cannot parse, and a request the server refuses (each
    then forgotten, so this test passes)."""
    page = sign_in("owner")
    page.goto(reverse("project-overview", args=[world.project.uid]))
    expect(page.get_by_role("heading", name="Services")).to_be_visible()
    assert htmx_errors.seen == []
    with page.expect_console_message(lambda message: message.type == "error"):
        page.evaluate(
            """() => {
              const form = document.createElement("form");
              form.setAttribute("hx-get", location.pathname);
              form.setAttribute("hx-trigger", "change from:.service-filters select");
              document.body.append(form);
              htmx.process(form);
            }"""
        )
    assert [error.split(" (on ")[0] for error in htmx_errors.seen] == ["htmx:syntax:error"]
    htmx_errors.seen.clear()

    other = reverse("project-overview", args=[world.other_project.uid])  # another tenant's
    with page.expect_console_message(lambda message: message.type == "error"):
        page.evaluate("(url) => htmx.ajax('GET', url, {target: 'main', swap: 'none'})", other)
    assert [error.split(", ")[0] for error in htmx_errors.seen] == [
        f"Response Status Error Code 404 from {other}"
    ]
    htmx_errors.seen.clear()
