"""Where desired state goes: a real cluster, or a directory of manifests.

The types and comparisons every backend shares. ``networking.cluster.backend_choice`` picks
one backend from ``settings.CLUSTER_BACKEND``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from networking.cluster.desired import Changes, DesiredState, KubeObject
from networking.cluster.errors import ClusterError
from networking.cluster.probe import PodOutcome, ReadyEndpoints

FIELD_MANAGER = "stackblaze-networking"


@dataclass(frozen=True)
class WorkloadStatus:
    """A service's workload as the cluster reports it."""

    kind: str
    name: str
    # The shared-secrets annotation its pod template carries ("" for none).
    secrets: str
    # Every pod runs the current pod template.
    rolled_out: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "secrets": self.secrets,
            "rolled_out": self.rolled_out,
        }


@dataclass
class ApplyResult:
    """What one pass changed, what the cluster assigned, and what failed."""

    changes: list[str] = field(default_factory=list)
    # Service name -> ClusterIP, for every Service the namespace has.
    cluster_ips: dict[str, str] = field(default_factory=dict)
    # Service name -> its workload, for services that have one.
    workloads: dict[str, WorkloadStatus] = field(default_factory=dict)
    errors: list[ClusterError] = field(default_factory=list)
    # False when the pass wrote without reading: ``cluster_ips`` then names only the Services
    # it wrote, and ``workloads`` is empty unless ``all_workloads``.
    verified: bool = True
    all_workloads: bool = True


class Backend(Protocol):
    name: str

    def apply(self, desired: DesiredState) -> ApplyResult:
        """Make the namespace hold exactly the desired objects among those this app manages.

        Writes only what differs, prunes managed objects that are no longer desired, and sets
        what we own on the services' workloads. Raises ``ClusterError`` when the current state
        cannot be read; errors writing single objects are collected in the result so one bad
        object does not hold the others back.
        """
        ...

    def apply_changes(self, desired: DesiredState, changes: Changes) -> ApplyResult:
        """Write only what ``changes`` names, trusting the record it came from for the rest.

        Reads nothing, except the workloads when what we own on them changed. Errors are as
        for ``apply``.
        """
        ...

    def managed_namespaces(self) -> set[str]:
        """The names of every namespace this app manages (labelled as ours), in one read."""
        ...

    def delete_namespace(self, namespace: str) -> bool:
        """Delete one namespace this app manages, with everything in it.

        False if there is nothing of ours to delete: no such namespace, one being deleted
        already, or one without our label (never touched). Raises ``ClusterError``.
        """
        ...

    # -- "Test connection": a probe pod in the project's namespace ----------------------------

    def start_probe(self, pod: KubeObject) -> None:
        """Create the probe pod (``networking.cluster.probe.probe_pod``); one that exists
        already is left as it is. ``PermanentClusterError`` where no pod can run."""
        ...

    def probe_outcome(self, namespace: str, name: str) -> PodOutcome | None:
        """How the probe pod stands; None if it is gone."""
        ...

    def delete_probe(self, namespace: str, name: str) -> None:
        """Delete the probe pod; gone already is fine."""
        ...

    def ready_endpoints(self, namespace: str, service: str) -> ReadyEndpoints:
        """How many of the Service's endpoints (its pods) are ready."""
        ...


def matches(desired: KubeObject, live: KubeObject) -> bool:
    """Whether the live object already has every field we apply.

    Identity (apiVersion, kind, name) is compared by the caller: list responses carry no
    apiVersion or kind on their items.
    """
    metadata = desired.get("metadata", {})
    ours = {
        "metadata": {key: metadata[key] for key in ("labels", "annotations") if key in metadata},
        **{key: value for key, value in desired.items() if key not in IDENTITY_FIELDS},
    }
    return is_subset(ours, live)


IDENTITY_FIELDS = frozenset({"apiVersion", "kind", "metadata"})
# Maps whose every key matters: an extra key in a selector selects fewer pods or namespaces,
# an extra key in a Secret's data is a value still handed out.
EXACT_FIELDS = frozenset({"data", "selector", "matchLabels"})


def is_subset(desired: Any, live: Any) -> bool:
    """True when every field we set has the same value in the live object.

    Fields the cluster adds (defaults, status, other managers' fields) are ignored; lists must
    match element by element, so a removed or added rule counts as a difference.
    """
    if desired == {}:
        # An empty selector means "everything": a live one that selects less differs.
        return live in ({}, None)
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live
            and (live[key] == value if key in EXACT_FIELDS else is_subset(value, live[key]))
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(is_subset(d, x) for d, x in zip(desired, live, strict=True))
        )
    return bool(desired == live)
