"""Informers: what the cluster holds, kept current by one LIST and then a WATCH per kind.

The same pattern as client-go's informers and controller-runtime's cache: each kind this app
manages is listed once, cluster-wide and by label, and then watched from that list's resource
version, so the process always has a local copy of every managed object without asking the API
server again. A watch that the server closes is reopened from the last version seen; a version
the server no longer has (410 Gone, after a long disconnect or an etcd compaction) means a fresh
LIST.

Secrets are watched too, but only ours and only their metadata: the watch names our Secret
(``fieldSelector=metadata.name=...``, which is what lets RBAC grant it by ``resourceNames``
alone, see ``deploy/rbac.yaml``) and asks for ``PartialObjectMetadata``, so no value ever
reaches this process. What it keeps of each is who wrote its data (``written_by``): a hand
edit shows there as another field manager.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from networking.cluster.backends import FIELD_MANAGER
from networking.cluster.desired import SHARED_SECRETS, TLS_SECRET, KubeObject, managed_selector
from networking.cluster.kube import WATCH_ERRORS, ApiClient, list_method, response_lines

logger = logging.getLogger(__name__)

# The informer of mutual TLS's Secret (``TLS_SECRET``), beside "Secret", the shared secrets'.
TLS_SECRETS = "TLSSecret"
# Each Secret we own, by name: the informer that watches it.
SECRET_INFORMERS = {SHARED_SECRETS: "Secret", TLS_SECRET: TLS_SECRETS}

# (namespace or "" for cluster-scoped objects, name)
Key = tuple[str, str]
OnChange = Callable[[str, str, str], None]  # kind, namespace, name
# Kept on an object in place of its managed fields: the field managers other than ours that own
# part of it (of a Secret, part of its data): a hand edit's "kubectl-edit", say. Empty: what
# we own is as our last write left it, and nobody else wrote anything.
WRITTEN_BY = "writtenByOthers"
_METADATA_ONLY = "application/json;as=PartialObjectMetadata{};g=meta.k8s.io;v=v1"


class _Gone(Exception):
    """The watch's resource version is too old: list again."""


@dataclass(frozen=True)
class WatchedKind:
    kind: str
    api: str  # "core", "networking" or "apps"
    method: str  # the cluster-wide list method of that API
    selector: str
    field_selector: str | None = None
    # Ask for metadata only (PartialObjectMetadata): what a Secret's watch needs, no values.
    metadata_only: bool = False
    # Its name among the cache's informers, when two watch one kind (our two Secrets: a watch
    # can name one Secret only): the kind otherwise.
    key: str = ""

    @property
    def name(self) -> str:
        return self.key or self.kind


def watched_kinds(workload_label: str) -> list[WatchedKind]:
    """Our objects by the managed-by label; the deploy system's workloads by theirs."""
    managed = managed_selector()
    return [
        WatchedKind("Namespace", "core", "list_namespace", managed),
        WatchedKind("Service", "core", "list_service_for_all_namespaces", managed),
        WatchedKind(
            "NetworkPolicy", "networking", "list_network_policy_for_all_namespaces", managed
        ),
        WatchedKind("Deployment", "apps", "list_deployment_for_all_namespaces", workload_label),
        WatchedKind("StatefulSet", "apps", "list_stateful_set_for_all_namespaces", workload_label),
        WatchedKind(
            "Secret",
            "core",
            "list_secret_for_all_namespaces",
            managed,
            field_selector=f"metadata.name={SHARED_SECRETS}",
            metadata_only=True,
        ),
        WatchedKind(
            "Secret",
            "core",
            "list_secret_for_all_namespaces",
            managed,
            field_selector=f"metadata.name={TLS_SECRET}",
            metadata_only=True,
            key=TLS_SECRETS,
        ),
    ]


def _slim(obj: KubeObject) -> KubeObject:
    """Drop what nobody here reads (server-side apply's bookkeeping is most of an object)."""
    metadata = obj.get("metadata", {})
    managed = metadata.pop("managedFields", None) or []
    secret = obj.get("kind") == "Secret"
    if secret:
        # Nothing but what is needed: an annotation can hold the whole Secret (client-side
        # apply's last-applied-configuration), and no value may reach this process.
        obj["metadata"] = {
            key: metadata[key]
            for key in ("name", "namespace", "labels", "resourceVersion", "uid")
            if key in metadata
        }
    obj[WRITTEN_BY] = sorted(
        {
            entry.get("manager", "")
            for entry in managed
            if entry.get("manager") != FIELD_MANAGER
            and (not secret or "f:data" in (entry.get("fieldsV1") or {}))
        }
    )
    return obj


