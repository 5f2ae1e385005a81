""" "Test connection" without a cluster: what it says, the page and API around it, and what it
does when there is no cluster to run in or no worker to run it (the data-plane tier runs it
for real: tests/dataplane/test_connection_test.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from networking import connection_tests
from networking.cluster.manifests import NO_CLUSTER
from networking.cluster.probe import ProbeSettings, ReadyEndpoints, pod_outcome, probe_pod
from networking.models import AuditEvent, ConnectionTest, Service
from tests.conftest import World, bearer


def a_test_of(world: World, **fields: Any) -> ConnectionTest:
    return ConnectionTest(
        service=world.api, hostname="api.internal", ports=[8080], expected_ip="10.96.0.12", **fields
    )


def report(*ports: tuple[int, str], addresses: tuple[str, ...] = ("10.96.0.12",)) -> dict[str, Any]:
    return {
        "host": "api.internal",
        "dns": {"addresses": list(addresses), "ms": 1.25, "not_found": not addresses},
        "ports": [{"port": port, "outcome": outcome, "ms": 0.5} for port, outcome in ports],
    }


READY = ReadyEndpoints(ready=2, not_ready=0)
NONE_READY = ReadyEndpoints(ready=0, not_ready=1)


def texts(findings: list[dict[str, Any]]) -> list[str]:
    return [f"{'ok' if f['ok'] else 'problem'}: {f['text']}" for f in findings]


def test_it_says_what_passed(world: World) -> None:
    found = connection_tests.diagnose(a_test_of(world), report((8080, "connected")), READY)
    assert texts(found) == [
        "ok: api.internal resolved to 10.96.0.12 in 1.2 ms.",
        "ok: Port 8080: connected in 0.5 ms.",
    ]


def test_no_ready_pod_is_the_cause_whatever_the_packet_met(world: World) -> None:
    for outcome in ("refused", "timeout", "unreachable"):
        found = connection_tests.diagnose(a_test_of(world), report((8080, outcome)), NONE_READY)
        assert found[1]["text"].startswith(
            "Port 8080: no answer, because no pod of api is ready (1 not ready yet)."
        ), outcome


def test_a_refusal_from_ready_pods_is_the_port_or_the_address_the_app_listens_on(
    world: World,
) -> None:
    found = connection_tests.diagnose(a_test_of(world), report((8080, "refused")), READY)
    assert not found[1]["ok"]
    assert "nothing accepts connections on that port" in found[1]["text"]
    assert "not on 127.0.0.1 or localhost only" in found[1]["text"]


def test_a_timeout_from_ready_pods_is_a_policy_or_a_busy_app(world: World) -> None:
    found = connection_tests.diagnose(a_test_of(world), report((8080, "timeout")), READY)
    assert "network policy that does not admit the caller" in found[1]["text"]


def test_a_name_that_does_not_resolve_skips_the_ports(world: World) -> None:
    found = connection_tests.diagnose(
        a_test_of(world), report((8080, "skipped"), addresses=()), NONE_READY
    )
    assert texts(found) == [
        "problem: api.internal does not resolve in this project. If the service is new, wait "
        "until the project is in sync and test again; if it is, the cluster's DNS lacks the "
        ".internal rule: contact support.",
        "problem: Port 8080: not tried, since api.internal did not resolve.",
    ]


def test_an_address_other_than_the_dashboards_is_a_problem(world: World) -> None:
    found = connection_tests.diagnose(
        a_test_of(world), report((8080, "connected"), addresses=("10.96.9.9",)), READY
    )
    assert not found[0]["ok"]
    assert "not to the ClusterIP the dashboard shows (10.96.0.12)" in found[0]["text"]


def test_the_probe_pod_is_unprivileged_and_mounts_nothing() -> None:
    pod = probe_pod(
        namespace="prj-abc",
        project_uid="abc",
        test_id=7,
        hostname="api.internal",
        ports=[8080, 9090],
        settings=ProbeSettings("stackblaze-probe:1"),
    )
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["args"] == [
        "-host", "api.internal", "-timeout", "5s", "-port", "8080", "-port", "9090",
    ]  # fmt: skip
    assert spec["automountServiceAccountToken"] is False
    assert "volumes" not in spec and "env" not in container
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_report_is_read_from_the_termination_message() -> None:
    pod = {
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": 0, "message": '{"host":"a"}'}}}
            ],
        }
    }
    assert pod_outcome(pod).finished and pod_outcome(pod).message == '{"host":"a"}'
    waiting = {
        "status": {"containerStatuses": [{"state": {"waiting": {"reason": "ErrImagePull"}}}]}
    }
    assert pod_outcome(waiting).waiting_reason == "ErrImagePull"


# -- Starting one --------------------------------------------------------------------------


@pytest.fixture
def eager(settings: Any) -> Iterator[None]:
    from dashboard.celery import app

    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def test_without_a_cluster_it_says_so_and_what_to_do(
    transactional_db: None, world: World, eager: None, settings: Any
) -> None:
    settings.CLUSTER_BACKEND = "manifests"
    client = world.client_for("member")
    url = reverse("service-connection-test", args=[world.project.uid, world.api.pk])
    response = client.post(url, headers={"HX-Request": "true"})
    assert response.status_code == 200
    test = ConnectionTest.objects.get(service=world.api)
    assert test.status == ConnectionTest.Status.ERROR
    assert test.error == NO_CLUSTER
    page = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "Could not run" in page and "CLUSTER_BACKEND=kubernetes" in page
    assert 'hx-trigger="every 1s"' not in page  # finished: the panel stops polling


def test_a_second_click_while_one_runs_gets_that_one(world: World) -> None:
    client = world.client_for("member")
    url = reverse("service-connection-test", args=[world.project.uid, world.api.pk])
    first = client.post(url, headers={"HX-Request": "true"}).content.decode()
    assert "Queued" in first and 'hx-trigger="every 1s"' in first
    second = client.post(url, headers={"HX-Request": "true"}).content.decode()
    assert "already running" in second
    assert ConnectionTest.objects.filter(service=world.api).count() == 1
    assert AuditEvent.objects.filter(action=AuditEvent.Action.CONNECTION_TESTED).count() == 1


def test_with_the_broker_down_the_test_says_so_instead_of_waiting_forever(
    transactional_db: None,
    world: World,
    broker_down: None,
) -> None:
    client = world.client_for("member")
    url = reverse("service-connection-test", args=[world.project.uid, world.api.pk])
    page = client.post(url, headers={"HX-Request": "true"}).content.decode()
    test = ConnectionTest.objects.get(service=world.api)
    assert test.status == ConnectionTest.Status.ERROR
    assert "The workers could not be reached" in page
    # The service is free for a new test once the queue is back.
    assert not ConnectionTest.objects.filter(
        service=world.api, status__in=ConnectionTest.UNFINISHED
    ).exists()


def test_viewers_see_results_but_cannot_start_one(world: World) -> None:
    ConnectionTest.objects.create(
        service=world.api,
        hostname="api.internal",
        ports=[8080],
        status=ConnectionTest.Status.PASSED,
        findings=[{"ok": True, "text": "Port 8080: connected in 0.4 ms."}],
    )
    viewer = world.client_for("viewer")
    page = viewer.get(reverse("service-detail", args=[world.project.uid, world.api.pk]))
    body = page.content.decode()
    assert "Port 8080: connected in 0.4 ms." in body
    assert ">Test connection</button>" not in body
    url = reverse("service-connection-test", args=[world.project.uid, world.api.pk])
    assert viewer.post(url).status_code == 403


def test_the_api_starts_and_reads_a_test(world: World, api_tokens: dict[str, str | None]) -> None:
    client = Client()
    base = f"/api/v1/projects/{world.project.uid}/services/{world.api.pk}/connection-tests"
    started = client.post(base, headers=bearer(api_tokens["member"]))
    assert started.status_code == 202
    body = started.json()
    assert body["status"] == "queued" and body["hostname"] == "api.internal"
    assert body["ports"] == [8080] and body["findings"] == []
    read = client.get(f"{base}/{body['id']}", headers=bearer(api_tokens["viewer"]))
    assert read.status_code == 200 and read.json()["id"] == body["id"]
    other = Service.objects.get(pk=world.postgres.pk)
    wrong_service = f"/api/v1/projects/{world.project.uid}/services/{other.pk}/connection-tests"
    assert (
        client.get(
            f"{wrong_service}/{body['id']}", headers=bearer(api_tokens["viewer"])
        ).status_code
        == 404
    )


def test_the_documented_statuses_are_the_models() -> None:
    from typing import get_args

    from api.schemas import ConnectionTestStatus

    assert set(get_args(ConnectionTestStatus)) == set(ConnectionTest.Status.values)


def test_a_test_whose_worker_died_is_given_up_and_a_new_one_starts(world: World) -> None:
    from datetime import timedelta

    from django.utils import timezone

    stuck = ConnectionTest.objects.create(
        service=world.api,
        hostname="api.internal",
        ports=[8080],
        status=ConnectionTest.Status.RUNNING,
        created_at=timezone.now() - timedelta(minutes=10),
    )
    member = world.users["member"]
    test, created = ConnectionTest.start(world.api, actor=member)
    assert created and test.pk != stuck.pk
    stuck.refresh_from_db()
    assert stuck.status == ConnectionTest.Status.ERROR
    assert "stopped without an answer" in stuck.error


def test_the_probe_retries_a_refusal_once_per_probe_not_per_port() -> None:
    """The probe's own tests (``deploy/probe/main_test.go``): a refusal that clears while it
    retries is "connected"; closed ports share one retry deadline. Go builds the probe for the
    test cluster already, so it is here wherever the suite runs."""
    go = shutil.which("go")
    assert go is not None, "no Go toolchain on PATH (the test cluster's build needs it too)"
    probe_module = Path(__file__).resolve().parents[2] / "deploy" / "probe"
    run = subprocess.run(
        [go, "test", "-count=1", "./..."],
        cwd=probe_module,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CGO_ENABLED": "0"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
