"""deploy/rbac.yaml grants the worker exactly what the reconcile uses, and nothing dangerous."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from kubernetes import client

from networking.cluster import kube
from networking.cluster.informer import ClusterCache
from networking.models import Project, ServiceAlias
from networking.tasks import delete_orphan_namespaces, reconcile_project
from tests.cluster_fixtures import Cluster
from tests.conftest import World

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"


def documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc]


def cluster_role() -> dict[str, Any]:
    return next(doc for doc in documents() if doc["kind"] == "ClusterRole")


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
        if "secrets" in rule["resources"]:
            assert not {"list", "watch"} & set(rule["verbs"]), rule
            if "get" in rule["verbs"]:
                assert rule.get("resourceNames"), "get on Secrets must name the Secret"


@pytest.fixture
def as_worker(cluster: Cluster, settings: Any) -> Iterator[None]:
    """Bind deploy/rbac.yaml's ClusterRole to the test API server's "worker" user."""
    admin = client.RbacAuthorizationV1Api(cluster.core.api_client)
    role = cluster_role()
    admin.create_cluster_role(role, _preload_content=False)  # type: ignore[arg-type]
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "test-worker"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "User", "name": "worker", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    admin.create_cluster_role_binding(binding, _preload_content=False)  # type: ignore[arg-type]
    settings.KUBECONFIG = str(cluster.api.kubeconfig_for("worker"))
    try:
        yield
    finally:
        admin.delete_cluster_role_binding("test-worker", _preload_content=False)
        admin.delete_cluster_role(role["metadata"]["name"], _preload_content=False)


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
