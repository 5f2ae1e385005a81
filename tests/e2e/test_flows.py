"""What a customer does in the dashboard, in a real browser, with the cluster catching up."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from networking.models import Service
from tests.cluster_fixtures import Cluster
from tests.conftest import World
from tests.worker import WorkerProcess

SignIn = Callable[[str], Page]
Screenshot = Callable[[Page, str], Path]
IP = re.compile(r"10\.96\.\d+\.\d+")
SYNC_TIMEOUT = 30_000


def open_project(page: Page, world: World) -> None:
    page.get_by_role("link", name=re.compile(world.project.name)).click()
    expect(page.get_by_role("heading", name="Services")).to_be_visible()


def wait_in_sync(page: Page) -> None:
    expect(page.locator("#sync-status")).to_contain_text("In sync", timeout=SYNC_TIMEOUT)


def test_create_a_private_service_and_watch_it_reach_the_cluster(
    world: World, cluster: Cluster, sign_in: SignIn, screenshot: Screenshot
) -> None:
    page = sign_in("owner")
    open_project(page, world)
    page.get_by_role("link", name="New service").click()

    name = page.get_by_label("Name", exact=True)
    name.press_sequentially("Background Worker", delay=20)
    expect(page.locator("#name-preview")).to_contain_text("background-worker.internal")
    page.get_by_label("Kind").select_option(label="Private service / worker")
    page.get_by_label("Ports").fill("3000")
    screenshot(page, "create-service-live-preview")
    page.get_by_role("button", name="Create service").click()

    expect(page.get_by_role("heading", name="Background Worker")).to_be_visible()
    expect(page.locator("#endpoints")).to_contain_text("http://background-worker.internal:3000")
    wait_in_sync(page)
    # The endpoints panel refreshes itself once the cluster has assigned the ClusterIP.
    expect(page.locator("#endpoints")).to_contain_text(IP, timeout=SYNC_TIMEOUT)
    ip = cluster.services(world.project.namespace)["background-worker"].spec.cluster_ip
    expect(page.locator("#endpoints")).to_contain_text(ip)
    screenshot(page, "service-endpoints")

    page.get_by_role("link", name="Services", exact=True).click()
    row = page.get_by_role("row", name=re.compile("Background Worker"))
    expect(row).to_contain_text("background-worker.internal:3000")
    expect(row).to_contain_text(ip)
    expect(row).to_contain_text("Live")
    screenshot(page, "project-overview")


def test_create_a_database_then_reveal_and_copy_its_connection_string(
    world: World,
    sign_in: SignIn,
    screenshot: Screenshot,
    e2e_worker: WorkerProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    page = sign_in("member")
    page.goto(reverse("service-create", args=[world.project.uid]))
    page.get_by_label("Name", exact=True).fill("Orders DB")
    page.get_by_label("Kind").select_option(label="PostgreSQL")
    expect(page.get_by_label("Ports")).to_have_value("5432")
    page.get_by_role("button", name="Create service").click()

    panel = page.locator("#endpoints")
    expect(panel).to_contain_text("postgresql://orders_db_")
    expect(panel).to_contain_text("••••••••@orders-db.internal:5432/orders_db")
    service = Service.objects.get(project=world.project, name="orders-db")
    assert service.database_password is not None
    password = service.database_password.reveal()
    assert password not in page.content()

    page.get_by_role("button", name="Reveal password").click()
    expect(panel).to_contain_text("Revealed to you just now")
    connection_string = panel.locator("code.value").first.inner_text()
    assert password in connection_string
    panel.get_by_role("button", name="Copy connection string").click()
    expect(panel.get_by_role("button", name="Copy connection string")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == connection_string
    screenshot(page, "database-revealed")
    wait_in_sync(page)
    # Neither the web server's log nor the worker's (at DEBUG) ever saw the password.
    assert password not in caplog.text
    assert password not in e2e_worker.log.read_text()


def test_rename_a_service_and_the_hostname_and_cluster_follow(
    world: World, cluster: Cluster, sign_in: SignIn, screenshot: Screenshot
) -> None:
    world.project.request_reconcile()  # the fixture's services reach the cluster first
    page = sign_in("owner")
    page.goto(reverse("service-detail", args=[world.project.uid, world.api.pk]))
    wait_in_sync(page)
    page.get_by_role("link", name="Rename or change ports").click()
    name = page.get_by_label("Name", exact=True)
    name.fill("")
    name.press_sequentially("Public API", delay=20)
    expect(page.locator("#name-preview")).to_contain_text("public-api.internal")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#endpoints")).to_contain_text("public-api.internal")
    wait_in_sync(page)
    services = cluster.services(world.project.namespace)
    assert "public-api" in services
    # The old name keeps resolving for a day, to the renamed service's pods.
    assert services["api"].spec.selector == {"stackblaze.cloud/service": "public-api"}
    expect(page.locator("#old-hostnames")).to_contain_text("api.internal still resolves")
    expect(page.locator("#endpoints")).to_contain_text(services["public-api"].spec.cluster_ip)
    screenshot(page, "service-renamed")


def test_a_name_that_collides_is_explained(
    world: World, sign_in: SignIn, screenshot: Screenshot
) -> None:
    page = sign_in("owner")
    page.goto(reverse("service-create", args=[world.project.uid]))
    page.get_by_label("Name", exact=True).press_sequentially("API", delay=20)
    expect(page.locator("#name-preview")).to_contain_text("already uses api.internal")
    page.get_by_role("button", name="Create service").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "The service “api” already uses api.internal in this project"
    )
    screenshot(page, "name-collision")
    assert Service.objects.filter(project=world.project, name="api").count() == 1


def test_a_viewer_finds_no_mutating_controls(
    world: World, sign_in: SignIn, screenshot: Screenshot
) -> None:
    page = sign_in("viewer")
    open_project(page, world)
    expect(page.get_by_text("api.internal:8080")).to_be_visible()
    expect(page.get_by_role("link", name="New service")).to_have_count(0)
    page.get_by_role("link", name="postgres").click()
    for name in ("Reveal password", "Rename or change ports", "Delete", "Retry"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
        expect(page.get_by_role("link", name=name)).to_have_count(0)
    expect(page.locator("#endpoints")).to_contain_text("Viewers can’t reveal credentials")
    screenshot(page, "viewer-service")


def test_an_outsider_gets_the_not_found_page(
    world: World, sign_in: SignIn, screenshot: Screenshot
) -> None:
    page = sign_in("outsider")
    screenshot(page, "outsider-projects")
    expect(page.get_by_text(world.project.name)).to_have_count(0)
    response = page.goto(reverse("project-overview", args=[world.project.uid]))
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    screenshot(page, "outsider-not-found")
    response = page.goto(reverse("service-detail", args=[world.project.uid, world.postgres.pk]))
    assert response is not None and response.status == 404
