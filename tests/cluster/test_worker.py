"""A real Celery worker process, a real broker and the real API server, end to end."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from networking import rotation
from networking.cluster.desired import SECRETS_ANNOTATION
from networking.models import Project, Service, SharedSecret
from tests.cluster.workloads import deploy, deployment, secret_data
from tests.cluster_fixtures import Cluster
from tests.conftest import World, make_service
from tests.waiting import wait_until
from tests.worker import BeatProcess, WorkerProcess


def in_sync(project: Project) -> bool:
    return Project.objects.get(pk=project.pk).sync_state == Project.SyncState.IN_SYNC


def test_a_change_in_the_ui_reaches_the_cluster_through_a_worker(
    cluster: Cluster, world: World, start_worker: Callable[[], WorkerProcess]
) -> None:
    start_worker()
    client = world.client_for("owner")
    client.post(
        reverse("service-create", args=[world.project.uid]),
        {"display_name": "Background Worker", "kind": "private", "ports": "3000"},
    )
    wait_until(lambda: in_sync(world.project), "in sync", 30)
    services = cluster.services(world.project.namespace)
    assert set(services) == {"api", "postgres", "background-worker"}
    service = Service.objects.get(project=world.project, name="background-worker")
    assert service.cluster_ip == services["background-worker"].spec.cluster_ip
    assert service.cluster_ip is not None
    page = client.get(reverse("service-detail", args=[world.project.uid, service.pk]))
    assert service.cluster_ip in page.content.decode()
    # The page's poll, asking from before the change, brings the badge and has the page
    # refresh its parts (the ClusterIP).
    status = client.get(
        reverse("project-live", args=[world.project.uid]),
        {"since": "0"},
        HTTP_HX_REQUEST="true",
    )
    badge = status.content.decode()
    assert "In sync" in badge
    assert "project-changed" in json.loads(status["HX-Trigger"])


def test_a_worker_killed_mid_reconcile_converges_after_restart(
    cluster: Cluster, world: World, start_worker: Callable[[], WorkerProcess]
) -> None:
    if not settings.REDIS_URL:
        pytest.skip(
            "re-delivery of unacknowledged tasks needs the Redis broker (CI sets REDIS_URL)"
        )
    for index in range(150):
        make_service(world.project, f"svc {index}", Service.Kind.PRIVATE, [3000])
    worker = start_worker()
    world.project.request_reconcile()  # no transaction here: enqueued at once
    namespace = world.project.namespace

    def some_but_not_all() -> bool:
        return cluster.namespace(namespace) is not None and len(cluster.services(namespace)) > 0

    wait_until(some_but_not_all, "the reconcile to start writing", 30)
    worker.kill()
    written = len(cluster.services(namespace))
    assert written < 152, "the worker finished before it was killed; nothing was tested"
    assert not in_sync(world.project)

    start_worker()
    wait_until(lambda: in_sync(world.project), "convergence after the restart", 60)
    assert len(cluster.services(namespace)) == 152
    assert Service.objects.filter(project=world.project, cluster_ip__isnull=True).count() == 0


def test_a_worker_killed_mid_pass_is_replaced_within_20_seconds_with_the_shipped_defaults(
    cluster: Cluster,
    world: World,
    start_worker: Callable[..., WorkerProcess],
    start_beat: Callable[[], BeatProcess],
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # Not the short lease and visibility timeout the other tests use: what production runs.
    worker_env.pop("RECONCILE_LEASE_SECONDS")
    worker_env.pop("CELERY_VISIBILITY_TIMEOUT")
    lease = timedelta(seconds=settings.RECONCILE_LEASE_SECONDS)
    client = world.client_for("member")
    status_url = reverse("project-live", args=[world.project.uid])

    # The first worker's API server accepts connections and never answers, so its pass hangs
    # in mid-apply (as behind a partitioned network) for as long as the worker lives.
    with socket.create_server(("127.0.0.1", 0)) as unanswering:
        kubeconfig = json.loads(cluster.api.kubeconfig_path.read_text())
        kubeconfig["clusters"][0]["cluster"]["server"] = (
            f"https://127.0.0.1:{unanswering.getsockname()[1]}"
        )
        hanging_kubeconfig = tmp_path / "kubeconfig-unanswering"
        hanging_kubeconfig.write_text(json.dumps(kubeconfig))
        hanging = start_worker(KUBECONFIG=str(hanging_kubeconfig), KUBE_REQUEST_TIMEOUT="3600")
        world.project.request_reconcile()  # no transaction here: enqueued at once
        wait_until(lambda: "Applying" in client.get(status_url).content.decode(), "Applying", 30)
        holder = Project.objects.get(pk=world.project.pk)
        token, first_lease_until = holder.reconcile_lease_token, holder.reconcile_lease_until
        assert first_lease_until is not None

        # A second worker, and beat, as in production. A living worker's pass keeps its lease
        # however long it runs: past the lease it started with, and past beat's ticks.
        start_worker()
        start_beat()
        beat_looked = re.compile(r"requeue_abandoned_reconciles\[[-0-9a-f]+\] succeeded in .*: 0")
        wait_until(lambda: bool(beat_looked.search(hanging.log.read_text())), "beat's tick", 30)
        wait_until(lambda: timezone.now() > first_lease_until + timedelta(seconds=1), "lease", 30)
        holder = Project.objects.get(pk=world.project.pk)
        assert holder.reconcile_lease_token == token
        assert holder.sync_state == Project.SyncState.APPLYING
        assert cluster.namespace(world.project.namespace) is None, (
            "the first worker reached the API server"
        )

        hanging.kill()
        killed_at, killed_at_monotonic = timezone.now(), time.monotonic()

    # The dead worker's lease runs out within one lease time: from then on the badge does not
    # say "Applying" for it (it says "Queued", or "Applying" once the other worker took over).
    lapses_at = Project.objects.get(pk=world.project.pk).reconcile_lease_until
    assert lapses_at is not None
    assert lapses_at <= killed_at + lease
    wait_until(lambda: timezone.now() > lapses_at, "the lease to lapse", 30)
    badge = client.get(status_url).content.decode()
    taken_over = Project.objects.get(pk=world.project.pk).reconcile_lease_token != token
    assert "Applying" not in badge or taken_over, badge

    remaining = 20 - (time.monotonic() - killed_at_monotonic)
    wait_until(lambda: in_sync(world.project), "convergence 20 s after the kill", max(remaining, 0))
    assert set(cluster.services(world.project.namespace)) == {"api", "postgres"}


def test_the_dashboard_shows_failed_then_retry_heals(
    cluster: Cluster,
    world: World,
    start_worker: Callable[[], WorkerProcess],
    worker_env: dict[str, str],
) -> None:
    worker_env["KUBECONFIG"] = str(cluster.api.kubeconfig_for("worker"))  # no RBAC: 403
    worker = start_worker()
    world.project.request_reconcile()  # no transaction here: enqueued at once
    wait_until(
        lambda: Project.objects.get(pk=world.project.pk).sync_state == Project.SyncState.FAILED,
        "the failure to show",
        30,
    )
    client: Client = world.client_for("member")
    status = client.get(reverse("project-live", args=[world.project.uid]))
    assert "403 Forbidden" in status.content.decode()
    worker.stop()

    worker_env["KUBECONFIG"] = str(cluster.api.kubeconfig_path)
    start_worker()
    client.post(reverse("project-sync-retry", args=[world.project.uid]))
    wait_until(lambda: in_sync(world.project), "Retry to heal the project", 30)


def test_a_worker_killed_in_every_phase_of_a_rotation_finishes_it(
    cluster: Cluster,
    world: World,
    start_worker: Callable[[], WorkerProcess],
    start_beat: Callable[[], BeatProcess],
    worker_env: dict[str, str],
) -> None:
    if not settings.REDIS_URL:
        pytest.skip(
            "re-delivery of unacknowledged tasks needs the Redis broker (CI sets REDIS_URL)"
        )
    # Beat, as in production: a kill can land between the Redis transport popping a message
    # and recording it as unacknowledged (two steps), and then nothing redelivers it; the
    # resync is what finds a project left behind (every 10 s here, 5 minutes by default).
    worker_env.update(
        ROTATION_GRACE_SECONDS="2",
        ROTATION_POLL_SECONDS="1",
        RESYNC_SECONDS="10",
        RESYNC_VERIFY_PROJECTS="0",
    )
    background = make_service(world.project, "background-worker", Service.Kind.PRIVATE, [3000])
    world.secret.services.set([world.api, background])
    worker = start_worker()
    start_beat()
    world.project.request_reconcile()
    wait_until(lambda: in_sync(world.project), "the namespace", 30)
    for name in ("api", "background-worker"):
        deploy(cluster, world.project.namespace, name)
    world.project.request_reconcile()
    wait_until(
        lambda: all(
            s.workload.get("rolled_out")
            for s in Service.objects.filter(project=world.project)
            if s.name != "postgres"
        ),
        "the workloads to receive the secret",
        30,
    )
    old = secret_data(cluster, world.project.namespace)["INTERNAL_API_SECRET"]

    def reached(phase: str) -> Callable[[], bool]:
        return lambda: SharedSecret.objects.get(pk=world.secret.pk).rotation_phase == phase

    rotation.start_rotation(world.secret, actor=None)
    for phase in ("accept_new", "send_new", "grace", "retire_old"):
        wait_until(reached(phase), f"phase {phase}", 60)
        worker.kill()
        worker = start_worker()
    wait_until(
        lambda: not SharedSecret.objects.get(pk=world.secret.pk).rotating,
        "the rotation to finish",
        90,
    )
    wait_until(lambda: in_sync(world.project), "the last phase to be applied", 30)
    final = secret_data(cluster, world.project.namespace)
    assert set(final) == {"INTERNAL_API_SECRET"}
    assert final["INTERNAL_API_SECRET"] != old
    for name in ("api", "background-worker"):
        live = deployment(cluster, world.project.namespace, name)
        annotations = live["spec"]["template"]["metadata"]["annotations"]
        assert annotations[SECRETS_ANNOTATION] == "INTERNAL_API_SECRET=4"
        # Received once, then restarted exactly once per phase, kills notwithstanding.
        assert live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "5"


def test_a_burst_of_changes_is_spread_over_the_workers(
    cluster: Cluster, world: World, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """Many projects changing at once: each idle worker takes the next project's pass (one
    message at a time, acknowledged late), so the burst is shared, not queued behind one."""
    projects = [world.project]
    for index in range(11):
        project = Project.objects.create(organization=world.acme, name=f"burst {index}")
        make_service(project, "api", Service.Kind.PRIVATE, [3000])
        projects.append(project)
    workers = [WorkerProcess(worker_env, tmp_path / f"worker-{index}.log") for index in range(2)]
    try:
        for worker in workers:
            worker.start()
        with transaction.atomic():
            for project in projects:
                project.request_reconcile()
        wait_until(lambda: all(in_sync(project) for project in projects), "the burst applied", 120)

        succeeded = re.compile(r"reconcile_project\[[-0-9a-f]+\] succeeded")

        def passes() -> list[int]:
            return [len(succeeded.findall(worker.log.read_text())) for worker in workers]

        # A pass commits "in sync" before its worker logs that it succeeded: wait for the lines.
        wait_until(lambda: sum(passes()) >= len(projects), "every pass logged", 60)
        assert all(passes()), f"one worker took every pass: {passes()}"
    finally:
        for worker in workers:
            worker.stop()
