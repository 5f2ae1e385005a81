"""The Kubernetes backend: the only module that talks to the Kubernetes API.

Reads are one GET or LIST per kind (the count does not grow with the number of services);
writes are server-side apply under our own field manager, so we own exactly the fields we set
and never fight the platform's deploy system over the rest. Every failure comes out as a
``ClusterError`` that says whether retrying can help.

Independent requests of a pass run side by side, at most ``KUBE_APPLY_CONCURRENCY`` at once
(a new project of 50 services is 50 applies: in sequence, 50 round trips): the namespace
first, since nothing else can be written without it; then every object that differs, of
every kind; then every deletion; then the workloads. An API server that is rate-limiting
(API Priority and Fairness answers 429 with ``Retry-After``) is waited for as it asks, up to
``KUBE_RETRY_AFTER_MAX_SECONDS`` per request; a longer wait is left to the task's retry, which
waits at least that long.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
import yaml
from django.conf import settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

from networking.cluster.backends import (
    EXACT_FIELDS,
    FIELD_MANAGER,
    ApplyResult,
    WorkloadStatus,
    is_subset,
    matches,
)
from networking.cluster.desired import (
    KINDS,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REFERENCES_ANNOTATION,
    SECRETS_ANNOTATION,
    SHARED_SECRETS,
    TLS_SECRET,
    TLS_VOLUME,
    WORKLOAD_KINDS,
    Changes,
    DesiredState,
    KubeObject,
    WorkloadSpec,
    managed_selector,
)
from networking.cluster.errors import (
    ClusterError,
    PermanentClusterError,
    TransientClusterError,
    error_for_status,
)
from networking.cluster.probe import PodOutcome, ReadyEndpoints, pod_outcome, ready_endpoints

ApiClient = client.ApiClient
T = TypeVar("T")
# How many times one request waits out a 429's Retry-After before giving up to the task.
RATE_LIMIT_RETRIES = 3
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
# What a failed list or watch raises: the API's answer, the connection, or a torn body.
WATCH_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError)


def list_method(api_client: client.ApiClient, api: str, method: str) -> Callable[..., Any]:
    """A list method of the typed client ("core", "networking" or "apps"): the informers'
    LIST and WATCH (``watch=True``) both go through it."""
    apis = {
        "core": client.CoreV1Api,
        "networking": client.NetworkingV1Api,
        "apps": client.AppsV1Api,
    }
    return getattr(apis[api](api_client), method)  # type: ignore[no-any-return]


def response_lines(response: Any) -> Any:
    """The lines of a streamed watch response, as they arrive."""
    return iter_resp_lines(response)


MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"


def _status_detail(error: ApiException) -> str:
    """The ``message`` of a Kubernetes Status body, or the HTTP reason."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(error.reason or "no details")


def api_client() -> client.ApiClient:
    """The process's API client for the configured cluster (its connections are reused)."""
    return _api_client(settings.KUBECONFIG, settings.KUBE_CONTEXT)


@functools.cache
def _api_client(kubeconfig: str, context: str) -> client.ApiClient:
    """From ``kubeconfig`` if given, else in-cluster config, else ~/.kube/config."""
    configuration = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(
                config_file=kubeconfig, context=context or None, client_configuration=configuration
            )
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except ConfigException:
                config.load_kube_config(context=context or None, client_configuration=configuration)
    except (ConfigException, OSError, yaml.YAMLError) as error:
        # The error names the kubeconfig's path or its files: for the log, not the page.
        raise PermanentClusterError(
            "The worker has no usable cluster credentials. Set KUBECONFIG, or run it inside "
            "the cluster; its log says what was wrong.",
            detail=str(error),
        ) from None
    # Retrying is the task's job (with backoff); urllib3 must not retry silently underneath.
    configuration.retries = False
    # A connection for each request a pass makes at once, and one for the watcher's side.
    configuration.connection_pool_maxsize = max(
        configuration.connection_pool_maxsize, settings.KUBE_APPLY_CONCURRENCY + 2
    )
    return client.ApiClient(configuration)


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's threads for a pass's requests (they touch no database)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube-apply")


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (the API server sends whole seconds), if it is one."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86400 else None


