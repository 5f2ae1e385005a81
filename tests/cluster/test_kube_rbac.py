"""deploy/rbac.yaml grants the worker exactly what the reconcile uses, and nothing dangerous."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from kubernetes import client, config

from networking.cluster import kube, probe
from networking.cluster.informer import ClusterCache
from networking.models import Project, ServiceAlias
from networking.tasks import delete_orphan_namespaces, reconcile_project
from tests import rbac
from tests.cluster_fixtures import Cluster
from tests.conftest import World


def cluster_role() -> dict[str, Any]:
    return next(doc for doc in rbac.documents() if doc["kind"] == "ClusterRole")


def deleted(namespace: Any) -> bool:
    """Gone, or on its way (the namespace controller empties it first)."""
    return namespace is None or namespace.metadata.deletion_timestamp is not None


def test_no_wildcards_and_no_privilege_verbs() -> None:
    for rule in cluster_role()["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        assert "nonResourceURLs" not in rule


def test_no_cluster_wide_read_of_secrets() -> None:
    for rule in cluster_role()["rules"]:
        if "secrets" in rule["resources"] and {"get", "list", "watch"} & set(rule["verbs"]):
            assert rule.get("resourceNames") == ["stackblaze-shared-secrets", "stackblaze-tls"], (
                "reading Secrets must name ours"
            )


def test_the_worker_may_list_and_watch_our_secret_by_name_and_no_other(
    cluster: Cluster, world: World, as_worker: None
) -> None:
    assert reconcile_project.apply(args=(world.project.pk,)).get() == "applied"
    namespace = world.project.namespace
    cluster.core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "customer-owned"}, "stringData": {"token": "not yours"}},  # type: ignore[arg-type]
        _preload_content=False,
    )
    core = _worker_core(cluster)
    ours = "metadata.name=stackblaze-shared-secrets"
    assert _status(core.list_secret_for_all_namespaces, field_selector=ours) == 200
    assert _status(core.list_secret_for_all_namespaces) == 403
    assert _status(core.list_namespaced_secret, namespace) == 403
    assert (
        _status(core.list_secret_for_all_namespaces, field_selector="metadata.name=customer-owned")
        == 403
    )
    assert _status(core.read_namespaced_secret, "customer-owned", namespace) == 403


PROBE_IMAGE = "stackblaze-probe:test"


@pytest.fixture
def as_worker(cluster: Cluster, settings: Any) -> Iterator[None]:
    """deploy/rbac.yaml applied for the test API server's "worker" user; the app runs as it."""
    rbac.apply(cluster.api, "worker", PROBE_IMAGE)
    settings.KUBECONFIG = str(cluster.api.kubeconfig_for("worker"))
    settings.CONNECTION_TEST_IMAGE = PROBE_IMAGE
    try:
        yield
    finally:
        rbac.remove(cluster.api)


def test_the_reconcile_works_with_only_these_permissions(
    cluster: Cluster, world: World, owner_client: Client, as_worker: None
) -> None:
    def apply() -> None:
        assert reconcile_project.apply(args=(world.project.pk,)).get() in ("applied", "in_sync")
        project = Project.objects.get(pk=world.project.pk)
        assert project.sync_state == Project.SyncState.IN_SYNC, project.sync_error

    apply()  # create the namespace and everything in it
    apply()  # read it back, change nothing
    owner_client.post(
        reverse("service-edit", args=[world.project.uid, world.api.pk]),
        {"display_name": "web", "ports": "8080"},
    )
    apply()  # rename: create one Service, keep the old name as an alias, patch a policy
    assert set(cluster.services(world.project.namespace)) == {"web", "api", "postgres"}
    owner_client.post(reverse("service-delete", args=[world.project.uid, world.postgres.pk]))
    apply()
    ServiceAlias.expire_due(timezone.now() + timedelta(days=2))
    apply()  # the old name expires: its Service is deleted
    assert set(cluster.services(world.project.namespace)) == {"web"}


def test_the_cleanup_of_deleted_projects_works_with_only_these_permissions(
    cluster: Cluster, world: World, as_worker: None
) -> None:
    for project in (world.project, world.other_project):
        assert reconcile_project.apply(args=(project.pk,)).get() == "applied"
    gone = world.project.namespace
    Project.objects.filter(pk=world.project.pk).delete()

    delete_orphan_namespaces.apply().get()
    assert deleted(cluster.namespace(gone))
    assert not deleted(cluster.namespace(world.other_project.namespace))


