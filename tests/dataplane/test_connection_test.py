""" "Test connection", against the real cluster: the worker runs the probe pod in the project's
namespace (as deploy/rbac.yaml's identity, past its admission policy), and what it reports
matches what the pods of the project see, with the cause in plain words when it fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from networking.cluster.probe import pod_name
from networking.models import ConnectionTest
from tests.browser import Screenshot, SignIn
from tests.conftest import World
from tests.dataplane.conftest import Call, DataPlane, applied, create_service
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

STACKBLAZE = Path(sys.executable).parent / "stackblaze"


def run_test(call: Call, token: str, project: Any, service_id: int) -> dict[str, Any]:
    """Start a test through the API and follow it, as a script would, until it finishes."""
    base = f"/projects/{project.uid}/services/{service_id}/connection-tests"
    started = call(token, "POST", base)
    assert started.status_code == 202, started.content

    def finished() -> dict[str, Any] | None:
        test = dict(call(token, "GET", f"{base}/{started.json()['id']}").json())
        return test if test["status"] not in ("queued", "running") else None

    return wait_until(finished, "the connection test to finish", 90, every=0.5)


def problems(test: dict[str, Any]) -> list[str]:
    return [finding["text"] for finding in test["findings"] if not finding["ok"]]


def test_a_running_service_passes_and_the_probe_pod_is_gone_after(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    world: World,
    api_client: Call,
    acme_token: str,
) -> None:
    project, api = storefront["project"], storefront["api"]
    test = run_test(api_client, acme_token, project, world.api.pk)
    assert test["status"] == "passed", (test["findings"], test["results"])
    assert test["resolved_to"] == [api["cluster_ip"]] == [test["expected_ip"]]
    assert [(r["port"], r["outcome"]) for r in test["results"]] == [(8080, "connected")]
    texts = [finding["text"] for finding in test["findings"]]
    assert texts[0].startswith(f"api.internal resolved to {api['cluster_ip']} in ")
    assert texts[1].startswith("Port 8080: connected in ")
    # The probe ran in the project's namespace, and was cleaned up after.
    name = pod_name(test["id"])
    assert not [
        p
        for p in dataplane.core.list_namespaced_pod(project.namespace).items
        if p.metadata.name == name
    ]


def test_each_common_cause_of_failure_is_told_apart(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    world: World,
    api_client: Call,
    acme_token: str,
) -> None:
    project = storefront["project"]
    namespace = project.namespace
    # No workload at all.
    idle = create_service(api_client, acme_token, project, "Idle Worker", "private", ports=[9000])
    applied(api_client, acme_token, project, idle)
    # An app that listens on 127.0.0.1 only (and a deploy with no readiness check, so its pod
    # counts as ready, as on most platforms).
    local = create_service(api_client, acme_token, project, "Local Only", "web", ports=[8080])
    applied(api_client, acme_token, project, local)
    dataplane.deploy(
        namespace, "local-only", args=["http", "-port", "8080", "-bind", "127.0.0.1"],
        ready_check=False,
    )  # fmt: skip
    # An app that listens on one of its two ports.
    half = create_service(api_client, acme_token, project, "Half Open", "web", ports=[8080, 9090])
    applied(api_client, acme_token, project, half)
    dataplane.deploy(namespace, "half-open", ports=[8080])

    idle_test = run_test(api_client, acme_token, project, idle["id"])
    assert idle_test["status"] == "failed"
    assert idle_test["findings"][0]["ok"], "the name resolves"
    (idle_problem,) = problems(idle_test)
    assert "Port 9000: no answer, because no pod of idle-worker is ready" in idle_problem
    assert "has no running workload yet" in idle_problem

    local_test = run_test(api_client, acme_token, project, local["id"])
    (local_problem,) = problems(local_test)
    assert "Port 8080: refused by local-only's pods" in local_problem
    assert "not on 127.0.0.1 or localhost only" in local_problem

    half_test = run_test(api_client, acme_token, project, half["id"])
    assert [(r["port"], r["outcome"]) for r in half_test["results"]] == [
        (8080, "connected"),
        (9090, "refused"),
    ]
    (half_problem,) = problems(half_test)
    assert half_problem.startswith("Port 9090: refused by half-open's pods")
    # What the test says is what a pod of the project meets.
    assert not dataplane.ask(namespace, "client", "connect", "half-open.internal:9090").ok
    assert not dataplane.ask(namespace, "client", "connect", "local-only.internal:8080").ok


def test_the_cli_tests_a_service_and_exits_by_the_outcome(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    world: World,
    api_client: Call,
    acme_token: str,
    live_server: Any,
    tmp_path: Path,
) -> None:
    project = storefront["project"]
    idle = create_service(api_client, acme_token, project, "Idle Worker", "private", ports=[9000])
    applied(api_client, acme_token, project, idle)

    def stackblaze(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STACKBLAZE), "--project", project.uid, *args],
            env={
                **os.environ,
                "XDG_CONFIG_HOME": str(tmp_path),
                "STACKBLAZE_URL": live_server.url,
                "STACKBLAZE_TOKEN": acme_token,
                "COLUMNS": "200",
            },
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    passed = stackblaze("services", "test", "api")
    assert passed.returncode == 0, passed.stderr
    assert "Connected: api.internal" in passed.stdout
    assert "✓ Port 8080: connected in" in passed.stdout
    failed = stackblaze("services", "test", "idle-worker")
    assert failed.returncode == 1, failed.stderr
    assert "Failed: idle-worker.internal" in failed.stdout
    assert "✗ Port 9000: no answer, because no pod of idle-worker is ready" in failed.stdout


def test_the_page_runs_a_test_and_shows_the_result_without_a_reload(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    world: World,
    api_client: Call,
    acme_token: str,
    browser_sign_in: SignIn,
    screenshot: Screenshot,
) -> None:
    project = storefront["project"]
    page = browser_sign_in("member")
    page.goto(reverse("service-detail", args=[project.uid, world.api.pk]))
    panel = page.locator("#connection-test")
    panel.get_by_role("button", name="Test connection").click()
    expect(panel.get_by_text("Connected", exact=True)).to_be_visible(timeout=60_000)
    expect(panel).to_contain_text(f"api.internal resolved to {storefront['api']['cluster_ip']}")
    expect(panel).to_contain_text("Port 8080: connected in")
    expect(panel.get_by_role("button", name="Test connection")).to_be_enabled()
    screenshot(page, "connection-test-passed")

    idle = create_service(api_client, acme_token, project, "Idle Worker", "private", ports=[9000])
    applied(api_client, acme_token, project, idle)
    page.goto(reverse("service-detail", args=[project.uid, idle["id"]]))
    panel.get_by_role("button", name="Test connection").click()
    expect(panel.get_by_text("Failed", exact=True)).to_be_visible(timeout=60_000)
    expect(panel).to_contain_text("no pod of idle-worker is ready")
    assert ConnectionTest.objects.filter(service_id=idle["id"], status="failed").count() == 1
    screenshot(page, "connection-test-failed")
