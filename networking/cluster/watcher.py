"""The watcher: notices drift in the cluster from its watches and asks for a reconcile.

A long-running process (``manage.py watch_cluster``) holding one LIST+WATCH per managed kind,
cluster-wide (``networking.cluster.informer``). When an object of a project changes (deleted
or edited by hand, a ClusterIP assigned, a workload rolled out), what changed is compared with
its desired state in the cache (``networking.cluster.drift``) and, only if something differs,
a reconcile is queued (at most one per project) and the objects that differ are kept on the
project (``Project.report_drift``), for its pages to mark until a full pass repairs them. An
event about a Service or a workload costs a look at that service alone, whatever the project's
size; the namespace, a policy, or a fresh list calls for a look at the whole project. A
namespace labelled as ours whose project is gone is handed to the worker to delete. Standing
still costs the watches' keep-alive: no request per project, no SQL write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from networking import enqueue
from networking.cluster import liveness, reconcile
from networking.cluster.desired import WORKLOAD_KINDS, DesiredState
from networking.cluster.drift import Difference, differences
from networking.cluster.informer import SECRET_INFORMERS, TLS_SECRETS, WRITTEN_BY, ClusterCache
from networking.cluster.kube import api_client
from networking.models import Project, Service

logger = logging.getLogger(__name__)

NAMESPACE_PREFIX = "prj-"
# Changes often come in bursts (our own pass writes several objects): look once they settle.
SETTLE_SECONDS = 0.2
# A namespace looked at too early (a pass on its way, or our writes' events still arriving).
LOOK_AGAIN_SECONDS = 1.0

# What changed in a namespace, as (kind, name); None: look at everything.
Changed = set[tuple[str, str]] | None
# Kinds only we write: an event about one that nobody else wrote is our own pass's write (of a
# Secret: nobody else wrote its data).
OURS_ALONE = ("Service", "NetworkPolicy", "Secret", TLS_SECRETS)


def _union(first: Changed, second: Changed) -> Changed:
    return None if first is None or second is None else first | second


def pass_coming(project: Project) -> bool:
    """A pass of a change is queued or running (not failed, nor lost with the broker)."""
    lease = project.reconcile_lease_until
    return project.applied_generation < project.generation and (
        project.reconcile_queued_at is not None or (lease is not None and lease > timezone.now())
    )


@dataclass(frozen=True)
class WatchView:
    """What a look at a project compares the cache with: its desired state (of ``scope``'s
    services, or of everything when ``scope`` is None) and the service rows it was built from
    (their recorded ClusterIPs and workloads are compared too)."""

    desired: DesiredState
    services: list[Service]
    scope: set[str] | None


# The domain's part of a look (``networking.passes.watch_view``): project, scope -> view.
ViewFor = Callable[[Project, set[str] | None], WatchView]


class Watcher:
    def __init__(self, desired_for: ViewFor, cache: ClusterCache | None = None) -> None:
        self.desired_for = desired_for
        self.cache = cache or ClusterCache(
            api_client(), settings.WORKLOAD_LABEL, watch_seconds=settings.WATCH_SECONDS
        )
        self.cache.listeners.append(self._changed)
        self.dirty: dict[str, Changed] = {}
        self.deferred: dict[str, tuple[float, Changed]] = {}
        # Namespaces found differing once, looked at again before the difference counts, with
        # what was looked at.
        self.suspected: dict[str, Changed] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.checks = 0
        self.skipped = 0  # events of our own writes, not looked at
        self.rounds = 0  # rounds of the loop finished
        # By (namespace, Secret): the version last reported as edited by someone else.
        self.secret_edits: dict[tuple[str, str], str] = {}
        # The latest looks, as (namespace, the services looked at or None for everything).
        self.looks: deque[tuple[str, frozenset[str] | None]] = deque(maxlen=100)
        self.looked_at_all = False
        # Says "watching" to the passes (``liveness``).
        self.signal = liveness.Signal()

    def _changed(self, kind: str, namespace: str, name: str) -> None:
        if kind == "Namespace":
            self.mark([name])
        elif namespace.startswith(NAMESPACE_PREFIX):
            if kind in OURS_ALONE and self._written_by_us_alone(kind, namespace, name):
                # Our own pass's write: what we own on it is what that pass applied (anyone
                # else's write, even of one label, would show as another field manager), so a
                # look could find nothing. A pass writes one event per object: in a burst of
                # a thousand changes, a thousand looks saved.
                self.skipped += 1
                return
            with self.lock:
                self.dirty[namespace] = _union(self.dirty.get(namespace, set()), {(kind, name)})
            self.wake.set()

    def mark(self, namespaces: Iterable[str]) -> None:
        """Look at everything in these namespaces."""
        with self.lock:
            self.dirty.update((ns, None) for ns in namespaces if ns.startswith(NAMESPACE_PREFIX))
        self.wake.set()

    def later(self, namespace: str, changed: Changed = None) -> None:
        """Look at the namespace again on a round at least ``LOOK_AGAIN_SECONDS`` from now."""
        with self.lock:
            at, before = self.deferred.get(
                namespace, (time.monotonic() + LOOK_AGAIN_SECONDS, set())
            )
            self.deferred[namespace] = (at, _union(before, changed))

    def run(self) -> None:
        """Until ``stop()``: keep the cache current and look at every project that changed."""
        try:
            self._run()
        finally:
            self.signal.close()
            connection.close()  # this thread's own connection

    def _run(self) -> None:
        self.cache.start()
        # The Secret's watch is not waited for: with an older deploy/rbac.yaml it is refused,
        # and the rest must still be watched. Until it lists, Secrets are not compared and the
        # passes read the cluster (not every watch is open).
        while not self.cache.wait_synced(timeout=10, skip=("Secret", TLS_SECRETS)):
            if self.stopping.is_set():
                return
            logger.warning("Waiting for the first list of every kind from the API server")
        logger.info("Watching the cluster")
        # The first look covers everything: projects whose namespace is missing too.
        self.mark(
            f"{NAMESPACE_PREFIX}{uid}" for uid in Project.objects.values_list("uid", flat=True)
        )
        while not self.stopping.is_set():
            self.wake.wait(timeout=1.0)
            self.wake.clear()
            self.stopping.wait(SETTLE_SECONDS)
            with self.lock:
                batch, self.dirty = self.dirty, {}
                now = time.monotonic()
                due = [namespace for namespace, (at, _) in self.deferred.items() if at <= now]
                for namespace in due:
                    _, changed = self.deferred.pop(namespace)
                    batch[namespace] = _union(batch.get(namespace, set()), changed)
            for namespace, changed in sorted(batch.items()):
                self.beat()  # a watch may fail during a long batch (a thousand projects)
                try:
                    self.check(namespace, changed)
                except Exception:
                    logger.exception("Could not compare %s with its desired state", namespace)
            # From the end of the first look at every project on, passes may trust their
            # records: any difference in the cluster reaches this loop.
            self.looked_at_all = True
            self.rounds += 1
            self.beat()
            close_old_connections()

    def beat(self) -> None:
        """Say whether differences will be noticed: once every project was looked at, while
        every watch is open (``liveness``)."""
        self.signal.update(self.looked_at_all and self.cache.watching)

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.cache.stop()

    def check(self, namespace: str, changed: Changed = None) -> list[Difference]:
        """Compare what changed in a project's namespace (None: all of it) with its desired
        state; queue a pass if it differs."""
        self.checks += 1
        uid = namespace.removeprefix(NAMESPACE_PREFIX)
        project = Project.objects.filter(uid=uid).first()
        namespace_object = self.cache.informers["Namespace"].get("", namespace)
        if project is not None and pass_coming(project):
            # A pass is queued or running and will write what differs; judging now would take
            # the objects it has not written yet for drift. Look again once it is done.
            self.later(namespace, changed)
            return []
        if project is None:
            if namespace_object is not None:
                logger.info("Namespace %s belongs to no project: deleting it", namespace)
                enqueue.send(enqueue.DELETE_NAMESPACE_IF_ORPHANED, namespace)
            return []
        scope = self._services_in(namespace, changed)
        self.looks.append((namespace, frozenset(scope) if scope is not None else None))
        view = self.desired_for(project, scope)
        services, scope = view.services, view.scope
        desired = view.desired
        found = differences(
            desired,
            {
                kind: informer.in_namespace(namespace)
                for kind, informer in self.cache.informers.items()
                if kind != "Namespace" and informer.synced.is_set()
            },
            namespace_object=namespace_object,
            recorded={service.name: (service.cluster_ip, service.workload) for service in services},
            workload_label=settings.WORKLOAD_LABEL,
            services=scope,
        )
        found = [d for d in found if not self._secret_edit_judged(namespace, d)]
        if found and namespace not in self.suspected:
            # Our own pass's writes may still be on their way to the cache (a thousand events
            # after a large pass): call it drift only if it still differs a round later.
            self.suspected[namespace] = changed
            self.later(namespace, changed)
            return found
        suspected = self.suspected.get(namespace, set())
        if found or changed is None or (suspected is not None and suspected <= changed):
            # Judged (or cleared) what was suspected; a look at other objects clears nothing.
            self.suspected.pop(namespace, None)
        if found:
            for difference in found:
                if difference.kind == "Secret" and difference.edited:
                    self.secret_edits[(namespace, difference.name)] = self._secret_version(
                        namespace, difference.name
                    )
            queued = project.report_drift(difference.record() for difference in found)
            logger.info(
                "Drift in %s (%s)%s",
                namespace,
                reconcile.summarize(found),
                "" if queued else "; a reconcile is already queued",
            )
        return found

    def _secret_version(self, namespace: str, name: str) -> str:
        informer = self.cache.informers.get(SECRET_INFORMERS.get(name, "Secret"))
        obj = (informer.get(namespace, name) if informer is not None else None) or {}
        return str(obj.get("metadata", {}).get("resourceVersion", ""))

    def _secret_edit_judged(self, namespace: str, difference: Difference) -> bool:
        """Whether this is a Secret edited by someone else that was already reported at this
        very version. The pass that followed found it matching (someone wrote our own values,
        say, by server-side apply: they share the ownership, and a pass that changes nothing
        cannot take it back): reporting it again would start a pass every round, forever."""
        return (
            difference.kind == "Secret"
            and difference.edited
            and self.secret_edits.get((namespace, difference.name))
            == self._secret_version(namespace, difference.name)
        )

    def _written_by_us_alone(self, kind: str, namespace: str, name: str) -> bool:
        obj = self.cache.informers[kind].get(namespace, name)
        return obj is not None and obj.get(WRITTEN_BY) == []

    def _services_in(self, namespace: str, changed: Changed) -> set[str] | None:
        """The services whose objects changed; None when the change calls for a look at
        everything (the namespace, a policy, a workload gone before we saw whose it was)."""
        if changed is None:
            return None
        services = set()
        for kind, name in changed:
            if kind == "Service":
                services.add(name)
            elif kind in WORKLOAD_KINDS:
                workload = self.cache.informers[kind].get(namespace, name)
                if workload is None:
                    return None
                labels = workload["metadata"].get("labels") or {}
                services.add(labels.get(settings.WORKLOAD_LABEL, ""))
            else:
                return None
        return services
