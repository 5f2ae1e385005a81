"""Peering policies in the real API server: approved, active, repaired, revoked."""

from __future__ import annotations

from typing import Any

import pytest

from networking import passes as reconciler
from networking import peering
from networking.models import PeeringRequest, Project
from networking.tasks import resync_all_projects
from tests.cluster_fixtures import Cluster
from tests.conftest import World

Status = PeeringRequest.Status


def fresh(request: PeeringRequest) -> PeeringRequest:
    return PeeringRequest.objects.get(pk=request.pk)


def peer_policies(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return {name: p for name, p in cluster.policies(namespace).items() if name.startswith("peer-")}


def owner(world: World) -> Any:
    return world.users["owner"]


@pytest.fixture
def approved(cluster: Cluster, world: World) -> PeeringRequest:
    for project in (world.project, world.other_project):
        reconciler.reconcile(project.pk)
    peering.accept(world.peering, actor=owner(world), project=world.project)
    peering.approve(world.peering, staff=world.users["support"])
    # The tests run the passes the approval asked for themselves: as if a worker took them.
    Project.objects.update(reconcile_queued_at=None)
    return fresh(world.peering)


def test_approval_puts_a_policy_admitting_the_other_in_both_namespaces(
    cluster: Cluster, world: World, approved: PeeringRequest
) -> None:
    a, b = world.project.namespace, world.other_project.namespace
    reconciler.reconcile(world.project.pk)
    assert fresh(approved).status == Status.APPROVED  # one side only so far
    reconciler.reconcile(world.other_project.pk)
    assert fresh(approved).status == Status.ACTIVE

    for here, there in ((a, b), (b, a)):
        policies = peer_policies(cluster, here)
        assert list(policies) == [f"peer-{there}"]
        spec = policies[f"peer-{there}"].spec
        assert spec.pod_selector.match_labels is None  # every pod of this project
        source = spec.ingress[0]._from[0]
        assert source.namespace_selector.match_labels == {"kubernetes.io/metadata.name": there}
        assert source.pod_selector is None
    # Isolation from everyone else stays.
    assert "project-isolation" in cluster.policies(a)


def test_revocation_removes_both_policies(
    cluster: Cluster, world: World, approved: PeeringRequest
) -> None:
    for project in (world.project, world.other_project):
        reconciler.reconcile(project.pk)
    peering.revoke(fresh(approved), actor=owner(world), project=world.project)
    for project in (world.project, world.other_project):
        reconciler.reconcile(project.pk)
    assert fresh(approved).status == Status.REVOKED
    assert peer_policies(cluster, world.project.namespace) == {}
    assert peer_policies(cluster, world.other_project.namespace) == {}


def test_a_policy_deleted_by_hand_is_restored_while_active(
    cluster: Cluster,
    world: World,
    approved: PeeringRequest,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        resync_all_projects.delay()
    assert fresh(approved).status == Status.ACTIVE
    namespace, peer = world.project.namespace, world.other_project.namespace
    cluster.networking.delete_namespaced_network_policy(
        f"peer-{peer}", namespace, _preload_content=False
    )
    with django_capture_on_commit_callbacks(execute=True):
        resync_all_projects.delay()
    assert f"peer-{peer}" in peer_policies(cluster, namespace)
    assert fresh(approved).status == Status.ACTIVE


def test_a_worker_dying_between_the_two_namespaces_still_converges(
    cluster: Cluster,
    world: World,
    approved: PeeringRequest,
    eager_tasks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # The worker wrote the first namespace, then died before the second one's task.
    reconciler.reconcile(world.project.pk)
    assert peer_policies(cluster, world.other_project.namespace) == {}
    assert fresh(approved).status == Status.APPROVED
    with django_capture_on_commit_callbacks(execute=True):
        resync_all_projects.delay()  # the lost work is found again
    assert fresh(approved).status == Status.ACTIVE
    assert peer_policies(cluster, world.other_project.namespace)

    peering.revoke(fresh(approved), actor=owner(world), project=world.other_project)
    Project.objects.update(reconcile_queued_at=None)  # a worker took both messages, then died
    reconciler.reconcile(world.other_project.pk)  # and again, only one side got done
    assert fresh(approved).status == Status.REVOKING
    assert peer_policies(cluster, world.project.namespace)
    with django_capture_on_commit_callbacks(execute=True):
        resync_all_projects.delay()
    assert fresh(approved).status == Status.REVOKED
    for project in (world.project, world.other_project):
        assert peer_policies(cluster, Project.objects.get(pk=project.pk).namespace) == {}
