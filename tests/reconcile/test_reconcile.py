"""The reconcile loop and the sync status, on the embedded manifests backend."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from networking import passes as reconciler
from networking.cluster import kube, lease
from networking.cluster import reconcile as loop
from networking.cluster.backends import ApplyResult
from networking.cluster.desired import DesiredState
from networking.cluster.manifests import ManifestsBackend
from networking.models import ApplyAttempt, AuditEvent, Project, Service
from networking.tasks import backoff_seconds, reconcile_project, requeue_abandoned_reconciles
from tests.conftest import World, make_service
from tests.waiting import wait_until


def fresh(project: Project) -> Project:
    return Project.objects.get(pk=project.pk)


def test_a_reconcile_writes_the_project_and_marks_it_in_sync(world: World, manifests: Path) -> None:
    assert fresh(world.project).sync_state == Project.SyncState.QUEUED
    outcome = reconciler.reconcile(world.project.pk)
    assert outcome.status == "applied"
    assert (manifests / world.project.namespace / "02-service-api.yaml").exists()
    project = fresh(world.project)
    assert project.sync_state == Project.SyncState.IN_SYNC
    assert project.applied_generation == project.generation
    attempt = ApplyAttempt.objects.get(project=project)
    assert attempt.result == ApplyAttempt.Result.APPLIED
    assert "created Service postgres" in attempt.changes


def test_a_second_reconcile_changes_nothing_and_restores_a_deleted_manifest(
    world: World, manifests: Path
) -> None:
    reconciler.reconcile(world.project.pk)
    verified = fresh(world.project).verified_at
    outcome = reconciler.reconcile(world.project.pk)
    assert (outcome.status, outcome.changes) == ("in_sync", [])
    assert ApplyAttempt.objects.filter(project=world.project).count() == 1
    verified_again = fresh(world.project).verified_at
    assert verified is not None and verified_again is not None and verified_again > verified
    # Nothing watches a folder: every pass compares the files (cheap), trusting no record.
    hand_deleted = manifests / world.project.namespace / "02-service-api.yaml"
    hand_deleted.unlink()
    assert reconciler.reconcile(world.project.pk).changes == ["created Service api"]
    assert hand_deleted.exists()


def test_deleting_a_service_prunes_its_manifest(world: World, manifests: Path) -> None:
    reconciler.reconcile(world.project.pk)
    world.api.delete()
    Project.objects.filter(pk=world.project.pk).update(generation=world.project.generation + 5)
    outcome = reconciler.reconcile(world.project.pk)
    assert "deleted Service api" in outcome.changes
    assert not (manifests / world.project.namespace / "02-service-api.yaml").exists()


def test_a_deleted_service_is_noted_on_its_project_whatever_deletes_it(
    world: World, manifests: Path
) -> None:
    """The next change's pass reads every row again (``lease.claim``): a trigger notes the
    deletion, so a script's SQL, or a process of the previous release, is seen as well."""
    generation = fresh(world.project).generation
    world.postgres.delete()
    assert fresh(world.project).services_removed_generation == generation + 1
    Project.objects.filter(pk=world.project.pk).update(generation=generation + 3)
    script = make_service(world.project, "cron", Service.Kind.PRIVATE, [3000])
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {Service._meta.db_table} WHERE id = %s", [script.pk])
    assert fresh(world.project).services_removed_generation == generation + 4
    other = fresh(world.other_project)
    assert other.services_removed_generation == 0  # another project's is its own


def test_a_worker_refused_the_lease_keeps_what_it_knows(world: World, manifests: Path) -> None:
    """A pass turned away because another worker holds the project keeps its memory of the
    project: its next change's pass still starts from it."""
    reconciler.reconcile(world.project.pk)
    known = loop._memory[world.project.pk]
    claimed = lease.claim(world.project.pk)
    assert claimed is not None
    assert reconciler.reconcile(world.project.pk).status == "busy"
    assert loop._memory[world.project.pk] is known
    lease.release(world.project.pk, claimed.token)


