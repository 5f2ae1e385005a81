"""The reconcile loop against a real kube-apiserver, through the official client over HTTP."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from networking import passes as reconciler
from networking.cluster import lease, liveness
from networking.cluster.desired import MANAGED_BY, MANAGED_BY_LABEL, PROJECT_LABEL
from networking.models import AppliedRecord, ApplyAttempt, Project, Service
from networking.tasks import reconcile_project, resync_all_projects
from tests.cluster_fixtures import Cluster
from tests.conftest import World, make_service


def run_task(project_id: int) -> str:
    """Run the task as a worker would. Celery runs its retries in-process, without waiting."""
    return str(reconcile_project.apply(args=(project_id,)).get())


def fresh(project: Project) -> Project:
    return Project.objects.get(pk=project.pk)


def test_it_creates_the_namespace_services_and_policies(cluster: Cluster, world: World) -> None:
    assert run_task(world.project.pk) == "applied"
    namespace = world.project.namespace
    labels = cluster.namespace(namespace).metadata.labels
    assert labels[MANAGED_BY_LABEL] == MANAGED_BY
    assert labels[PROJECT_LABEL] == world.project.uid
    assert labels["kubernetes.io/metadata.name"] == namespace

    services = cluster.services(namespace)
    assert set(services) == {"api", "postgres"}
    assert services["postgres"].spec.ports[0].port == 5432
    assert services["api"].spec.selector == {"stackblaze.cloud/service": "api"}
    for service in Service.objects.filter(project=world.project):
        assert service.cluster_ip is not None
        assert service.cluster_ip == services[service.name].spec.cluster_ip
        assert service.cluster_ip.startswith("10.96.")

    policies = cluster.policies(namespace)
    assert set(policies) == {"project-isolation", "allow-ingress-controller"}
    isolation = policies["project-isolation"].spec
    assert isolation.pod_selector.match_labels is None
    assert isolation.ingress[0]._from[0].pod_selector is not None
    assert isolation.ingress[0]._from[0].namespace_selector is None

    project = fresh(world.project)
    assert project.sync_state == Project.SyncState.IN_SYNC


def test_a_second_reconcile_makes_no_call_and_a_re_read_no_write(
    cluster: Cluster, world: World, watched: liveness.Signal
) -> None:
    run_task(world.project.pk)
    cluster.http.reset()
    assert run_task(world.project.pk) == "in_sync"
    # It trusts its record of what it applied (the watcher distrusts the record as soon as
    # anything else changes in the namespace): not one call.
    assert cluster.http.calls == []

    AppliedRecord.distrust([world.project.pk])
    verified = fresh(world.project).verified_at
    assert run_task(world.project.pk) == "in_sync"
    assert cluster.http.writes == []
    # The namespace, the Secret by name, and one list per kind of object and workload,
    # whatever the number of services.
    assert len(cluster.http.reads) == 6
    assert fresh(world.project).verified_at != verified


def test_duplicate_delivery_makes_no_extra_writes(cluster: Cluster, world: World) -> None:
    make_service(world.project, "worker", Service.Kind.PRIVATE, [3000])
    Project.objects.filter(pk=world.project.pk).update(generation=world.project.generation + 1)
    run_task(world.project.pk)
    writes = len(cluster.http.writes)
    assert writes == 7  # namespace, the shared Secret, 3 Services, 2 NetworkPolicies
    run_task(world.project.pk)  # the same message delivered again
    assert len(cluster.http.writes) == writes


def test_a_rename_writes_only_what_changed(
    cluster: Cluster, world: World, owner_client: Client, watched: liveness.Signal
) -> None:
    run_task(world.project.pk)
    old_ip = Service.objects.get(pk=world.api.pk).cluster_ip
    owner_client.post(
        reverse("service-edit", args=[world.project.uid, world.api.pk]),
        # Keeping nothing of the old name (tests/cluster/test_aliases.py keeps it).
        {"display_name": "Public API", "ports": "8080", "keep_old_name_for": "0"},
    )
    cluster.http.reset()
    run_task(world.project.pk)
    namespace = world.project.namespace
    # It wrote what changed since its record, reading only the workloads: api receives a shared
    # secret, so what we own on workloads moved to the new name.
    assert sorted(call.path.rsplit("/", 1)[-1] for call in cluster.http.reads) == [
        "deployments",
        "statefulsets",
    ]
    written = sorted((call.method, call.path.rsplit("/", 2)[-2]) for call in cluster.http.writes)
    assert written == [
        ("DELETE", "services"),  # api
        ("PATCH", "networkpolicies"),  # the ingress policy now names public-api
        ("PATCH", "services"),  # public-api
    ]
    services = cluster.services(namespace)
    assert set(services) == {"public-api", "postgres"}
    renamed = Service.objects.get(pk=world.api.pk)
    assert renamed.cluster_ip == services["public-api"].spec.cluster_ip != old_ip


def test_deleting_a_service_removes_it_from_the_cluster(
    cluster: Cluster, world: World, owner_client: Client
) -> None:
    run_task(world.project.pk)
    owner_client.post(reverse("service-delete", args=[world.project.uid, world.postgres.pk]))
    run_task(world.project.pk)
    assert set(cluster.services(world.project.namespace)) == {"api"}


def test_the_full_re_read_restores_an_object_deleted_by_hand(
    cluster: Cluster,
    world: World,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    run_task(world.project.pk)
    namespace = world.project.namespace
    cluster.core.delete_namespaced_service("api", namespace)
    cluster.networking.delete_namespaced_network_policy("project-isolation", namespace)
    with django_capture_on_commit_callbacks(execute=True):
        assert resync_all_projects.delay().get() >= 1
    assert "api" in cluster.services(namespace)
    assert "project-isolation" in cluster.policies(namespace)
    # The recreated Service has a new ClusterIP, and the dashboard shows it.
    assert Service.objects.get(pk=world.api.pk).cluster_ip == (
        cluster.services(namespace)["api"].spec.cluster_ip
    )


def test_the_full_re_read_reverts_an_edit_made_by_hand(
    cluster: Cluster,
    world: World,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    run_task(world.project.pk)
    namespace = world.project.namespace
    cluster.networking.patch_namespaced_network_policy(
        "project-isolation",
        namespace,
        {"spec": {"ingress": [{"from": [{"namespaceSelector": {}}]}]}},  # admit everyone
    )
    with django_capture_on_commit_callbacks(execute=True):
        resync_all_projects.delay()
    policy = cluster.policies(namespace)["project-isolation"].spec
    assert policy.ingress[0]._from[0].namespace_selector is None
    assert policy.ingress[0]._from[0].pod_selector is not None


def test_keys_added_by_hand_to_maps_we_own_are_taken_out(cluster: Cluster, world: World) -> None:
    """A server-side apply keeps what another field manager set; a selector that selects
    fewer pods, or a policy that covers fewer, must not survive a pass."""
    run_task(world.project.pk)
    namespace = world.project.namespace
    cluster.core.patch_namespaced_service(
        "api", namespace, {"spec": {"selector": {"app": "someone-elses"}}}
    )
    cluster.networking.patch_namespaced_network_policy(
        "project-isolation", namespace, {"spec": {"podSelector": {"matchLabels": {"x": "y"}}}}
    )
    AppliedRecord.distrust([world.project.pk])  # as the watcher or the resync would
    outcome_changes = reconciler.reconcile(world.project.pk).changes
    assert "updated Service api" in outcome_changes
    assert "updated NetworkPolicy project-isolation" in outcome_changes
    assert cluster.services(namespace)["api"].spec.selector == {"stackblaze.cloud/service": "api"}
    assert cluster.policies(namespace)["project-isolation"].spec.pod_selector.match_labels is None
    # And the next re-read finds nothing left to change.
    AppliedRecord.distrust([world.project.pk])
    assert reconciler.reconcile(world.project.pk).changes == []


def test_transient_errors_retry_with_backoff_then_show_failed(
    cluster: Cluster, world: World, settings: Any
) -> None:
    settings.RECONCILE_MAX_RETRIES = 3
    cluster.http.inject_faults(1.0)  # every call fails: 500, 429 or a timeout
    assert run_task(world.project.pk) == "failed"
    project = fresh(world.project)
    assert project.sync_state == Project.SyncState.FAILED
    assert "cluster" in project.sync_error
    # The first try and three retries, each one HTTP call (the namespace read) that failed.
    assert ApplyAttempt.objects.filter(project=project, result="failed").count() == 4
    assert len(cluster.http.calls) == 4

    cluster.http.inject_faults(0.0)  # the cluster recovers; the next change or Retry heals it
    assert run_task(world.project.pk) == "applied"
    assert fresh(world.project).sync_state == Project.SyncState.IN_SYNC


def test_with_30_percent_of_calls_failing_50_services_converge(
    cluster: Cluster, world: World
) -> None:
    for index in range(48):
        make_service(world.project, f"service {index}", Service.Kind.PRIVATE, [3000 + index])
    cluster.http.inject_faults(0.3, seed=7)
    attempts = 0
    while fresh(world.project).sync_state != Project.SyncState.IN_SYNC:
        attempts += 1
        assert attempts <= 20, "did not converge"
        run_task(world.project.pk)
    injected = [call for call in cluster.http.calls if call.outcome != "ok"]
    assert len(injected) > 10
    assert {call.outcome for call in injected} >= {"500", "429", "timeout-before", "timeout-after"}
    services = cluster.services(world.project.namespace)
    assert len(services) == 50
    ips = dict(Service.objects.filter(project=world.project).values_list("name", "cluster_ip"))
    assert ips == {name: svc.spec.cluster_ip for name, svc in services.items()}


def test_a_permanent_error_fails_fast_with_the_clusters_reason(
    cluster: Cluster, world: World, settings: Any
) -> None:
    # The "worker" user exists but no RBAC binding grants it anything: 403 on every call.
    settings.KUBECONFIG = str(cluster.api.kubeconfig_for("worker"))
    assert run_task(world.project.pk) == "failed"
    assert ApplyAttempt.objects.filter(project=world.project, result="failed").count() == 1
    project = fresh(world.project)
    assert project.sync_state == Project.SyncState.FAILED
    assert "403 Forbidden" in project.sync_error
    assert 'User "worker" cannot' in project.sync_error
    assert "deploy/rbac.yaml" in project.sync_error


def test_the_ui_shows_in_sync_with_the_cluster_ip(
    cluster: Cluster, world: World, owner_client: Client
) -> None:
    run_task(world.project.pk)
    html = owner_client.get(reverse("project-overview", args=[world.project.uid])).content.decode()
    ip = Service.objects.get(pk=world.api.pk).cluster_ip
    assert "In sync" in html
    assert f">{ip}<" in html


def test_two_reconciles_of_one_project_never_overlap(cluster: Cluster, world: World) -> None:
    claimed = lease.claim(world.project.pk)
    assert claimed is not None
    assert reconcile_project.apply(args=(world.project.pk,)).get() == "busy"
    assert cluster.http.calls == []
    lease.release(world.project.pk, claimed.token)


def test_a_new_projects_objects_are_applied_side_by_side(
    cluster: Cluster, world: World, settings: Any
) -> None:
    """A new project of 50 services: after its namespace, its objects are written at most
    KUBE_APPLY_CONCURRENCY at once, not one round trip after another."""
    settings.KUBE_APPLY_CONCURRENCY = 4
    for index in range(48):
        make_service(world.project, f"service {index}", Service.Kind.PRIVATE, [3000])
    assert run_task(world.project.pk) == "applied"
    assert 1 < cluster.http.max_in_flight <= 4
    namespace = world.project.namespace
    assert len(cluster.services(namespace)) == 50
    # The namespace came first: every other write is after it.
    writes = [call.path for call in cluster.http.writes]
    assert writes[0].endswith(f"/namespaces/{namespace}")
    ips = dict(Service.objects.filter(project=world.project).values_list("name", "cluster_ip"))
    assert ips == {name: svc.spec.cluster_ip for name, svc in cluster.services(namespace).items()}

    settings.KUBE_APPLY_CONCURRENCY = 1
    cluster.http.reset()
    AppliedRecord.distrust([world.project.pk])
    Service.objects.filter(project=world.project).update(ports=[4000])
    Project.objects.filter(pk=world.project.pk).update(
        generation=fresh(world.project).generation + 1
    )
    assert run_task(world.project.pk) == "applied"
    assert cluster.http.max_in_flight == 1  # one at a time, when asked


def test_a_rate_limited_apply_waits_as_the_server_asks(
    cluster: Cluster, world: World, settings: Any
) -> None:
    """API Priority and Fairness sheds load with 429 and Retry-After: the pass waits that long
    and goes on, instead of failing and starting over."""
    cluster.http.rate_limit(2, retry_after=1)
    started = time.monotonic()
    assert run_task(world.project.pk) == "applied"
    assert time.monotonic() - started >= 1.0
    assert [call.outcome for call in cluster.http.calls[:2]] == ["429-retry-after"] * 2
    assert not ApplyAttempt.objects.filter(project=world.project, result="failed").exists()
    assert fresh(world.project).sync_state == Project.SyncState.IN_SYNC


def test_a_retry_after_longer_than_the_bound_is_left_to_the_task(
    cluster: Cluster, world: World, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.KUBE_RETRY_AFTER_MAX_SECONDS = 5
    cluster.http.rate_limit(1, retry_after=120)
    # The pass does not sit out two minutes: it fails at once, and the task's retry is
    # scheduled no sooner than the server asked (run here without waiting, as Celery's
    # in-process retries are).
    with caplog.at_level(logging.WARNING, logger="networking.cluster.reconcile"):
        assert run_task(world.project.pk) == "applied"
    assert [call.outcome for call in cluster.http.calls[:2]] == ["429-retry-after", "ok"]
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and "rate-limiting" in failures[0]
    delay = float(re.search(r"retrying in ([0-9.]+)s", failures[0]).group(1))  # type: ignore[union-attr]
    assert delay >= 120
