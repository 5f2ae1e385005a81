"""Projects that are gone leave nothing behind, on the embedded manifests backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from networking import passes as reconciler
from networking.cluster.manifests import ManifestsBackend
from networking.models import Project
from networking.tasks import delete_namespace_if_orphaned, delete_orphan_namespaces
from tests.conftest import World


def test_it_deletes_the_folder_of_a_project_that_is_gone(world: World, manifests: Path) -> None:
    reconciler.reconcile(world.project.pk)
    reconciler.reconcile(world.other_project.pk)
    gone = world.project.namespace
    Project.objects.filter(pk=world.project.pk).delete()

    assert delete_orphan_namespaces.apply().get() == 1
    assert not (manifests / gone).exists()
    assert (manifests / world.other_project.namespace).is_dir()
    assert delete_orphan_namespaces.apply().get() == 0


def test_it_leaves_a_live_project_alone(world: World, manifests: Path) -> None:
    reconciler.reconcile(world.project.pk)
    assert delete_namespace_if_orphaned.apply(args=(world.project.namespace,)).get() is False
    assert delete_orphan_namespaces.apply().get() == 0
    assert (manifests / world.project.namespace).is_dir()


def test_deleting_a_project_deletes_its_folder_once_committed(
    world: World, manifests: Path, eager_tasks: None, django_capture_on_commit_callbacks: Any
) -> None:
    reconciler.reconcile(world.project.pk)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        world.project.delete()
    assert (manifests / world.project.namespace).is_dir()  # not before the commit
    for callback in callbacks:
        callback()
    assert not (manifests / world.project.namespace).exists()


def test_it_never_leaves_the_manifests_folder(manifests: Path) -> None:
    outside = manifests / "outside"
    outside.mkdir()
    backend = ManifestsBackend(manifests / "projects")
    for name in ("..", ".", "../outside", ""):
        assert backend.delete_namespace(name) is False
    assert outside.is_dir()
    assert backend.managed_namespaces() == set()  # not created yet