def test_the_watcher_works_with_only_these_permissions(
    cluster: Cluster, world: World, as_worker: None
) -> None:
    kube._api_client.cache_clear()  # connect as the worker, not as the admin
    assert reconcile_project.apply(args=(world.project.pk,)).get() == "applied"
    cache = ClusterCache(kube.api_client(), django_settings.WORKLOAD_LABEL, watch_seconds=10)
    cache.start()
    try:
        # Every kind listed and watched cluster-wide: a 403 would keep it from syncing.
        assert cache.wait_synced(30), [k for k, i in cache.informers.items() if not i.synced]
        namespace = world.project.namespace
        cluster.core.delete_namespaced_service("api", namespace, _preload_content=False)
        deadline = time.monotonic() + 30
        while cache.informers["Service"].get(namespace, "api") is not None:
            assert time.monotonic() < deadline, "the watch never saw the deletion"
            time.sleep(0.1)
    finally:
        cache.stop()
        kube._api_client.cache_clear()


def _worker_core(cluster: Cluster) -> Any:
    worker = config.new_client_from_config(config_file=str(cluster.api.kubeconfig_for("worker")))
    return client.CoreV1Api(worker)


def _status(call: Any, *args: Any, **kwargs: Any) -> int:
    try:
        call(*args, _preload_content=False, **kwargs)
    except client.ApiException as error:
        return int(error.status or 0)
    return 200


def test_the_worker_may_run_and_remove_the_connection_probe_and_nothing_else(
    cluster: Cluster, world: World, as_worker: None
) -> None:
    assert reconcile_project.apply(args=(world.project.pk,)).get() == "applied"
    namespace = world.project.namespace
    worker = _worker_core(cluster)
    settings_ = probe.ProbeSettings(PROBE_IMAGE)
    pod = probe.probe_pod(
        namespace=namespace,
        project_uid=world.project.uid,
        test_id=1,
        hostname="api.internal",
        ports=[8080],
        settings=settings_,
    )
    # The probe as the app builds it: admitted, readable and deletable by the worker.
    assert _status(worker.create_namespaced_pod, namespace, pod) == 200
    assert _status(worker.read_namespaced_pod, pod["metadata"]["name"], namespace) == 200

    def variant(change: Any) -> dict[str, Any]:
        other = copy.deepcopy(pod)
        other["metadata"]["name"] = f"variant-{len(tried)}"
        change(other)
        tried.append(other)
        return other

    tried: list[dict[str, Any]] = []
    refused = [
        variant(lambda p: p["spec"]["containers"][0].update(image="attacker/tools:latest")),
        variant(lambda p: p["spec"]["containers"][0]["securityContext"].update(privileged=True)),
        variant(lambda p: p["spec"].update(hostNetwork=True)),
        variant(lambda p: p["spec"].update(automountServiceAccountToken=True)),
        variant(lambda p: p["spec"]["securityContext"].update(runAsNonRoot=False)),
        variant(
            lambda p: p["spec"]["containers"][0].update(
                env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
            )
        ),
        variant(lambda p: p["metadata"]["labels"].pop("app.kubernetes.io/component")),
        variant(
            lambda p: p["spec"]["containers"].append(dict(p["spec"]["containers"][0], name="x"))
        ),
    ]
    for other in refused:
        assert _status(worker.create_namespaced_pod, namespace, other) in (400, 403, 422), other

    # A pod of the customer's (made by someone else): the worker cannot delete it.
    customer = copy.deepcopy(pod)
    customer["metadata"]["name"] = "customer-app"
    customer["metadata"]["labels"] = {"stackblaze.cloud/service": "api"}
    assert _status(cluster.core.create_namespaced_pod, namespace, customer) == 200
    assert _status(worker.delete_namespaced_pod, "customer-app", namespace) in (400, 403, 422)
    assert _status(worker.delete_namespaced_pod, pod["metadata"]["name"], namespace) == 200
    # And it may not list pods, nor read their logs.
    assert _status(worker.list_namespaced_pod, namespace) == 403
    assert _status(worker.read_namespaced_pod_log, "customer-app", namespace) == 403
