"""The Kubernetes backend: the only module that talks to the Kubernetes API.

Reads are one GET or LIST per kind (the count does not grow with the number of services);
writes are server-side apply under our own field manager, so we own exactly the fields we set
and never fight the platform's deploy system over the rest. Every failure comes out as a
``ClusterError`` that says whether retrying can help.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from django.conf import settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from networking.cluster.backends import FIELD_MANAGER, ApplyResult, matches
from networking.cluster.desired import KINDS, KubeObject, managed_selector
from networking.cluster.errors import (
    ClusterError,
    PermanentClusterError,
    TransientClusterError,
    error_for_status,
)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


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
    except (ConfigException, OSError) as error:
        raise PermanentClusterError(
            f"No usable cluster credentials: {error}. Set KUBECONFIG, or run inside the cluster."
        ) from None
    # Retrying is the task's job (with backoff); urllib3 must not retry silently underneath.
    configuration.retries = False
    return client.ApiClient(configuration)


@dataclass(frozen=True)
class _Kind:
    """How to read, apply and delete one kind of object."""

    list: Callable[..., Any] | None
    apply: Callable[..., Any]
    delete: Callable[..., Any]
    namespaced: bool = True


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, api_client: client.ApiClient, *, timeout: float = 10.0) -> None:
        self.api_client = api_client
        self.timeout = timeout
        core = client.CoreV1Api(api_client)
        networking = client.NetworkingV1Api(api_client)
        self.core = core
        self.kinds: dict[str, _Kind] = {
            "Namespace": _Kind(
                list=None,
                apply=core.patch_namespace,
                delete=core.delete_namespace,
                namespaced=False,
            ),
            "Service": _Kind(
                list=core.list_namespaced_service,
                apply=core.patch_namespaced_service,
                delete=core.delete_namespaced_service,
            ),
            "NetworkPolicy": _Kind(
                list=networking.list_namespaced_network_policy,
                apply=networking.patch_namespaced_network_policy,
                delete=networking.delete_namespaced_network_policy,
            ),
        }

    @classmethod
    def from_settings(cls) -> KubernetesBackend:
        return cls(api_client(), timeout=settings.KUBE_REQUEST_TIMEOUT)

    # -- one HTTP call each, errors translated ------------------------------------------------

    def _call(self, action: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            response = method(
                *args, _preload_content=False, _request_timeout=self.timeout, **kwargs
            )
        except ApiException as error:
            raise error_for_status(int(error.status or 0), action, _status_detail(error)) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise TransientClusterError(
                f"Could not reach the cluster's API server during {action}: {type(error).__name__}."
            ) from None
        data = response.data
        return json.loads(data) if data else None

    def _read_namespace(self, namespace: str) -> KubeObject | None:
        try:
            result: KubeObject = self._call(
                f"reading namespace {namespace}", self.core.read_namespace, namespace
            )
        except ClusterError as error:
            if error.status == 404:
                return None
            raise
        return result

    def _list(self, kind: str, namespace: str) -> dict[str, KubeObject]:
        list_method = self.kinds[kind].list
        assert list_method is not None
        body = self._call(
            f"listing {kind}s in {namespace}",
            list_method,
            namespace,
            label_selector=managed_selector(),
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
        return result

    def _delete(self, kind: str, name: str, namespace: str) -> None:
        try:
            self._call(f"deleting {kind} {name}", self.kinds[kind].delete, name, namespace)
        except ClusterError as error:
            if error.status != 404:  # already gone is what we wanted
                raise

    # -- the reconcile pass ------------------------------------------------------------------

    def apply(self, namespace: str, objects: dict[tuple[str, str], KubeObject]) -> ApplyResult:
        result = ApplyResult()
        desired_namespace = objects[("Namespace", namespace)]
        live_namespace = self._read_namespace(namespace)
        if live_namespace is None or not matches(desired_namespace, live_namespace):
            # Nothing else can be written until the namespace exists: let errors propagate.
            self._apply("Namespace", desired_namespace)
            result.changes.append(
                f"{'created' if live_namespace is None else 'updated'} Namespace {namespace}"
            )
        for kind in KINDS[1:]:
            live = self._list(kind, namespace) if live_namespace is not None else {}
            desired = {name: obj for (k, name), obj in objects.items() if k == kind}
            for name, obj in desired.items():
                current = live.get(name)
                if current is not None and matches(obj, current):
                    continue
                try:
                    live[name] = self._apply(kind, obj)
                except ClusterError as error:
                    result.errors.append(error)
                    continue
                result.changes.append(f"{'updated' if current else 'created'} {kind} {name}")
            for name in sorted(set(live) - set(desired)):
                try:
                    self._delete(kind, name, namespace)
                except ClusterError as error:
                    result.errors.append(error)
                    continue
                del live[name]
                result.changes.append(f"deleted {kind} {name}")
            if kind == "Service":
                result.cluster_ips = {
                    name: obj["spec"]["clusterIP"]
                    for name, obj in live.items()
                    if obj.get("spec", {}).get("clusterIP") not in (None, "", "None")
                }
        return result