def test_the_task_takes_only_an_id(world: World, manifests: Path) -> None:
    assert reconcile_project.apply(args=(world.project.pk,)).get() == "applied"
    assert reconcile_project.apply(args=(world.project.pk,)).get() == "in_sync"


def test_a_missing_project_is_not_an_error(db: Any, manifests: Path) -> None:
    assert reconcile_project.apply(args=(987654,)).get() == "missing"


class TestLease:
    def test_two_reconciles_of_one_project_never_overlap(self, world: World) -> None:
        claimed = lease.claim(world.project.pk)
        assert claimed is not None
        assert lease.claim(world.project.pk) is None
        assert reconciler.reconcile(world.project.pk).status == "busy"
        lease.release(world.project.pk, claimed.token)
        assert lease.claim(world.project.pk) is not None

    def test_a_dead_workers_lease_lapses(self, world: World) -> None:
        assert lease.claim(world.project.pk) is not None
        Project.objects.filter(pk=world.project.pk).update(
            reconcile_lease_until=timezone.now() - timedelta(seconds=1)
        )
        assert lease.claim(world.project.pk) is not None

    def test_it_shows_applying_while_a_worker_holds_it(self, world: World) -> None:
        lease.claim(world.project.pk)
        assert fresh(world.project).sync_state == Project.SyncState.APPLYING

    def test_a_dead_workers_project_stops_showing_applying_once_its_lease_lapses(
        self, owner_client: Client, world: World
    ) -> None:
        url = reverse("project-live", args=[world.project.uid])
        lease.claim(world.project.pk)
        assert "Applying" in owner_client.get(url).content.decode()
        Project.objects.filter(pk=world.project.pk).update(
            reconcile_lease_until=timezone.now() - timedelta(seconds=1)
        )
        html = owner_client.get(url).content.decode()
        assert "Applying" not in html
        assert "Queued" in html

    @pytest.mark.django_db(transaction=True)  # the heartbeat thread has its own connection
    def test_a_pass_longer_than_the_lease_keeps_it(
        self, world: World, manifests: Path, settings: Any
    ) -> None:
        settings.RECONCILE_LEASE_SECONDS = 2
        claims_by_another_worker: list[lease.Claim | None] = []

        class OutlastsItsLease(ManifestsBackend):
            def apply(self, desired: DesiredState) -> ApplyResult:
                first_lease = fresh(world.project).reconcile_lease_until
                assert first_lease is not None
                # Work on until the lease taken at the start would have lapsed a second ago.
                wait_until(
                    lambda: timezone.now() > first_lease + timedelta(seconds=1),
                    "the first lease to lapse",
                )
                claims_by_another_worker.append(lease.claim(world.project.pk))
                assert fresh(world.project).sync_state == Project.SyncState.APPLYING
                return super().apply(desired)

        outcome = reconciler.reconcile(world.project.pk, OutlastsItsLease(manifests))
        assert outcome.status == "applied"
        assert claims_by_another_worker == [None]
        project = fresh(world.project)
        assert (project.reconcile_lease_until, project.reconcile_lease_token) == (None, "")
        assert project.sync_state == Project.SyncState.IN_SYNC

    @pytest.mark.django_db(transaction=True)
    def test_a_pass_whose_lease_was_taken_over_leaves_the_new_holder_alone(
        self, world: World, manifests: Path, settings: Any
    ) -> None:
        settings.RECONCILE_LEASE_SECONDS = 1
        theirs = timezone.now() + timedelta(minutes=5)

        class TakenOver(ManifestsBackend):
            def apply(self, desired: DesiredState) -> ApplyResult:
                # Our renewals stalled past the lease and another worker claimed the project.
                Project.objects.filter(pk=world.project.pk).update(
                    reconcile_lease_until=theirs, reconcile_lease_token="the-other-worker"
                )
                taken_at = timezone.now()
                wait_until(
                    lambda: timezone.now() > taken_at + timedelta(seconds=1.5), "the lease to lapse"
                )
                return super().apply(desired)

        reconciler.reconcile(world.project.pk, TakenOver(manifests))
        project = fresh(world.project)
        assert project.reconcile_lease_token == "the-other-worker"
        assert project.reconcile_lease_until == theirs

    def test_a_pass_starts_no_thread(
        self, world: World, manifests: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One thread per process renews every lease it holds: a pass (on the path to "In
        sync") neither starts nor joins one."""
        reconciler.reconcile(world.project.pk)  # the process's renewer starts, once
        started: list[str] = []
        start = threading.Thread.start

        def counted(thread: threading.Thread) -> None:
            started.append(thread.name)
            start(thread)

        monkeypatch.setattr(threading.Thread, "start", counted)
        world.api.ports = [9090]
        world.api.save_changes(actor=None)
        assert reconciler.reconcile(world.project.pk).status == "applied"
        assert started == []

    @pytest.mark.django_db(transaction=True)  # the renewer has its own connection
    def test_two_leases_held_at_once_are_both_renewed(self, world: World, settings: Any) -> None:
        settings.RECONCILE_LEASE_SECONDS = 3
        other = Project.objects.create(organization=world.project.organization, name="Other")
        first, second = lease.claim(world.project.pk), lease.claim(other.pk)
        assert first is not None and second is not None
        taken = {}
        for project in (world.project, other):
            until = fresh(project).reconcile_lease_until
            assert until is not None
            taken[project.pk] = until
        with lease.renewed(world.project.pk, first.token), lease.renewed(other.pk, second.token):
            wait_until(
                lambda: all(
                    (until := fresh(p).reconcile_lease_until) is not None and until > taken[p.pk]
                    for p in (world.project, other)
                ),
                "both leases to be renewed",
            )
            assert lease.claim(world.project.pk) is None
            assert lease.claim(other.pk) is None
        assert fresh(world.project).reconcile_lease_until is None
        assert fresh(other).reconcile_lease_until is None

    @pytest.mark.django_db(transaction=True)
    def test_the_release_waits_for_a_renewal_under_way(
        self, world: World, settings: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A renewal landing after the release would hold the project for a lease time with
        nobody applying it."""
        settings.RECONCILE_LEASE_SECONDS = 0.3
        renewing, finish = threading.Event(), threading.Event()
        renew = lease.renew

        def slow(project_id: int, token: str) -> bool:
            renewing.set()
            finish.wait(10)
            return renew(project_id, token)

        monkeypatch.setattr(lease, "renew", slow)
        claimed = lease.claim(world.project.pk)
        assert claimed is not None
        released = threading.Event()

        def hold_then_release() -> None:
            try:
                with lease.renewed(world.project.pk, claimed.token):
                    assert renewing.wait(10)
                released.set()
            finally:
                connection.close()  # this thread's own

        holder = threading.Thread(target=hold_then_release)
        holder.start()
        try:
            assert renewing.wait(10)
            assert not released.wait(0.5)  # the release waits for the renewal under way
        finally:
            finish.set()
            holder.join(10)
        assert released.is_set()
        project = fresh(world.project)
        assert (project.reconcile_lease_until, project.reconcile_lease_token) == (None, "")


class TestAbandonedLeases:
    """Beat hands the project of a worker that died mid-pass to a live worker."""

    def abandon(self, project: Project) -> None:
        """A worker claimed the project, then was killed: its lease lapses unreleased."""
        assert lease.claim(project.pk) is not None
        Project.objects.filter(pk=project.pk).update(
            reconcile_lease_until=timezone.now() - timedelta(seconds=1)
        )

    def test_beat_reconciles_a_project_whose_worker_died(
        self, world: World, manifests: Path, eager_tasks: None
    ) -> None:
        self.abandon(world.project)
        assert requeue_abandoned_reconciles.delay().get() == 1
        project = fresh(world.project)
        assert project.sync_state == Project.SyncState.IN_SYNC
        assert project.reconcile_lease_token == ""
        assert requeue_abandoned_reconciles.delay().get() == 0

    def test_it_leaves_a_living_workers_project_alone(
        self, world: World, manifests: Path, eager_tasks: None
    ) -> None:
        claimed = lease.claim(world.project.pk)
        assert claimed is not None
        assert requeue_abandoned_reconciles.delay().get() == 0
        project = fresh(world.project)
        assert project.reconcile_lease_token == claimed.token
        assert project.sync_state == Project.SyncState.APPLYING

    def test_a_lease_is_cleared_only_if_still_abandoned(self, world: World) -> None:
        self.abandon(world.project)
        self.abandon(world.other_project)
        abandoned = dict(lease.abandoned_leases())
        assert set(abandoned) == {world.project.pk, world.other_project.pk}
        # Meanwhile a live worker claimed the other project: it keeps its lease.
        claimed = lease.claim(world.other_project.pk)
        assert claimed is not None
        for project_id, abandoned_token in abandoned.items():
            lease.clear_abandoned_lease(project_id, abandoned_token)
        assert lease.abandoned_leases() == []
        assert fresh(world.project).sync_state == Project.SyncState.QUEUED
        assert fresh(world.other_project).reconcile_lease_token == claimed.token


class TestManifestsTemporaryFiles:
    def test_a_killed_writers_temporary_file_is_removed_and_never_an_object(
        self, world: World, manifests: Path
    ) -> None:
        reconciler.reconcile(world.project.pk)
        folder = manifests / world.project.namespace
        objects = sorted(path.name for path in folder.iterdir())
        # Left by a writer killed between writing and renaming; it may hold a Secret.
        abandoned = folder / ".02-service-api.yaml.k1ll3d.tmp"
        abandoned.write_text("apiVersion: v1\nkind: Service\n")
        an_hour_ago = time.time() - 3600
        os.utime(abandoned, (an_hour_ago, an_hour_ago))
        # Being written right now by a pass that outlived its lease: not ours to take.
        in_progress = folder / ".02-service-api.yaml.wr1t3.tmp"
        in_progress.write_text("apiVersion: v1\n")

        outcome = reconciler.reconcile(world.project.pk)
        assert (outcome.status, outcome.changes) == ("in_sync", [])
        assert not abandoned.exists()
        assert in_progress.exists()
        assert sorted(path.name for path in folder.iterdir()) == sorted(
            [*objects, in_progress.name]
        )


class ChangesDuringApply(ManifestsBackend):
    """A manifests backend during whose first pass a user commits another change."""

    def __init__(self, directory: Path, change: Callable[[], None]) -> None:
        super().__init__(directory)
        self.change: Callable[[], None] | None = change
        self.passes = 0

    def apply(self, desired: DesiredState) -> ApplyResult:
        self.passes += 1
        result = super().apply(desired)
        if self.change is not None:
            self.change()
            self.change = None
        return result


def test_a_change_made_during_a_pass_gets_its_own_pass(world: World, manifests: Path) -> None:
    def add_worker() -> None:
        with transaction.atomic():
            worker = make_service(world.project, "worker", Service.Kind.PRIVATE, [3000])
            world.project.record_change(
                actor=None,
                action=AuditEvent.Action.SERVICE_CREATED,
                target="worker",
                service=worker,
            )

    backend = ChangesDuringApply(manifests, add_worker)
    reconciler.reconcile(world.project.pk, backend)
    assert backend.passes == 2
    assert (manifests / world.project.namespace / "02-service-worker.yaml").exists()
    assert fresh(world.project).sync_state == Project.SyncState.IN_SYNC


def test_a_permanent_error_fails_at_once_with_its_reason(
    world: World, manifests: Path, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = manifests / "not-a-folder"
    blocker.write_text("")
    settings.MANIFESTS_DIR = blocker  # the backend cannot create the namespace folder in it
    with caplog.at_level(logging.WARNING, logger="networking.cluster.reconcile"):
        assert reconcile_project.apply(args=(world.project.pk,)).get() == "failed"
    project = fresh(world.project)
    assert project.sync_state == Project.SyncState.FAILED
    assert project.sync_error == (
        "Could not write manifests for this project (not a directory); the worker's log says where."
    )
    assert ApplyAttempt.objects.get(project=project).result == ApplyAttempt.Result.FAILED
    # The folder is the server's business: its log says it, the page does not.
    assert str(blocker) not in project.sync_error
    assert str(blocker) in caplog.text


class _FailingAPIServer(BaseHTTPRequestHandler):
    """A Kubernetes API server that fails every request, its Status message full of insides
    (a webhook's traceback, as a Python admission webhook behind the API server answers)."""

    MESSAGE = (
        'Internal error occurred: failed calling webhook "policy.example": Traceback (most '
        'recent call last):\n  File "/srv/webhook/app.py", line 12, in admit\nKeyError: '
        "'spec' (config /etc/webhook/kubeconfig)"
    )

    def _fail(self) -> None:
        body = json.dumps(
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,
             "message": self.MESSAGE}
        ).encode()  # fmt: skip
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _fail

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def kubeconfig_for(settings: Any, tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Point the Kubernetes backend at ``server`` through a kubeconfig in this test's folder."""

    def point_at(server: str) -> Path:
        path = tmp_path / "secret-place" / "kubeconfig"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": server}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        settings.KUBECONFIG = str(path)
        return path

    settings.CLUSTER_BACKEND = "kubernetes"
    settings.KUBE_CONTEXT = ""
    settings.KUBE_REQUEST_TIMEOUT = 2
    settings.RECONCILE_MAX_RETRIES = 0  # the reason a customer is left with, at once
    kube._api_client.cache_clear()
    yield point_at
    kube._api_client.cache_clear()


@pytest.mark.parametrize("cluster", ["answers 500", "unreachable", "no credentials"])
def test_a_failed_sync_says_why_in_words_without_the_servers_insides(
    world: World, kubeconfig_for: Callable[[str], Path], caplog: pytest.LogCaptureFixture,
    settings: Any, cluster: str,
) -> None:  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailingAPIServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        if cluster == "answers 500":
            kubeconfig = kubeconfig_for(f"http://127.0.0.1:{server.server_address[1]}")
        elif cluster == "unreachable":
            kubeconfig = kubeconfig_for(f"http://127.0.0.1:{closed.getsockname()[1]}")
        else:
            kubeconfig = kubeconfig_for("http://127.0.0.1:1")
            kubeconfig.unlink()
        with caplog.at_level(logging.WARNING):
            assert reconcile_project.apply(args=(world.project.pk,)).get() == "failed"
    finally:
        server.shutdown()
        server.server_close()
        closed.close()
    project = fresh(world.project)
    assert project.sync_state == Project.SyncState.FAILED
    reason = project.sync_error
    expected = {
        "answers 500": "The cluster's API server failed during ",
        "unreachable": "Could not reach the cluster's API server during ",
        "no credentials": "The worker has no usable cluster credentials.",
    }[cluster]
    assert reason.startswith(expected), reason
    for insides in ("/", "Traceback", ".py", "kubeconfig", "127.0.0.1"):
        assert insides not in reason, (insides, reason)
    assert not re.search(r"[a-z]Error\b", reason), reason  # no MaxRetryError, KeyError...
    assert ApplyAttempt.objects.get(project=project).error == reason
    # The operator still finds the cause in the log: the server's own words, or the address.
    if cluster == "answers 500":
        assert "/srv/webhook/app.py" in caplog.text
    elif cluster == "unreachable":
        assert "Connection refused" in caplog.text or "ConnectionRefused" in caplog.text
    else:
        assert "Invalid kube-config file" in caplog.text or str(kubeconfig) in caplog.text


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling(settings: Any) -> None:
    settings.RECONCILE_RETRY_BASE_SECONDS = 2
    settings.RECONCILE_RETRY_MAX_SECONDS = 60
    for retries, ceiling in [(0, 2), (1, 4), (3, 16), (10, 60)]:
        delays = {backoff_seconds(retries) for _ in range(50)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(delays) > 1


class TestEnqueue:
    def test_a_change_enqueues_a_reconcile_on_commit(
        self, owner_client: Client, world: World, django_capture_on_commit_callbacks: Any
    ) -> None:
        with django_capture_on_commit_callbacks() as callbacks:
            owner_client.post(
                reverse("service-create", args=[world.project.uid]),
                {"display_name": "jobs", "kind": "private", "ports": "3000"},
            )
        # One message sent (the live pages' cache mark is no message).
        assert len([c for c in callbacks if c.__module__ != "networking.live"]) == 1

    def test_a_rolled_back_change_enqueues_nothing(
        self, world: World, django_capture_on_commit_callbacks: Any
    ) -> None:
        def failing_change() -> None:
            with transaction.atomic():
                world.project.record_change(
                    actor=None, action=AuditEvent.Action.SERVICE_CREATED, target="x"
                )
                raise RuntimeError("the view failed after writing")

        with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError):
            failing_change()
        assert callbacks == []


class TestSyncStatus:
    """The badge in every project page's header, brought by the page's poll (test_live.py)."""

    def status(self, client: Client, world: World) -> Any:
        # No revision given: whatever the project's is, the answer brings the badge.
        url = reverse("project-live", args=[world.project.uid])
        return client.get(url, HTTP_HX_REQUEST="true")

    def test_it_says_queued_until_a_worker_takes_it(
        self, owner_client: Client, world: World
    ) -> None:
        html = self.status(owner_client, world).content.decode()
        assert "Queued" in html
        assert "waiting for a worker" in html

    def test_it_says_in_sync_once_applied_and_tells_the_page(
        self, owner_client: Client, world: World, manifests: Path
    ) -> None:
        reconciler.reconcile(world.project.pk)
        response = self.status(owner_client, world)
        html = response.content.decode()
        assert "In sync" in html
        assert "project-changed" in json.loads(response["HX-Trigger"])

    def test_a_failure_shows_its_reason_and_a_retry_button(
        self, owner_client: Client, viewer_client: Client, world: World, manifests: Path
    ) -> None:
        Project.objects.filter(pk=world.project.pk).update(
            sync_error="The cluster did not allow applying Service api (403 Forbidden).",
            sync_error_generation=world.project.generation,
        )
        html = self.status(owner_client, world).content.decode()
        assert "Failed" in html
        assert "403 Forbidden" in html
        assert ">Retry<" in html
        assert ">Retry<" not in self.status(viewer_client, world).content.decode()

        response = owner_client.post(
            reverse("project-sync-retry", args=[world.project.uid]), HTTP_HX_REQUEST="true"
        )
        assert "Retrying" in response.content.decode()
        assert fresh(world.project).sync_state == Project.SyncState.RETRYING

    def test_the_history_lists_what_each_attempt_changed(
        self, owner_client: Client, world: World, manifests: Path
    ) -> None:
        reconciler.reconcile(world.project.pk)
        html = owner_client.get(reverse("project-sync", args=[world.project.uid])).content.decode()
        assert "created Service api" in html
        assert "Applied" in html

    def test_the_overview_table_refreshes_itself_on_sync(
        self, owner_client: Client, world: World, manifests: Path
    ) -> None:
        url = reverse("project-overview", args=[world.project.uid])
        html = owner_client.get(url).content.decode()
        assert 'hx-trigger="project-changed from:body"' in html
        partial = owner_client.get(url, HTTP_HX_REQUEST="true").content.decode()
        assert partial.lstrip().startswith('<div class="services-list" id="services-table"')
