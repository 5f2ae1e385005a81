"""Projects that are gone leave nothing behind, against a real kube-apiserver."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from networking.models import Project
from networking.tasks import (
    delete_namespace_if_orphaned,
    delete_orphan_namespaces,
    reconcile_project,
)
from tests.cluster_fixtures import Cluster
from tests.conftest import World


def deleted(namespace: Any) -> bool:
    """Gone, or on its way (the namespace controller empties it first)."""
    return namespace is None or namespace.metadata.deletion_timestamp is not None


def apply(project: Project) -> None:
    assert reconcile_project.apply(args=(project.pk,)).get() == "applied"


def test_it_deletes_the_namespace_of_a_project_that_is_gone(cluster: Cluster, world: World) -> None:
    apply(world.project)
    apply(world.other_project)
    gone = world.project.namespace
    Project.objects.filter(pk=world.project.pk).delete()

    assert delete_orphan_namespaces.apply().get() >= 1
    assert deleted(cluster.namespace(gone))
    assert not deleted(cluster.namespace(world.other_project.namespace))
    # Asked again (a second run, or the watcher seeing it terminate): nothing more to do.
    assert delete_namespace_if_orphaned.apply(args=(gone,)).get() is False


def test_it_leaves_a_live_projects_namespace_alone(cluster: Cluster, world: World) -> None:
    apply(world.project)
    assert delete_namespace_if_orphaned.apply(args=(world.project.namespace,)).get() is False
    delete_orphan_namespaces.apply().get()
    assert not deleted(cluster.namespace(world.project.namespace))


def test_it_never_touches_a_namespace_without_our_label(cluster: Cluster, world: World) -> None:
    # Named like a project's namespace, but not ours: no project has it, and still it stays.
    name = "prj-notoursatall"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        assert delete_namespace_if_orphaned.apply(args=(name,)).get() is False
        delete_orphan_namespaces.apply().get()
        assert not deleted(cluster.namespace(name))
    finally:
        cluster.core.delete_namespace(name)


def test_deleting_a_project_deletes_its_namespace_once_committed(
    cluster: Cluster, world: World, eager_tasks: None, django_capture_on_commit_callbacks: Any
) -> None:
    apply(world.project)
    with django_capture_on_commit_callbacks(execute=True):
        world.project.delete()
    assert deleted(cluster.namespace(world.project.namespace))