@dataclass(frozen=True)
class _Kind:
    """How to read, apply and delete one kind of object."""

    read: Callable[..., Any]
    apply: Callable[..., Any]
    delete: Callable[..., Any] | None = None
    namespaced: bool = True
    # Listed by label, or (Secret: we may not list Secrets) read by their known names.
    by_name: tuple[str, ...] = ()


def rolled_out(kind: str, workload: KubeObject) -> bool:
    """Whether every pod of the workload runs its current pod template."""
    spec, status = workload.get("spec", {}), workload.get("status") or {}
    replicas = spec.get("replicas", 1)
    if status.get("observedGeneration", 0) < workload["metadata"].get("generation", 0):
        return False
    if kind == "StatefulSet":
        return bool(
            status.get("updateRevision") == status.get("currentRevision")
            and status.get("readyReplicas", 0) == replicas
        )
    return bool(
        status.get("updatedReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
    )


def _workload_patch(workload: KubeObject, kind: str, spec: WorkloadSpec) -> KubeObject:
    """The fields we own on a workload. Owning nothing: an empty apply, so SSA drops ours."""
    patch: KubeObject = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": workload["metadata"]["name"],
            "namespace": workload["metadata"]["namespace"],
        },
    }
    if spec.owned:
        containers = workload["spec"]["template"]["spec"]["containers"]
        annotations = {}
        if spec.annotation is not None:
            annotations[SECRETS_ANNOTATION] = spec.annotation
        if spec.references is not None:
            annotations[REFERENCES_ANNOTATION] = spec.references
        mount = spec.tls_mount()
        template_spec: KubeObject = {
            "containers": [
                {
                    "name": container["name"],
                    "env": list(spec.env),
                    **({"volumeMounts": [mount]} if mount is not None else {}),
                }
                for container in containers
            ]
        }
        if (volume := spec.tls_volume()) is not None:
            template_spec["volumes"] = [volume]
        patch["spec"] = {
            "template": {"metadata": {"annotations": annotations}, "spec": template_spec}
        }
    return patch


def merge_patch(desired: KubeObject, live: Any) -> KubeObject:
    """A JSON merge patch (RFC 7386) giving ``live`` exactly the values of ``desired``.

    Maps we own whole (``EXACT_FIELDS``, and an empty map, which selects everything) lose the
    keys we do not set; lists and scalars are replaced; other maps (labels, annotations) keep
    what others set there.
    """
    patch: KubeObject = {}
    for key, value in desired.items():
        current = live.get(key) if isinstance(live, dict) else None
        if isinstance(value, dict) and (key in EXACT_FIELDS or value == {}):
            patch[key] = dict(value)
            if isinstance(current, dict):
                patch[key].update((extra, None) for extra in current.keys() - value.keys())
        elif isinstance(value, dict):
            patch[key] = merge_patch(value, current)
        else:
            patch[key] = value
    return patch


def workload_matches(workload: KubeObject, spec: WorkloadSpec) -> bool:
    template = workload["spec"]["template"]
    live = template.get("metadata", {}).get("annotations") or {}
    if live.get(SECRETS_ANNOTATION) != spec.annotation:
        return False
    if live.get(REFERENCES_ANNOTATION) != spec.references:
        return False
    wanted = {entry["name"]: entry for entry in spec.env}
    mount, volume = spec.tls_mount(), spec.tls_volume()
    for container in template["spec"]["containers"]:
        live_env = {entry["name"]: entry for entry in container.get("env") or []}
        if any(
            name not in live_env or not is_subset(entry, live_env[name])
            for name, entry in wanted.items()
        ):
            return False
        if mount is not None and not any(
            is_subset(mount, live) for live in container.get("volumeMounts") or []
        ):
            return False
    volumes = template["spec"].get("volumes") or []
    if volume is None:
        # No mutual TLS here (its service deleted, or the workload relabelled): ours, the
        # Secret's volume, must go, or its pods would wait for files that are gone.
        return not any(_our_tls_volume(live) for live in volumes)
    return any(is_subset(volume, live) for live in volumes)


