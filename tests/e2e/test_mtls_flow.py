"""Mutual TLS in a real browser: an owner turns it on, the worker issues every service its
certificate into the cluster, the owner chooses who may call a service, and a CA rotation runs
through its phases on an open page to "completed", without a reload."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from networking import mtls
from networking.cluster.desired import TLS_SECRET
from networking.models import CertificateAuthority, MutualTLS, Service
from tests.browser import CATCH_UP, PHONE, SCREENSHOTS, HtmxErrors
from tests.cluster_fixtures import Cluster
from tests.conftest import World, user
from tests.e2e.conftest import worker_held_back
from tests.waiting import wait_until
from tests.worker import WorkerProcess

SignIn = Callable[[str], Page]
Screenshot = Callable[[Page, str], Path]
# Seconds each rotation phase waits for the pods' files: long enough for the open page (its
# poll every 2 s) to show each phase, short enough for a test.
PROPAGATION = 4


@pytest.fixture
def quick_propagation(e2e_worker: WorkerProcess, settings: Any) -> Iterator[None]:
    """The worker (and the pages) wait ``PROPAGATION`` seconds per phase, not minutes."""
    settings.MTLS_PROPAGATION_SECONDS = PROPAGATION
    original = e2e_worker.env
    with worker_held_back(e2e_worker):
        e2e_worker.env = {**original, "MTLS_PROPAGATION_SECONDS": str(PROPAGATION)}
    yield
    with worker_held_back(e2e_worker):
        e2e_worker.env = original


def identity(world: World, service: str) -> str:
    return f"spiffe://stackblaze.cloud/project/{world.project.uid}/service/{service}"


def wider_than_the_screen(page: Page) -> int:
    return int(
        page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    )


UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, a[href], summary')]
  .filter(el => !((el.labels && el.labels.length) || el.getAttribute('aria-label')
                  || el.getAttribute('aria-labelledby') || (el.textContent || '').trim()))
  .map(el => el.outerHTML.slice(0, 120))"""


def tls_files(cluster: Cluster, world: World) -> dict[str, str]:
    secret = cluster.core.read_namespaced_secret(TLS_SECRET, world.project.namespace)
    return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}


def test_an_owner_turns_it_on_and_chooses_who_may_call_a_service(
    world: World,
    cluster: Cluster,
    sign_in: SignIn,
    screenshot: Screenshot,
    htmx_errors: HtmxErrors,
) -> None:
    page = sign_in("owner")
    page.goto(reverse("project-overview", args=[world.project.uid]))
    page.get_by_role("link", name="Mutual TLS").click()
    expect(page.get_by_role("heading", name="Mutual TLS", exact=True)).to_be_visible()
    expect(page.locator("#mtls-off")).to_contain_text("/var/run/stackblaze/tls/")
    page.get_by_role("button", name="Turn on mutual TLS").click()

    expect(page.locator(".messages")).to_contain_text("Mutual TLS is on.")
    page.evaluate("() => { window.notReloaded = true; }")
    # The worker issues both certificates; the open page shows them without a reload.
    certificates = page.locator("#mtls-certificates")
    for name in ("api", "postgres"):
        row = certificates.get_by_role("row", name=re.compile(rf"^{name} "))
        # Issued: its hostnames and its CA (before, the row names the identity it will have,
        # and "issuing…").
        expect(row).to_contain_text(f"{name}.internal", timeout=CATCH_UP)
        expect(row).to_contain_text(identity(world, name))
        expect(row).to_contain_text("CA 1")
    expect(certificates).not_to_contain_text("issuing…")
    assert page.evaluate("() => window.notReloaded") is True
    # What the page shows is what the cluster holds: the project's CA in every ca.pem.
    files = tls_files(cluster, world)
    ca = CertificateAuthority.objects.get(project=world.project)
    assert files["ca.pem"] == ca.certificate
    assert {"api.cert.pem", "api.key.pem", "api.accept.txt", "postgres.cert.pem"} <= set(files)
    expect(page.locator("#mtls-authorities")).to_contain_text("signs the certificates")
    screenshot(page, "mtls-page")

    # Only api may call postgres: the owner says so on postgres's page.
    page.get_by_role("link", name="postgres", exact=True).click()
    section = page.locator("#mtls")
    expect(section).to_contain_text(identity(world, "postgres"))
    expect(section).to_contain_text("From CA 1, for postgres.internal")
    expect(section).to_contain_text(f"Every service of {world.project.name}")
    section.get_by_label("Only the services chosen below").check()
    section.get_by_label("api (api.internal)", exact=True).check()
    section.get_by_role("button", name="Save who may call it").click()
    expect(page.locator(".messages")).to_contain_text("postgres accepts calls only from api.")
    expect(page.locator("#mtls-facts")).to_contain_text("Accepts calls from api")
    postgres = Service.objects.get(project=world.project, name="postgres")
    assert list(postgres.accepts_calls_from.values_list("name", flat=True)) == ["api"]
    # The worker writes postgres's accept list to the cluster: api's identity, and no other.
    wait_until(
        lambda: (
            tls_files(cluster, world)["postgres.accept.txt"].splitlines()[1:]
            == [identity(world, "api")]
        ),
        "postgres's accept.txt in the cluster to name api alone",
    )
    section.screenshot(path=str(SCREENSHOTS / "mtls-service-section.png"))

    # A web service's page has the code to serve and call it, in tabs.
    page.goto(reverse("service-detail", args=[world.project.uid, world.api.pk]) + "#mtls")
    snippets = page.locator("#mtls details.snippet")
    expect(snippets).to_have_count(6)
    expect(snippets.first).to_contain_text("Python server (ssl)")
    page.locator("#mtls summary", has_text="Go client (crypto/tls)").click()
    expect(page.locator("#mtls details.snippet[open]", has_text="Go client")).to_contain_text(
        "api.internal"
    )
    page.locator("#mtls").screenshot(path=str(SCREENSHOTS / "mtls-service-snippets.png"))

    # Every control is labelled, and the pages fit a phone.
    urls = (
        reverse("project-mtls", args=[world.project.uid]),
        reverse("service-detail", args=[world.project.uid, postgres.pk]),
        reverse("service-mtls-callers", args=[world.project.uid, postgres.pk]),
        reverse("project-network", args=[world.project.uid]),
    )
    for url in urls:
        page.goto(url)
        assert page.evaluate(UNLABELLED) == [], url
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    for url in urls:
        page.goto(url)
        assert wider_than_the_screen(page) <= 0, url
        if url == urls[0]:
            screenshot(page, "phone-mtls")
    page.goto(reverse("project-network", args=[world.project.uid]))
    expect(page.locator(".mtls-edges")).to_contain_text("postgres")
    htmx_errors.check()


