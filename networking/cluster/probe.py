"""The connection probe's pod: what "Test connection" runs in a project's namespace.

A pure function of its inputs, like the desired state: the backends create, read and delete
the pod. The pod is as small a thing as a pod can be: one unprivileged container of the probe
image (``deploy/probe``), no service-account token, no volumes, no environment, a deadline,
and labels that mark it ours (``deploy/rbac.yaml``'s admission policy lets the worker create
nothing else). Being in the project's namespace, it is let through by the project's own
isolation policy, exactly as the project's services are.
"""

from __future__ import annotations

from dataclasses import dataclass

from networking.cluster.desired import KubeObject, managed_labels

COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "connection-test"
# The probe gives up on each step after this; the pod is stopped after DEADLINE_SECONDS.
STEP_TIMEOUT_SECONDS = 5
DEADLINE_SECONDS = 60


@dataclass(frozen=True)
class ProbeSettings:
    image: str
    pull_policy: str = "IfNotPresent"


@dataclass(frozen=True)
class PodOutcome:
    """How the probe pod stands: finished (with its report), or why it has not started."""

    finished: bool
    # The probe's JSON report, from the container's termination message ("" if none).
    message: str = ""
    exit_code: int | None = None
    # Why the container waits (ErrImagePull, CrashLoopBackOff...), or the pod's phase.
    waiting_reason: str = ""


@dataclass(frozen=True)
class ReadyEndpoints:
    """The Service's endpoints as its EndpointSlices list them."""

    ready: int
    not_ready: int


def pod_name(test_id: int) -> str:
    return f"stackblaze-connection-test-{test_id}"


def probe_pod(
    *,
    namespace: str,
    project_uid: str,
    test_id: int,
    hostname: str,
    ports: list[int],
    settings: ProbeSettings,
) -> KubeObject:
    args = ["-host", hostname, "-timeout", f"{STEP_TIMEOUT_SECONDS}s"]
    for port in ports:
        args += ["-port", str(port)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(test_id),
            "namespace": namespace,
            "labels": managed_labels(project_uid, **{COMPONENT_LABEL: COMPONENT}),
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65534,
                "runAsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": settings.image,
                    "imagePullPolicy": settings.pull_policy,
                    "args": args,
                    "terminationMessagePolicy": "File",
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "16Mi"},
                        "limits": {"cpu": "100m", "memory": "32Mi"},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def pod_outcome(pod: KubeObject) -> PodOutcome:
    """Read the probe pod's status: its report once the container has terminated."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if "terminated" in state:
            terminated = state["terminated"]
            return PodOutcome(
                finished=True,
                message=str(terminated.get("message") or ""),
                exit_code=terminated.get("exitCode"),
            )
        if "waiting" in state:
            return PodOutcome(finished=False, waiting_reason=str(state["waiting"].get("reason")))
    if status.get("phase") == "Failed":  # stopped before the container ever ran
        return PodOutcome(finished=True, waiting_reason=str(status.get("reason") or "Failed"))
    return PodOutcome(finished=False, waiting_reason=str(status.get("phase") or "Pending"))


def ready_endpoints(slices: list[KubeObject]) -> ReadyEndpoints:
    ready = not_ready = 0
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("ready", True):
                ready += 1
            else:
                not_ready += 1
    return ReadyEndpoints(ready=ready, not_ready=not_ready)
