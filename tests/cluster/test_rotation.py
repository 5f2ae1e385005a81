"""Rotating a shared secret against the real API server and controller manager.

The tests create the services' Deployments the way the platform's deploy system would. With
no kubelet here, pods never start: a Deployment of 0 replicas rolls out for real (the
deployment controller observes it and finishes), one of 1 replica never does.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from networking import passes as reconciler
from networking import rotation
from networking.cluster.desired import SECRETS_ANNOTATION, SHARED_SECRETS
from networking.models import Project, Service, SharedSecret
from tests.cluster.workloads import NAME, deploy, deployment, rollouts, secret_data, settle
from tests.cluster_fixtures import Cluster
from tests.conftest import World, make_service
from tests.waiting import wait_until


@pytest.fixture
def rotation_world(cluster: Cluster, world: World, settings: Any) -> World:
    settings.ROTATION_GRACE_SECONDS = 1
    worker = make_service(world.project, "background-worker", Service.Kind.PRIVATE, [3000])
    world.secret.services.set([world.api, worker])
    settle(world.project)  # the namespace exists before the deploy system deploys into it
    for service in ("api", "background-worker", "postgres"):
        deploy(cluster, world.project.namespace, service)
    settle(world.project)
    return world


def snapshot(cluster: Cluster, namespace: str) -> dict[str, Any]:
    result: dict[str, Any] = {"secret": secret_data(cluster, namespace)}
    for name in ("api", "background-worker", "postgres"):
        live = deployment(cluster, namespace, name)
        template = live["spec"]["template"]
        result[name] = {
            "annotation": (template["metadata"].get("annotations") or {}).get(SECRETS_ANNOTATION),
            "revision": live["metadata"]["annotations"].get("deployment.kubernetes.io/revision"),
            "env": [entry["name"] for entry in template["spec"]["containers"][0].get("env", [])],
        }
    return result


def test_receiving_workloads_get_the_secret_and_others_are_untouched(
    cluster: Cluster, rotation_world: World
) -> None:
    state = snapshot(cluster, rotation_world.project.namespace)
    assert set(state["secret"]) == {NAME}
    for name in ("api", "background-worker"):
        assert state[name]["annotation"] == f"{NAME}=1"
        # The deploy system's own variable stays; ours are added beside it.
        assert state[name]["env"] == ["PORT", NAME, f"{NAME}_NEXT", f"{NAME}_PREVIOUS"]
        assert state[name]["revision"] == "2"  # created, then restarted once to receive it
    assert state["postgres"] == {"annotation": None, "revision": "1", "env": ["PORT"]}
    workload = Service.objects.get(project=rotation_world.project, name="api").workload
    assert workload == {
        "kind": "Deployment",
        "name": "api",
        "secrets": f"{NAME}=1",
        "rolled_out": True,
    }


def test_a_rotation_walks_every_phase_rolling_each_workload_once_per_phase(
    cluster: Cluster, rotation_world: World
) -> None:
    namespace = rotation_world.project.namespace
    secret = rotation_world.secret
    old = secret_data(cluster, namespace)[NAME]
    rotation.start_rotation(secret, actor=None)

    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 90
    while True:
        reconciler.reconcile(rotation_world.project.pk)
        secret.refresh_from_db()
        phase = secret.rotation_phase or "completed"
        # What the cluster holds while a phase is current (its last look before moving on).
        seen[phase] = snapshot(cluster, namespace)
        if phase == "completed" and Project.objects.get(pk=rotation_world.project.pk).in_sync:
            break
        assert time.monotonic() < deadline, f"stuck in {phase}"
        time.sleep(0.2)

    new = secret_data(cluster, namespace)[NAME]
    assert new != old
    assert list(seen) == ["accept_new", "send_new", "grace", "retire_old", "completed"]
    assert seen["accept_new"]["secret"] == {NAME: old, f"{NAME}_NEXT": new}
    assert seen["send_new"]["secret"] == {NAME: new, f"{NAME}_PREVIOUS": old}
    assert seen["grace"]["secret"] == {NAME: new, f"{NAME}_PREVIOUS": old}
    assert seen["retire_old"]["secret"] == {NAME: new}
    # After the grace window the old value is gone from the cluster.
    assert old not in seen["completed"]["secret"].values()

    for name in ("api", "background-worker"):
        annotations = [seen[phase][name]["annotation"] for phase in seen]
        assert annotations == [f"{NAME}=2", f"{NAME}=3", f"{NAME}=3", f"{NAME}=4", f"{NAME}=4"]
        # One rollout (one ReplicaSet revision) per phase that changes the environment, none
        # for the grace window: the deployment controller's own record of the restarts.
        assert rollouts(cluster, namespace, name) == {
            "1": None,  # created by the deploy system
            "2": f"{NAME}=1",  # received the secret
            "3": f"{NAME}=2",  # accept new
            "4": f"{NAME}=3",  # send new
            "5": f"{NAME}=4",  # retire old
        }
    assert rollouts(cluster, namespace, "postgres") == {"1": None}
    secret.refresh_from_db()
    assert secret.last_rotated_at is not None
    assert secret.rotations.get().result == "completed"


def observed(cluster: Cluster, namespace: str, name: str, annotation: str) -> bool:
    """The deployment controller has seen the pod template carrying ``annotation``."""
    live = deployment(cluster, namespace, name)
    template = live["spec"]["template"]["metadata"].get("annotations") or {}
    return bool(
        template.get(SECRETS_ANNOTATION) == annotation
        and live.get("status", {}).get("observedGeneration", 0) >= live["metadata"]["generation"]
    )


def test_a_phase_waits_until_every_workload_has_rolled_out(
    cluster: Cluster, rotation_world: World
) -> None:
    namespace = rotation_world.project.namespace
    # Added as the dashboard adds it (after the fixture's first pass: the worker sees it by
    # the generation it was made in).
    stuck = Service(
        project=rotation_world.project, display_name="stuck", kind="private", ports=[4000]
    )
    stuck.create(actor=None)
    rotation_world.secret.services.add(stuck)
    deploy(cluster, namespace, "stuck", replicas=1)  # its pod never starts here
    rotation.start_rotation(rotation_world.secret, actor=None)
    reconciler.reconcile(rotation_world.project.pk)  # phase 1 reaches every workload
    accepting = f"{NAME}=2"
    for name in ("api", "background-worker", "stuck"):

        def reached(name: str = name) -> bool:
            return observed(cluster, namespace, name, accepting)

        wait_until(reached, f"{name} to be given {accepting}")

    # Every other workload has rolled out phase 1; only "stuck" has not: the phase waits.
    outcome = reconciler.reconcile(rotation_world.project.pk)
    rotation_world.secret.refresh_from_db()
    assert rotation_world.secret.rotation_phase == SharedSecret.Phase.ACCEPT_NEW
    assert outcome.recheck_in is not None  # the worker keeps looking
    assert Service.objects.get(pk=stuck.pk).workload["rolled_out"] is False
    assert Service.objects.get(name="api", project=rotation_world.project).workload == {
        "kind": "Deployment",
        "name": "api",
        "secrets": accepting,
        "rolled_out": True,
    }

    # The control: once "stuck" rolls out too (scaled to 0, so it can), the phase moves on.
    cluster.apps.patch_namespaced_deployment_scale(
        "stuck", namespace, {"spec": {"replicas": 0}}, field_manager="deploy-system"
    )
    wait_until(
        lambda: (
            observed(cluster, namespace, "stuck", accepting)
            and deployment(cluster, namespace, "stuck")["status"].get("replicas", 0) == 0
        ),
        "stuck to scale down",
    )
    reconciler.reconcile(rotation_world.project.pk)
    rotation_world.secret.refresh_from_db()
    assert rotation_world.secret.rotation_phase == SharedSecret.Phase.SEND_NEW


def test_a_service_that_stops_receiving_it_loses_it(
    cluster: Cluster, rotation_world: World
) -> None:
    namespace = rotation_world.project.namespace
    rotation_world.secret.services.remove(
        Service.objects.get(project=rotation_world.project, name="background-worker")
    )
    Project.objects.filter(pk=rotation_world.project.pk).update(generation=10_000)
    settle(rotation_world.project)
    state = snapshot(cluster, namespace)
    assert state["background-worker"]["annotation"] is None
    assert state["background-worker"]["env"] == ["PORT"]
    assert state["api"]["env"] == ["PORT", NAME, f"{NAME}_NEXT", f"{NAME}_PREVIOUS"]


def test_deleting_the_last_secret_deletes_the_kubernetes_secret(
    cluster: Cluster, rotation_world: World
) -> None:
    rotation_world.secret.delete()
    Project.objects.filter(pk=rotation_world.project.pk).update(generation=10_000)
    settle(rotation_world.project)
    items: list[Any] = cluster.core.list_namespaced_secret(rotation_world.project.namespace).items
    names = [item.metadata.name for item in items]
    assert SHARED_SECRETS not in names
    assert snapshot_env(cluster, rotation_world.project.namespace, "api") == ["PORT"]


def snapshot_env(cluster: Cluster, namespace: str, name: str) -> list[str]:
    live = deployment(cluster, namespace, name)
    return [entry["name"] for entry in live["spec"]["template"]["spec"]["containers"][0]["env"]]
