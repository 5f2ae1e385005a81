from __future__ import annotations

from pathlib import Path

import yaml

from networking.cluster.backends import is_subset
from networking.cluster.desired import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PROJECT_LABEL,
    ClusterSettings,
    DesiredState,
    ServiceSpec,
    build_desired_state,
)
from networking.cluster.manifests import ManifestsBackend

SETTINGS = ClusterSettings(workload_label="stackblaze.cloud/service", ingress_namespace="ingress")


def desired(*services: ServiceSpec, namespace: str = "prj-abc") -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    return build_desired_state(
        namespace=namespace, project_uid="abc", services=services, settings=SETTINGS
    ).objects


def state(*services: ServiceSpec) -> DesiredState:
    return build_desired_state(
        namespace="prj-abc", project_uid="abc", services=services, settings=SETTINGS
    )


API = ServiceSpec(name="api", kind="web", ports=(8080,), public=True)
WORKER = ServiceSpec(name="background-worker", kind="private", ports=(3000, 9090))
DB = ServiceSpec(name="postgres", kind="postgresql", ports=(5432,))


def test_every_object_is_labelled_as_ours_with_the_project() -> None:
    for obj in desired(API, WORKER, DB).values():
        labels = obj["metadata"]["labels"]
        assert labels[MANAGED_BY_LABEL] == MANAGED_BY
        assert labels[PROJECT_LABEL] == "abc"


def test_one_cluster_ip_service_per_service_selecting_its_pods() -> None:
    objects = desired(API, WORKER, DB)
    worker = objects[("Service", "background-worker")]
    assert worker["metadata"]["namespace"] == "prj-abc"
    assert worker["spec"]["type"] == "ClusterIP"
    assert worker["spec"]["selector"] == {"stackblaze.cloud/service": "background-worker"}
    assert [(p["port"], p["targetPort"]) for p in worker["spec"]["ports"]] == [
        (3000, 3000),
        (9090, 9090),
    ]
    assert objects[("Service", "postgres")]["spec"]["ports"][0]["port"] == 5432


def test_the_isolation_policy_admits_the_same_namespace_only() -> None:
    policy = desired(WORKER)[("NetworkPolicy", "project-isolation")]
    assert policy["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {}}]}],
    }


def test_public_web_services_also_admit_the_ingress_controller() -> None:
    objects = desired(API, WORKER)
    policy = objects[("NetworkPolicy", "allow-ingress-controller")]
    assert policy["spec"]["podSelector"]["matchExpressions"][0]["values"] == ["api"]
    peer = policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]
    assert peer == {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}
    assert ("NetworkPolicy", "allow-ingress-controller") not in desired(WORKER, DB)


def test_the_builder_is_deterministic() -> None:
    assert list(desired(WORKER, API)) == list(desired(API, WORKER))


def test_subset_comparison_ignores_what_the_cluster_adds_but_not_edits() -> None:
    service = desired(API)[("Service", "api")]
    live = yaml.safe_load(yaml.safe_dump(service))
    live["spec"]["clusterIP"] = "10.96.0.10"
    live["spec"]["ports"][0]["nodePort"] = None
    live["metadata"]["labels"]["added-by-someone"] = "x"
    assert is_subset(service, live)
    live["spec"]["ports"][0]["port"] = 80
    assert not is_subset(service, live)
    policy = desired(API)[("NetworkPolicy", "project-isolation")]
    edited = yaml.safe_load(yaml.safe_dump(policy))
    edited["spec"]["podSelector"] = {"matchLabels": {"only": "some"}}
    assert not is_subset(policy, edited)


class TestManifestsBackend:
    def test_it_writes_one_folder_per_namespace_namespace_first(self, tmp_path: Path) -> None:
        result = ManifestsBackend(tmp_path).apply(state(API, WORKER))
        files = sorted(path.name for path in (tmp_path / "prj-abc").iterdir())
        assert files[0] == "00-namespace-prj-abc.yaml"
        assert "02-service-api.yaml" in files
        assert "03-networkpolicy-project-isolation.yaml" in files
        assert "created Service api" in result.changes
        loaded = yaml.safe_load((tmp_path / "prj-abc" / "02-service-api.yaml").read_text())
        assert loaded == desired(API)[("Service", "api")]

    def test_a_second_pass_writes_nothing(self, tmp_path: Path) -> None:
        backend = ManifestsBackend(tmp_path)
        backend.apply(state(API, WORKER))
        before = {p: p.stat().st_mtime_ns for p in (tmp_path / "prj-abc").iterdir()}
        result = backend.apply(state(API, WORKER))
        assert result.changes == []
        assert {p: p.stat().st_mtime_ns for p in (tmp_path / "prj-abc").iterdir()} == before

    def test_it_prunes_what_is_no_longer_desired(self, tmp_path: Path) -> None:
        backend = ManifestsBackend(tmp_path)
        backend.apply(state(API, WORKER))
        renamed = ServiceSpec(name="worker", kind="private", ports=(3000,))
        result = backend.apply(state(API, renamed))
        assert sorted(result.changes) == [
            "created Service worker",
            "deleted Service background-worker",
        ]
        assert not (tmp_path / "prj-abc" / "02-service-background-worker.yaml").exists()


def test_selectors_and_secret_data_must_match_exactly() -> None:
    assert is_subset({"spec": {"selector": {"a": "1"}}}, {"spec": {"selector": {"a": "1"}}})
    assert not is_subset(
        {"spec": {"selector": {"a": "1"}}}, {"spec": {"selector": {"a": "1", "b": "2"}}}
    )
    assert not is_subset({"data": {"K": "dg=="}}, {"data": {"K": "dg==", "K_PREVIOUS": "eA=="}})