class Informer:
    """One kind's LIST+WATCH loop in a daemon thread, and its store."""

    def __init__(
        self,
        api_client: ApiClient,
        watched: WatchedKind,
        on_change: OnChange,
        *,
        watch_seconds: int = 240,
        request_timeout: float = 10.0,
    ) -> None:
        self.kind = watched.kind
        # What it reports its changes as, and its name among the cache's informers.
        self.key = watched.name
        self.selector = watched.selector
        self.filters: dict[str, Any] = {}
        if watched.field_selector is not None:
            self.filters["field_selector"] = watched.field_selector
        self.accept = {
            "list": _METADATA_ONLY.format("List") if watched.metadata_only else None,
            "watch": _METADATA_ONLY.format("") if watched.metadata_only else None,
        }
        self.list_call = list_method(api_client, watched.api, watched.method)
        self.on_change = on_change
        self.watch_seconds = watch_seconds
        self.request_timeout = request_timeout
        # By namespace ("" for cluster-scoped objects), then name: a project's objects are one
        # lookup away, however many projects the cluster holds (client-go's namespace index).
        self.store: dict[str, dict[str, KubeObject]] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        # Its watch is open on the API server (set when the server answers it, cleared when it
        # fails): while set, nothing that changes this kind goes unseen.
        self.watching = threading.Event()
        self.stopping = threading.Event()
        self.resource_version: str | None = None
        self.lists = 0  # how many LISTs this informer made (start-up, and after 410 Gone)
        self.thread = threading.Thread(target=self._run, name=f"informer-{self.key}", daemon=True)

    # -- reading ----------------------------------------------------------------------------

    def in_namespace(self, namespace: str) -> dict[str, KubeObject]:
        with self.lock:
            return dict(self.store.get(namespace, {}))

    def get(self, namespace: str, name: str) -> KubeObject | None:
        with self.lock:
            return self.store.get(namespace, {}).get(name)

    def keys(self) -> list[Key]:
        with self.lock:
            return [(namespace, name) for namespace, names in self.store.items() for name in names]

    def remember(self, obj: KubeObject) -> None:
        """Record an object we just wrote (write-through), unless the store has a newer one."""
        namespace, name = _key(obj)
        with self.lock:
            current = self.store.get(namespace, {}).get(name)
            if current is None or _newer(obj, current):
                self._put(namespace, name, _slim(obj))

    def forget(self, namespace: str, name: str) -> None:
        with self.lock:
            self._pop(namespace, name)

    def _put(self, namespace: str, name: str, obj: KubeObject) -> None:
        self.store.setdefault(namespace, {})[name] = obj

    def _pop(self, namespace: str, name: str) -> None:
        names = self.store.get(namespace)
        if names is not None:
            names.pop(name, None)
            if not names:
                del self.store[namespace]

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch()
                failures = 0
            except _Gone:
                # The fresh LIST compares everything: nothing is missed meanwhile.
                logger.info("Watch of %ss expired (410 Gone): listing again", self.kind)
                self.resource_version = None
            except Exception as error:
                self.watching.clear()
                if self.stopping.is_set():
                    return  # a watch cut short by our own stop (or the server going away with it)
                if not isinstance(error, WATCH_ERRORS):
                    # A bug, not the network: logged in full, and the loop lives on.
                    logger.exception("Watch of %ss failed unexpectedly", self.kind)
                elif getattr(error, "status", None) == 403:
                    logger.error(
                        "The API server refused to list %ss (403): apply deploy/rbac.yaml "
                        "as shipped with this version",
                        self.kind,
                    )
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                logger.warning(
                    "Watch of %ss failed (%s); trying again in %.1f s",
                    self.kind,
                    type(error).__name__,
                    delay,
                )
                self.stopping.wait(delay)

    def _list(self) -> None:
        response = self.list_call(
            label_selector=self.selector,
            _preload_content=False,
            _request_timeout=self.request_timeout,
            **self._options("list"),
        )
        body = json.loads(response.data)
        kind = self.kind
        fresh: dict[str, dict[str, KubeObject]] = {}
        for item in body.get("items") or []:  # null in an empty PartialObjectMetadataList
            item["kind"] = kind  # absent from a list's items; PartialObjectMetadata if partial
            namespace, name = _key(item)
            fresh.setdefault(namespace, {})[name] = _slim(item)
        with self.lock:
            gone = {
                (namespace, name)
                for namespace, names in self.store.items()
                for name in names
                if name not in fresh.get(namespace, {})
            }
            self.store = fresh
        self.resource_version = body["metadata"]["resourceVersion"]
        self.lists += 1
        self.synced.set()
        listed = {(namespace, name) for namespace, names in fresh.items() for name in names}
        for namespace, name in sorted(gone | listed):
            self.on_change(self.key, namespace, name)

    def _watch(self) -> None:
        response = self.list_call(
            label_selector=self.selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.resource_version,
            timeout_seconds=self.watch_seconds,
            _preload_content=False,
            _request_timeout=(self.request_timeout, self.watch_seconds + self.request_timeout),
            **self._options("watch"),
        )
        self.watching.set()
        try:
            for line in response_lines(response):
                if self.stopping.is_set():
                    return
                self._event(json.loads(line))
        finally:
            response.release_conn()

    def _options(self, call: str) -> dict[str, Any]:
        accept = self.accept[call]
        return {**self.filters, **({"_headers": {"Accept": accept}} if accept else {})}

    def _event(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone
            raise ValueError(f"watch error: {obj.get('message', obj)}")
        version = obj.get("metadata", {}).get("resourceVersion")
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return
        obj["kind"] = self.kind
        namespace, name = _key(obj)
        with self.lock:
            if kind == "DELETED":
                self._pop(namespace, name)
            else:
                self._put(namespace, name, _slim(obj))
        self.resource_version = version or self.resource_version
        self.on_change(self.key, namespace, name)


def _key(obj: KubeObject) -> Key:
    metadata = obj["metadata"]
    return metadata.get("namespace", ""), metadata["name"]


def _newer(candidate: KubeObject, current: KubeObject) -> bool:
    """Whether ``candidate`` is a later version of the object than ``current``.

    Resource versions are opaque, but every API server in use (etcd3) issues increasing
    integers; anything else is treated as newer, since a write we just made is the latest.
    """
    try:
        return int(candidate["metadata"]["resourceVersion"]) >= int(
            current["metadata"]["resourceVersion"]
        )
    except (KeyError, ValueError):
        return True


class ClusterCache:
    """Every watched kind's informer, for a process that wants a local view of the cluster."""

    def __init__(
        self,
        api_client: ApiClient,
        workload_label: str,
        on_change: OnChange | None = None,
        *,
        watch_seconds: int = 240,
    ) -> None:
        self.listeners: list[OnChange] = [on_change] if on_change else []
        self.informers = {
            watched.name: Informer(api_client, watched, self._changed, watch_seconds=watch_seconds)
            for watched in watched_kinds(workload_label)
        }

    def _changed(self, kind: str, namespace: str, name: str) -> None:
        for listener in self.listeners:
            listener(kind, namespace, name)

    def start(self) -> None:
        for informer in self.informers.values():
            informer.start()

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.stop()

    def wait_synced(self, timeout: float, *, skip: tuple[str, ...] = ()) -> bool:
        deadline = time.monotonic() + timeout
        return all(
            informer.synced.wait(max(0.0, deadline - time.monotonic()))
            for kind, informer in self.informers.items()
            if kind not in skip
        )

    @property
    def synced(self) -> bool:
        return all(informer.synced.is_set() for informer in self.informers.values())

    @property
    def watching(self) -> bool:
        """Every kind's watch is open: no change to what we manage goes unseen."""
        return all(informer.watching.is_set() for informer in self.informers.values())

    def namespaces(self) -> list[str]:
        return [name for _, name in self.informers["Namespace"].keys()]  # noqa: SIM118
