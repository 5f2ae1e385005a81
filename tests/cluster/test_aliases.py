"""Old hostnames after a rename, against the real API server: a second Service, gone at expiry."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from networking import passes as reconciler
from networking.cluster.desired import ALIAS_OF_LABEL
from networking.cluster.watcher import Watcher
from networking.models import Service, ServiceAlias
from tests.cluster_fixtures import Cluster
from tests.conftest import World
from tests.waiting import wait_until


def rename(service: Service, display_name: str, keep: timedelta = timedelta(hours=24)) -> None:
    service.display_name = display_name
    service.full_clean()
    service.save_changes(actor=None, keep_old_name_for=keep)


def test_both_names_reach_the_same_pods_until_the_old_one_expires(
    cluster: Cluster, world: World
) -> None:
    reconciler.reconcile(world.project.pk)
    namespace = world.project.namespace
    rename(world.api, "Gateway")
    outcome = reconciler.reconcile(world.project.pk)
    assert "created Service gateway" in outcome.changes
    assert "created Service api" not in outcome.changes  # it was there; it now selects gateway
    services = cluster.services(namespace)
    new, old = services["gateway"], services["api"]
    assert new.spec.selector == old.spec.selector == {"stackblaze.cloud/service": "gateway"}
    assert [p.port for p in new.spec.ports] == [p.port for p in old.spec.ports] == [8080]
    assert old.metadata.labels[ALIAS_OF_LABEL] == "gateway"
    assert old.spec.cluster_ip and new.spec.cluster_ip
    # The service's own address is what the dashboard shows.
    assert Service.objects.get(pk=world.api.pk).cluster_ip == new.spec.cluster_ip

    # A day and a minute later (the clock moved, nobody waited), it is gone from the cluster.
    assert ServiceAlias.expire_due(timezone.now() + timedelta(hours=24, minutes=1)) == 1
    assert "deleted Service api" in reconciler.reconcile(world.project.pk).changes
    assert set(cluster.services(namespace)) == {"gateway", "postgres"}


def test_deleting_the_service_deletes_its_old_names_in_the_cluster(
    cluster: Cluster, world: World
) -> None:
    rename(world.api, "Gateway")
    reconciler.reconcile(world.project.pk)
    assert {"api", "gateway"} <= set(cluster.services(world.project.namespace))
    world.api.remove(actor=None)
    reconciler.reconcile(world.project.pk)
    assert set(cluster.services(world.project.namespace)) == {"postgres"}


def test_an_old_name_deleted_by_hand_comes_back_from_the_watch(
    cluster: Cluster,
    world: World,
    watcher: Watcher,
) -> None:
    rename(world.api, "Gateway")
    reconciler.reconcile(world.project.pk)
    namespace = world.project.namespace
    cluster.core.delete_namespaced_service("api", namespace, _preload_content=False)
    wait_until(lambda: "api" in cluster.services(namespace), "the old name to be restored")
    restored = cluster.services(namespace)["api"]
    assert restored.spec.selector == {"stackblaze.cloud/service": "gateway"}