def test_a_ca_rotation_reads_completed_without_a_reload(
    world: World,
    sign_in: SignIn,
    e2e_worker: WorkerProcess,
    quick_propagation: None,
    screenshot: Screenshot,
    htmx_errors: HtmxErrors,
) -> None:
    mtls.enable(world.project, actor=user(world, "owner"))
    page = sign_in("owner")
    page.goto(reverse("project-mtls", args=[world.project.uid]))
    expect(page.locator("#sync-status")).to_contain_text("In sync", timeout=CATCH_UP)
    expect(page.locator("#mtls-certificates")).not_to_contain_text("issuing…", timeout=CATCH_UP)

    rotation = page.locator("#mtls-rotation")
    with worker_held_back(e2e_worker):
        # One click, no confirmation: a rotation refuses no request and restarts nothing.
        page.get_by_role("button", name="Rotate CA").click()
        expect(page.locator(".messages")).to_contain_text("Started rotating to CA 2.")
        expect(rotation.locator("[aria-current=step]")).to_contain_text("1. Trust the new CA")
        expect(rotation).to_contain_text("Waiting for the worker to write the files")
        expect(page.locator("#mtls-head")).to_contain_text("Rotating the CA")
        # Every phase the page shows, in the order it shows them.
        page.evaluate(
            """() => {
              window.notReloaded = true;
              window.phases = [];
              const note = () => {
                const current = document.querySelector("#mtls-rotation [aria-current=step] strong");
                const title = current ? current.textContent.trim() : "";
                if (title && window.phases[window.phases.length - 1] !== title) {
                  window.phases.push(title);
                }
              };
              note();
              document.body.addEventListener("htmx:afterSettle", note);
            }"""
        )
        screenshot(page, "mtls-rotation-in-progress")
        # With a phone in hand, mid-rotation.
        page.set_viewport_size(PHONE)  # type: ignore[arg-type]
        assert wider_than_the_screen(page) <= 0
        page.set_viewport_size({"width": 1280, "height": 860})

    # The worker runs the phases, each waiting for the pods' files; the page follows to the end.
    expect(rotation).to_contain_text("waiting", timeout=CATCH_UP)
    expect(rotation).to_contain_text("Completed", timeout=CATCH_UP)
    expect(rotation).to_contain_text("CA 2 signs every certificate")
    expect(page.locator("#mtls-head")).to_contain_text("rotated")
    expect(page.get_by_role("button", name="Rotate CA")).to_be_visible()
    certificates = page.locator("#mtls-certificates")
    for name in ("api", "postgres"):
        expect(certificates.get_by_role("row", name=re.compile(rf"^{name} "))).to_contain_text(
            "CA 2"
        )
    expect(page.locator("#mtls-authorities")).to_contain_text("Retired")
    assert page.evaluate("() => window.notReloaded") is True
    assert page.evaluate("() => window.phases") == [
        "1. Trust the new CA",
        "2. Issue from the new CA",
        "3. Retire the old CA",
    ]
    state = MutualTLS.objects.get(project=world.project)
    assert not state.rotating and state.last_rotated_at is not None
    screenshot(page, "mtls-rotation-completed")
    htmx_errors.check()
