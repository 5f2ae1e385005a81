"""The whole VPC peering path through the browser, with the cluster checked at each step.

Each page that waits for the cluster is opened before the worker has done its part, and must
update by itself: the test waits for what the user waits for, never on the worker being quick.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from networking.models import PeeringRequest, Project
from tests.browser import CATCH_UP, closed, new_context
from tests.cluster_fixtures import Cluster
from tests.conftest import World
from tests.e2e.conftest import worker_held_back
from tests.worker import WorkerProcess

Screenshot = Callable[[Page, str], Path]
# Both projects' reconciles, after a worker restart, on a machine that may be busy.


@pytest.fixture
def signed_in(browser: Browser, app: Any) -> Iterator[Callable[[str], Page]]:
    """Sign a user in, in a browser of their own (two people, two sessions); each browser is
    closed at the test's end, its htmx errors checked like every test's."""
    contexts: list[BrowserContext] = []

    def sign_in_as(username: str) -> Page:
        context = new_context(browser, app.url)
        contexts.append(context)
        page = context.new_page()
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill("pw")
        page.get_by_role("button", name="Sign in").click()
        # Support staff land on their queue; everyone else on their projects.
        landing = "Peering requests waiting for support" if username == "support" else "Projects"
        expect(page.get_by_role("heading", name=landing)).to_be_visible()
        return page

    yield sign_in_as
    for context in contexts:
        closed(context)


def peering_status(page: Page) -> Locator:
    return page.locator(".peering .status").first


def peer_policies(cluster: Cluster, namespace: str) -> list[str]:
    return sorted(name for name in cluster.policies(namespace) if name.startswith("peer-"))


def test_request_accept_approve_then_revoke(
    world: World,
    cluster: Cluster,
    signed_in: Callable[[str], Page],
    e2e_worker: WorkerProcess,
    screenshot: Screenshot,
) -> None:
    PeeringRequest.objects.all().delete()  # start from no peering at all
    for project in (world.project, world.other_project):
        project.request_reconcile()
    acme, globex = world.project, world.other_project

    # Acme's owner asks to peer with Globex's project, by the ID from its Settings page.
    owner = signed_in("owner")
    owner.goto(reverse("project-peering", args=[acme.uid]))
    owner.get_by_label("Project ID to peer with").fill(globex.uid)
    owner.get_by_label("Why do these projects need to talk privately?").fill(
        "The storefront reads Globex's warehouse stock levels."
    )
    owner.get_by_role("button", name="Request peering").click()
    expect(owner.locator(".peering").first).to_contain_text("Waiting for the other organization")
    requested = owner.get_by_text("Requested. Waiting for the other organization.")
    expect(requested).to_be_visible()
    screenshot(owner, "peering-requested")
    assert peer_policies(cluster, acme.namespace) == []

    # Globex's owner accepts it.
    other = signed_in("globex-owner")
    other.goto(reverse("project-peering", args=[globex.uid]))
    other.get_by_role("button", name="Accept").click()
    expect(other.locator(".peering").first).to_contain_text("Waiting for support")
    accepted = other.get_by_text("Done: the peering is now waiting for support.")
    expect(accepted).to_be_visible()
    # Acme's open page moves on by itself, and what it said about the old state goes with it.
    expect(peering_status(owner)).to_have_text("Waiting for support")
    expect(requested).to_have_count(0)

    # Support approves it from the queue, and Acme's owner opens the page before the worker has
    # connected anything.
    with worker_held_back(e2e_worker):
        support = signed_in("support")
        support.get_by_role("link", name="Support queue").click()
        expect(
            support.get_by_role("heading", name=re.compile("Storefront ↔ Analytics"))
        ).to_be_visible()
        expect(support.locator("article")).to_contain_text("The storefront reads Globex")
        screenshot(support, "support-queue")
        support.get_by_role("button", name="Approve").click()
        expect(
            support.get_by_text("Approved. The worker is connecting both namespaces.")
        ).to_be_visible()
        owner.goto(reverse("project-peering", args=[acme.uid]))
        expect(peering_status(owner)).to_have_text("Approved, being connected")
        screenshot(owner, "peering-approved")
        # Globex's page, open since its owner accepted, no longer says it waits for support.
        expect(peering_status(other)).to_have_text("Approved, being connected")
        expect(accepted).to_have_count(0)

    # The worker connects both namespaces; the open page turns active by itself and lists the
    # other side's services.
    expect(peering_status(owner)).to_have_text("Active", timeout=CATCH_UP)
    expect(
        owner.get_by_text(f"warehouse.{globex.namespace}.svc.cluster.local:3306")
    ).to_be_visible()
    screenshot(owner, "peering-active")
    assert peer_policies(cluster, acme.namespace) == [f"peer-{globex.namespace}"]
    assert peer_policies(cluster, globex.namespace) == [f"peer-{acme.namespace}"]

    # Either owner can revoke; the page follows the worker removing the policies.
    with worker_held_back(e2e_worker):
        other.reload()
        expect(peering_status(other)).to_have_text("Active")
        other.get_by_role("link", name="Revoke peering…").click()
        # The confirmation says what stops working, both ways, before anything happens.
        confirmation = other.locator("main form.card")
        expect(confirmation).to_contain_text(
            f"services of {globex.name} ({globex.organization.name})"
        )
        expect(confirmation).to_contain_text("can no longer reach the services of")
        other.get_by_role("button", name="Revoke peering").click()
        expect(peering_status(other)).to_have_text("Revoked, being disconnected")
    expect(peering_status(other)).to_have_text("Revoked", timeout=CATCH_UP)
    history = other.locator(".peering .history").first
    for words in (
        "Waiting for support · by globex-owner",
        "Approved, being connected · by support",
        "Active · by system",
        "Revoked, being disconnected · by globex-owner",
        "Revoked · by system",
    ):
        expect(history).to_contain_text(words)
    screenshot(other, "peering-revoked")
    assert peer_policies(cluster, acme.namespace) == []
    assert peer_policies(cluster, globex.namespace) == []


def test_a_rejection_replaces_what_the_open_page_said_about_the_request(
    world: World, signed_in: Callable[[str], Page]
) -> None:
    """ "Requested. Waiting for support." is true until support decides: the open page then
    shows the rejection and its reason, and no longer says it waits."""
    PeeringRequest.objects.all().delete()
    search = Project.objects.create(organization=world.acme, name="Search")
    owner = signed_in("owner")
    owner.goto(reverse("project-peering", args=[world.project.uid]))
    owner.get_by_label("Project ID to peer with").fill(search.uid)
    owner.get_by_label("Why do these projects need to talk privately?").fill(
        "Search indexes the storefront's catalogue."
    )
    owner.get_by_role("button", name="Request peering").click()
    waiting = owner.get_by_text("Requested. Waiting for support.")
    expect(waiting).to_be_visible()

    support = signed_in("support")
    support.get_by_label("Reason for rejecting (the customer sees it)").fill(
        "Both projects are Acme's: use one project."
    )
    support.get_by_role("button", name="Reject").click()
    expect(support.get_by_text("Rejected; the customer sees your reason.")).to_be_visible()

    expect(peering_status(owner)).to_have_text("Rejected by support")
    expect(owner.locator("#peerings")).to_contain_text("Both projects are Acme's: use one project.")
    expect(waiting).to_have_count(0)
