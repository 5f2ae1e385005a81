"""Whether a project's objects in the cluster (as a cache sees them) match its desired state.

Read-only and without I/O: the watcher calls it with the informers' cache whenever a watched
object of the project changes, and enqueues a reconcile only when something differs. What we
write ourselves comes back as watch events too; those compare equal and cost nothing more.
The Secret's values are never seen here (its watch is of metadata only): it differs when it
is missing, or when another field manager wrote its data (a hand edit); a pass then reads it by
name and puts it right.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from networking.cluster.backends import WorkloadStatus, matches
from networking.cluster.desired import (
    SHARED_SECRETS,
    WORKLOAD_KINDS,
    DesiredState,
    KubeObject,
    WorkloadSpec,
)
from networking.cluster.informer import SECRET_INFORMERS, WRITTEN_BY
from networking.cluster.kube import cluster_ip, keep_laggard, workload_matches, workload_status

COMPARED_KINDS = ("Service", "NetworkPolicy")


class Difference(str):
    """One thing a pass would change, in words, and the object it is about.

    Still a ``str`` (what the watcher logs and what tests compare), so callers that only read
    the words need not change. ``kind`` and ``name`` say which cluster object differs; ``kind``
    is empty for what only the database lacks (a ClusterIP or a workload status to record),
    which is no difference in the cluster.
    """

    kind: str
    name: str
    # Someone else wrote it (its content cannot be seen: a Secret's field managers say so).
    edited: bool

    def __new__(
        cls, text: str, *, kind: str = "", name: str = "", edited: bool = False
    ) -> Difference:
        difference = super().__new__(cls, text)
        difference.kind = kind
        difference.name = name
        difference.edited = edited
        return difference

    @property
    def in_cluster(self) -> bool:
        """Whether a cluster object differs from what is desired (not only a record)."""
        return bool(self.kind)

    def record(self) -> dict[str, str]:
        """What ``Project.report_drift`` keeps of it."""
        return {"kind": self.kind, "name": self.name, "text": str(self)}


def _differs(kind: str, name: str, how: str) -> Difference:
    return Difference(f"{kind} {name} {how}", kind=kind, name=name)


def _secret_differences(
    wanted: Mapping[str, KubeObject], cached: Mapping[str, KubeObject]
) -> list[Difference]:
    found = []
    for name in wanted:
        current = cached.get(name)
        if current is None:
            found.append(_differs("Secret", name, "is missing"))
        elif current.get(WRITTEN_BY):
            writers = ", ".join(current[WRITTEN_BY])
            found.append(
                Difference(
                    f"Secret {name} was edited by someone else ({writers})",
                    kind="Secret",
                    name=name,
                    edited=True,
                )
            )
    found.extend(
        _differs("Secret", name, "is not desired") for name in sorted(set(cached) - set(wanted))
    )
    return found


def differences(
    desired: DesiredState,
    live: Mapping[str, Mapping[str, KubeObject]],
    *,
    namespace_object: KubeObject | None,
    recorded: Mapping[str, tuple[str | None, dict[str, Any]]],
    workload_label: str,
    services: Collection[str] | None = None,
) -> list[Difference]:
    """What a reconcile pass would change, in words; empty when nothing differs.

    ``live`` maps a kind (Service, NetworkPolicy, Deployment, StatefulSet) to the cached
    objects of the namespace by name; ``recorded`` maps each service's name to the ClusterIP
    and workload status the database holds for it.

    ``services``: compare only these services' Services and workloads (``desired`` and
    ``recorded`` need hold no others), not the namespace and its policies. What an event about
    one Service or workload calls for: its cost does not grow with the project's size.
    """
    found: list[Difference] = []
    name = desired.namespace
    if namespace_object is None:
        return [_differs("Namespace", name, "is missing")]
    kinds: tuple[str, ...] = COMPARED_KINDS
    if services is None:
        if not matches(desired.objects[("Namespace", name)], namespace_object):
            found.append(_differs("Namespace", name, "differs"))
    else:
        kinds = ("Service",)

    def in_scope(objects: Mapping[str, KubeObject]) -> Mapping[str, KubeObject]:
        if services is None:
            return objects
        return {key: obj for key, obj in objects.items() if key in services}

    # Each of our Secrets is watched by an informer of its own (a watch names one Secret, and
    # RBAC lets the worker see no other): compared once that one has listed.
    # (Mutual TLS's is judged only where the project has it: a full pass reads it only there.)
    watched = {name for name, key in SECRET_INFORMERS.items() if key in live}
    if services is None and watched:
        wanted_secrets = {
            name: obj for name, obj in desired.of_kind("Secret").items() if name in watched
        }
        judged = [
            key
            for secret, key in SECRET_INFORMERS.items()
            if secret in watched and (secret == SHARED_SECRETS or secret in wanted_secrets)
        ]
        cached_secrets = {name: obj for key in judged for name, obj in live[key].items()}
        found.extend(_secret_differences(wanted_secrets, cached_secrets))
    for kind in kinds:
        wanted = in_scope(desired.of_kind(kind))
        cached = in_scope(live.get(kind, {}))
        for object_name, obj in wanted.items():
            current = cached.get(object_name)
            if current is None:
                found.append(_differs(kind, object_name, "is missing"))
            elif not matches(obj, current):
                found.append(_differs(kind, object_name, "differs"))
        extra = sorted(set(cached) - set(wanted))
        found.extend(_differs(kind, object_name, "is not desired") for object_name in extra)
    for service, obj in in_scope(live.get("Service", {})).items():
        if service in recorded and recorded[service][0] != cluster_ip(obj):
            found.append(Difference(f"ClusterIP of {service} to record"))
    statuses: dict[str, WorkloadStatus] = {}
    for kind in WORKLOAD_KINDS:
        for workload_name, workload in live.get(kind, {}).items():
            service = workload["metadata"].get("labels", {}).get(workload_label, "")
            if services is not None and service not in services:
                continue
            if not workload_matches(workload, desired.workloads.get(service, WorkloadSpec())):
                found.append(_differs(kind, workload_name, "lacks what we own on it"))
            keep_laggard(statuses, service, workload_status(kind, workload_name, workload))
    for service, (_, workload) in recorded.items():
        if services is not None and service not in services:
            continue
        seen = statuses.get(service)
        if workload != (seen.as_dict() if seen is not None else {}):
            found.append(Difference(f"workload status of {service} to record"))
    return found