def _our_tls_volume(volume: KubeObject) -> bool:
    return bool(
        volume.get("name") == TLS_VOLUME
        and (volume.get("secret") or {}).get("secretName") == TLS_SECRET
    )


def cluster_ip(service: KubeObject) -> str | None:
    """The ClusterIP the cluster assigned to a Service, if it has one yet."""
    value = service.get("spec", {}).get("clusterIP")
    return None if value in (None, "", "None") else str(value)


def workload_status(kind: str, name: str, workload: KubeObject) -> WorkloadStatus:
    annotations = workload["spec"]["template"].get("metadata", {}).get("annotations")
    return WorkloadStatus(
        kind=kind,
        name=name,
        secrets=(annotations or {}).get(SECRETS_ANNOTATION, ""),
        rolled_out=rolled_out(kind, workload),
    )


def keep_laggard(statuses: dict[str, WorkloadStatus], service: str, status: WorkloadStatus) -> None:
    """Record a service's workload; with several, the one not rolled out is what counts."""
    if service not in statuses or not status.rolled_out:
        statuses[service] = status


class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        timeout: float = 10.0,
        concurrency: int = 1,
        retry_after_max: float = 10.0,
    ) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.concurrency = concurrency
        self.retry_after_max = retry_after_max
        core = self.core = client.CoreV1Api(api_client)
        networking = client.NetworkingV1Api(api_client)
        apps = client.AppsV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.kinds: dict[str, _Kind] = {
            "Namespace": _Kind(
                read=core.read_namespace,
                apply=core.patch_namespace,
                namespaced=False,
            ),
            "Secret": _Kind(
                read=core.read_namespaced_secret,
                apply=core.patch_namespaced_secret,
                delete=core.delete_namespaced_secret,
                by_name=(SHARED_SECRETS, TLS_SECRET),
            ),
            "Service": _Kind(
                read=core.list_namespaced_service,
                apply=core.patch_namespaced_service,
                delete=core.delete_namespaced_service,
            ),
            "NetworkPolicy": _Kind(
                read=networking.list_namespaced_network_policy,
                apply=networking.patch_namespaced_network_policy,
                delete=networking.delete_namespaced_network_policy,
            ),
            "Deployment": _Kind(
                read=apps.list_namespaced_deployment, apply=apps.patch_namespaced_deployment
            ),
            "StatefulSet": _Kind(
                read=apps.list_namespaced_stateful_set, apply=apps.patch_namespaced_stateful_set
            ),
        }

    @classmethod
    def from_settings(cls) -> KubernetesBackend:
        return cls(
            api_client(),
            timeout=settings.KUBE_REQUEST_TIMEOUT,
            concurrency=settings.KUBE_APPLY_CONCURRENCY,
            retry_after_max=settings.KUBE_RETRY_AFTER_MAX_SECONDS,
        )

    # -- one HTTP call each, errors translated ------------------------------------------------

    def _call(self, action: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                response = method(
                    *args, _preload_content=False, _request_timeout=self.timeout, **kwargs
                )
            except ApiException as error:
                status = int(error.status or 0)
                wait = retry_after_seconds((error.headers or {}).get("Retry-After"))
                if (
                    status == 429
                    and wait is not None
                    and wait <= self.retry_after_max
                    and attempt < RATE_LIMIT_RETRIES
                ):
                    time.sleep(wait)  # as the API server asks: it is shedding load
                    continue
                raise error_for_status(
                    status, action, _status_detail(error), retry_after=wait
                ) from None
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise TransientClusterError(
                    f"Could not reach the cluster's API server during {action}. "
                    "The worker tries again by itself, and Retry tries now.",
                    detail=f"{type(error).__name__}: {error}",
                ) from None
            try:
                data = response.data
                return json.loads(data) if data else None
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                # The answer was cut off on its way back (a reset, a truncated body).
                raise TransientClusterError(
                    f"The cluster's answer to {action} was cut off. "
                    "The worker tries again by itself, and Retry tries now.",
                    detail=f"{type(error).__name__}: {error}",
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _side_by_side(self, jobs: Sequence[Callable[[], T]]) -> list[T | ClusterError]:
        """Run independent requests at most ``concurrency`` at once; each one's result or
        ``ClusterError``, in the order given."""
        if self.concurrency <= 1 or len(jobs) <= 1:
            results: list[T | ClusterError] = []
            for job in jobs:
                try:
                    results.append(job())
                except ClusterError as error:
                    results.append(error)
            return results
        futures = [_pool(self.concurrency).submit(job) for job in jobs]
        done: list[T | ClusterError] = []
        try:
            for future in futures:
                try:
                    done.append(future.result())
                except ClusterError as error:
                    done.append(error)
        except BaseException:
            # The pass is failing: none of its requests may land after it (and after the next
            # pass): cancel those not started and wait for those under way.
            for future in futures:
                future.cancel()
            wait(futures)
            raise
        return done

    def _read_all(self, jobs: dict[str, Callable[[], T]]) -> dict[str, T]:
        """Reads side by side; the first failure is raised (a pass cannot judge without them)."""
        results = self._side_by_side(list(jobs.values()))
        for result in results:
            if isinstance(result, ClusterError):
                raise result
        return dict(zip(jobs, results, strict=True))  # type: ignore[arg-type]

    def _read(self, kind: str, name: str, namespace: str | None = None) -> KubeObject | None:
        """One object by name, or None if it does not exist."""
        args = [name] if namespace is None else [name, namespace]
        try:
            result: KubeObject = self._call(f"reading {kind} {name}", self.kinds[kind].read, *args)
        except ClusterError as error:
            if error.status == 404:
                return None
            raise
        return result

    def _list(
        self, kind: str, namespace: str, selector: str, wanted: Collection[str] = ()
    ) -> dict[str, KubeObject]:
        """Every object of ``kind`` we manage in ``namespace``. Secrets, read by name: the
        first of their names always (a leftover is found and deleted), the others when
        ``wanted`` (mutual TLS's, in a project that has it: no read of a 404 otherwise)."""
        by_name = self.kinds[kind].by_name
        if by_name:
            by_name = tuple(
                name for index, name in enumerate(by_name) if index == 0 or name in wanted
            )
            read = self._read_all(
                {name: functools.partial(self._read, kind, name, namespace) for name in by_name}
            )
            return {name: found for name, found in read.items() if found is not None}
        body = self._call(
            f"listing {kind}s in {namespace}",
            self.kinds[kind].read,
            namespace,
            label_selector=selector,
        )
        return {item["metadata"]["name"]: item for item in body.get("items", [])}

    def _apply(self, kind: str, obj: KubeObject) -> KubeObject:
        name = obj["metadata"]["name"]
        args = [name, obj["metadata"]["namespace"]] if self.kinds[kind].namespaced else [name]
        result: KubeObject = self._call(
            f"applying {kind} {name}",
            self.kinds[kind].apply,
            *args,
            obj,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_CONTENT_TYPE,
        )
        if kind in KINDS and not matches(obj, result):
            # A server-side apply removes only what we set before: a key someone else added
            # to a map we own whole (a selector, a policy's pod selector, the Secret's data)
            # survives it. A merge patch that names that key with null takes it out.
            result = self._call(
                f"repairing {kind} {name}",
                self.kinds[kind].apply,
                *args,
                merge_patch(obj, result),
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH_CONTENT_TYPE,
            )
        return result

    def _delete(self, kind: str, name: str, namespace: str) -> None:
        delete = self.kinds[kind].delete
        assert delete is not None
        try:
            self._call(f"deleting {kind} {name}", delete, name, namespace)
        except ClusterError as error:
            if error.status != 404:  # already gone is what we wanted
                raise

    # -- namespaces of projects that are gone ------------------------------------------------

    def managed_namespaces(self) -> set[str]:
        body = self._call(
            "listing namespaces", self.core.list_namespace, label_selector=managed_selector()
        )
        return {item["metadata"]["name"] for item in body.get("items", [])}

    def delete_namespace(self, namespace: str) -> bool:
        live = self._read("Namespace", namespace)
        if live is None or live["metadata"].get("deletionTimestamp"):
            return False
        labels = live["metadata"].get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
            return False  # someone else's namespace that happens to have the name
        try:
            # Only the namespace just read: one recreated since under the same name is not
            # the one we judged.
            self._call(
                f"deleting Namespace {namespace}",
                self.core.delete_namespace,
                namespace,
                body={"preconditions": {"uid": live["metadata"]["uid"]}},
            )
        except ClusterError as error:
            if error.status == 404:
                return False
            raise
        return True

    # -- the reconcile pass ------------------------------------------------------------------

    def apply(self, desired: DesiredState) -> ApplyResult:
        result = ApplyResult()
        namespace, objects = desired.namespace, desired.objects
        desired_namespace = objects[("Namespace", namespace)]
        live_namespace = self._read("Namespace", namespace)
        if live_namespace is None or not matches(desired_namespace, live_namespace):
            # Nothing else can be written until the namespace exists: let errors propagate.
            self._apply("Namespace", desired_namespace)
            result.changes.append(
                f"{'created' if live_namespace is None else 'updated'} Namespace {namespace}"
            )
        exists = live_namespace is not None
        selector = managed_selector()
        live: dict[str, dict[str, KubeObject]] = (
            self._read_all(
                {
                    kind: functools.partial(
                        self._list, kind, namespace, selector, wanted=desired.of_kind(kind)
                    )
                    for kind in KINDS[1:]
                }
            )
            if exists
            else {kind: {} for kind in KINDS[1:]}
        )
        differing = [
            (kind, name, obj, live[kind].get(name))
            for (kind, name), obj in objects.items()
            if kind != "Namespace"
            and not (live[kind].get(name) is not None and matches(obj, live[kind][name]))
        ]
        differing.sort(key=lambda job: (KINDS.index(job[0]), job[1]))
        # Workloads are not pointed at a Secret whose write failed (a key they would mount or
        # reference may be missing): the retry does both.
        secret_failed = False
        applied = self._side_by_side(
            [functools.partial(self._apply, kind, obj) for kind, _, obj, _ in differing]
        )
        for (kind, name, _, current), outcome in zip(differing, applied, strict=True):
            if isinstance(outcome, ClusterError):
                result.errors.append(outcome)
                secret_failed = secret_failed or kind == "Secret"
                continue
            live[kind][name] = outcome
            result.changes.append(f"{'updated' if current else 'created'} {kind} {name}")
        unwanted = [
            (kind, name)
            for kind in KINDS[1:]
            for name in sorted(set(live[kind]) - {n for k, n in objects if k == kind})
        ]
        deleted = self._side_by_side(
            [functools.partial(self._delete, kind, name, namespace) for kind, name in unwanted]
        )
        for (kind, name), failed in zip(unwanted, deleted, strict=True):
            if isinstance(failed, ClusterError):
                result.errors.append(failed)
                continue
            del live[kind][name]
            result.changes.append(f"deleted {kind} {name}")
        assigned = {name: cluster_ip(obj) for name, obj in live["Service"].items()}
        result.cluster_ips = {name: ip for name, ip in assigned.items() if ip}
        if exists and not secret_failed:
            self._apply_workloads(desired, result)
        return result

    def apply_changes(self, desired: DesiredState, changes: Changes) -> ApplyResult:
        """Write what changed since the last pass's record; delete what it no longer wants.

        The cluster is not read: the record is trusted because the watcher distrusts it as soon
        as it sees anything else change there. Only when what we own on workloads changed are
        they listed, since patching one needs its containers' names.
        """
        result = ApplyResult(verified=False, all_workloads=changes.workloads)
        # Objects of the kinds applied here (what we own on workloads is set below).
        written = sorted(
            (key for key in changes.created | changes.updated if key[0] in KINDS),
            key=lambda key: (KINDS.index(key[0]), key[1]),
        )
        if written and written[0][0] == "Namespace":
            # Nothing else can be written without it: its error propagates.
            self._apply("Namespace", desired.objects[written[0]])
            verb = "created" if written[0] in changes.created else "updated"
            result.changes.append(f"{verb} Namespace {written[0][1]}")
            written = written[1:]
        applied = self._side_by_side(
            [
                functools.partial(self._apply, kind, desired.objects[(kind, name)])
                for kind, name in written
            ]
        )
        secret_failed = False
        for (kind, name), outcome in zip(written, applied, strict=True):
            if isinstance(outcome, ClusterError):
                result.errors.append(outcome)
                secret_failed = secret_failed or kind == "Secret"
                continue
            verb = "created" if (kind, name) in changes.created else "updated"
            result.changes.append(f"{verb} {kind} {name}")
            if kind == "Service" and (assigned := cluster_ip(outcome)):
                result.cluster_ips[name] = assigned
        # A project's namespace goes with the project (orphans.py), never here.
        removed = sorted(
            (key for key in changes.removed if key[0] in KINDS[1:]),
            key=lambda key: (KINDS.index(key[0]), key[1]),
        )
        deleted = self._side_by_side(
            [
                functools.partial(self._delete, kind, name, desired.namespace)
                for kind, name in removed
            ]
        )
        for (kind, name), failed in zip(removed, deleted, strict=True):
            if isinstance(failed, ClusterError):
                result.errors.append(failed)
                continue
            result.changes.append(f"deleted {kind} {name}")
        if changes.workloads and not secret_failed:
            self._apply_workloads(desired, result)
        return result

    def _apply_workloads(self, desired: DesiredState, result: ApplyResult) -> None:
        """Set what we own on each service's workloads, and report how their rollouts stand."""
        label = settings.WORKLOAD_LABEL
        listed = self._read_all(
            {
                kind: functools.partial(self._list, kind, desired.namespace, label)
                for kind in WORKLOAD_KINDS
            }
        )
        found = [
            (kind, name, workload, workload["metadata"].get("labels", {}).get(label, ""))
            for kind in WORKLOAD_KINDS
            for name, workload in listed[kind].items()
        ]
        stale = [
            (kind, name, workload, service)
            for kind, name, workload, service in found
            if not workload_matches(workload, desired.workloads.get(service, WorkloadSpec()))
        ]
        patched = self._side_by_side(
            [
                functools.partial(
                    self._apply,
                    kind,
                    _workload_patch(workload, kind, desired.workloads.get(service, WorkloadSpec())),
                )
                for kind, _, workload, service in stale
            ]
        )
        now: dict[tuple[str, str], KubeObject | None] = {}
        for (kind, name, _, _), outcome in zip(stale, patched, strict=True):
            if isinstance(outcome, ClusterError):
                result.errors.append(outcome)
                now[(kind, name)] = None
                continue
            result.changes.append(f"restarted {kind} {name} for shared secrets")
            now[(kind, name)] = outcome
        for kind, name, workload, service in found:
            current = now.get((kind, name), workload)
            if current is None:
                continue  # its patch failed: reported above, as before
            keep_laggard(result.workloads, service, workload_status(kind, name, current))

    # -- "Test connection" ---------------------------------------------------------------------

    def start_probe(self, pod: KubeObject) -> None:
        metadata = pod["metadata"]
        try:
            self._call(
                f"starting the connection probe in {metadata['namespace']}",
                self.core.create_namespaced_pod,
                metadata["namespace"],
                pod,
            )
        except ClusterError as error:
            if error.status != 409:  # a retried start finds its pod there already
                raise

    def probe_outcome(self, namespace: str, name: str) -> PodOutcome | None:
        try:
            pod = self._call(
                "reading the connection probe", self.core.read_namespaced_pod, name, namespace
            )
        except ClusterError as error:
            if error.status == 404:
                return None
            raise
        return pod_outcome(pod)

    def delete_probe(self, namespace: str, name: str) -> None:
        try:
            self._call(
                "deleting the connection probe",
                self.core.delete_namespaced_pod,
                name,
                namespace,
                grace_period_seconds=0,
            )
        except ClusterError as error:
            if error.status != 404:
                raise

    def ready_endpoints(self, namespace: str, service: str) -> ReadyEndpoints:
        body = self._call(
            f"listing the endpoints of {service}",
            self.discovery.list_namespaced_endpoint_slice,
            namespace,
            label_selector=f"kubernetes.io/service-name={service}",
        )
        return ready_endpoints(body.get("items", []))
