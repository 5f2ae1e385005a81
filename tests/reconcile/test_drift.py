"""What the watcher calls drift, judged on a cache (pure: no cluster, no database)."""

from __future__ import annotations

import copy
from typing import Any

from networking.cluster.desired import (
    ClusterSettings,
    DesiredState,
    ServiceSpec,
    build_desired_state,
)
from networking.cluster.drift import Difference, differences
from networking.cluster.kube import merge_patch

SETTINGS = ClusterSettings(workload_label="stackblaze.cloud/service", ingress_namespace="ingress")
API = ServiceSpec(name="api", kind="web", ports=(8080,), public=True)
WORKER = ServiceSpec(name="worker", kind="private", ports=(3000,))


def state(*services: ServiceSpec) -> DesiredState:
    return build_desired_state(
        namespace="prj-abc", project_uid="abc", services=services, settings=SETTINGS
    )


def cache_of(desired: DesiredState) -> dict[str, dict[str, Any]]:
    """What the watch cache holds once a pass applied ``desired`` (ClusterIPs assigned)."""
    live: dict[str, dict[str, Any]] = {"Service": {}, "NetworkPolicy": {}}
    for (kind, name), obj in desired.objects.items():
        if kind in live:
            live[kind][name] = copy.deepcopy(obj)
    for index, service in enumerate(live["Service"].values()):
        service["spec"]["clusterIP"] = f"10.96.0.{index + 1}"
    return live


def judge(
    desired: DesiredState, live: dict[str, Any], services: set[str] | None
) -> list[Difference]:
    recorded: dict[str, tuple[str | None, dict[str, Any]]] = {
        name: (obj["spec"]["clusterIP"], {}) for name, obj in live["Service"].items()
    }
    return differences(
        desired,
        live,
        namespace_object=desired.objects[("Namespace", "prj-abc")],
        recorded=recorded,
        workload_label=SETTINGS.workload_label,
        services=services,
    )


def test_what_was_applied_is_no_drift() -> None:
    desired = state(API, WORKER)
    assert judge(desired, cache_of(desired), None) == []


def test_a_look_at_one_service_sees_only_that_service() -> None:
    desired = state(API, WORKER)
    live = cache_of(desired)
    live["Service"]["worker"]["spec"]["ports"][0]["port"] = 9999
    live["NetworkPolicy"]["project-isolation"]["spec"]["ingress"] = [{}]
    assert judge(desired, live, {"api"}) == []
    assert judge(desired, live, {"worker"}) == ["Service worker differs"]
    assert judge(desired, live, None) == [
        "Service worker differs",
        "NetworkPolicy project-isolation differs",
    ]


def test_a_service_in_the_cluster_but_not_in_the_rows_is_not_desired() -> None:
    live = cache_of(state(API, WORKER))
    assert judge(state(API), live, {"worker"}) == ["Service worker is not desired"]


def test_a_repair_patch_takes_out_keys_added_to_maps_we_own_whole() -> None:
    desired = state(API).objects[("Service", "api")]
    live = copy.deepcopy(desired)
    live["spec"]["selector"]["app"] = "someone-elses"
    live["metadata"]["labels"]["team"] = "payments"
    patch = merge_patch(desired, live)
    assert patch["spec"]["selector"] == {"stackblaze.cloud/service": "api", "app": None}
    # Labels are shared: another's label stays.
    assert "team" not in patch["metadata"]["labels"]
    policy = state(API).objects[("NetworkPolicy", "project-isolation")]
    narrowed = copy.deepcopy(policy)
    narrowed["spec"]["podSelector"] = {"matchLabels": {"x": "y"}}
    assert merge_patch(policy, narrowed)["spec"]["podSelector"] == {"matchLabels": None}
