"""What the benchmarks read from outside: the API server's, PostgreSQL's and Redis's counters.

The workers are other processes, so their cost is measured where it lands, not by wrapping
their clients: requests and response bytes from the API server's ``/metrics``, rows written
from PostgreSQL's table statistics, the queue from Redis, task times from the worker's log.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from networking.models import Project
from tests.kubeapi import TestAPIServer

_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# Kubernetes verbs, as the audit log names them.
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# The user the app (workers, watcher, in-process passes) talks to the API server as.
APP_USER = "app"


@dataclass(frozen=True)
class MetricsSnapshot:
    """Cumulative counters of resource requests (non-resource URLs such as /metrics excluded)."""

    at: float
    # (verb, resource) -> requests answered
    requests: dict[tuple[str, str], float]
    # The app's own requests (its user's, from the API server's audit log): verb -> count
    app_requests: dict[str, float]
    # (verb, resource) -> response bytes
    response_bytes: dict[tuple[str, str], float]


@dataclass(frozen=True)
class Traffic:
    """API requests and bytes between two snapshots."""

    seconds: float
    # The app's own requests (its user's, from the audit log): nothing of the controller
    # manager's or the API server's own loops, so these need no background subtracted.
    json_reads: float
    json_writes: float
    # Every resource request, minus the idle background rate times the window.
    all_requests: float
    # Response bytes of every resource request, minus the idle background (sizes carry no
    # user label, and there is no request-size metric).
    response_bytes: float

    @property
    def json_requests(self) -> float:
        return self.json_reads + self.json_writes


def grant_app_user(server: TestAPIServer) -> None:
    """The app's user may do anything (the RBAC of deploy/rbac.yaml is the tests' to check)."""
    status, body = server.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": "bench-app"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"kind": "User", "name": APP_USER, "apiGroup": "rbac.authorization.k8s.io"}
            ],
        },
    )
    if status != 201:
        raise RuntimeError(f"could not grant the app's user its role: {status} {body[:200]!r}")


class ApiServerMetrics:
    """The API server's request counters, read with the admin token."""

    def __init__(self, server: TestAPIServer) -> None:
        self.server = server
        self._audit_offset = 0
        self._app_requests: dict[str, float] = {}
        self.background_requests_per_second = 0.0
        self.background_json_per_second = 0.0
        self.background_bytes_per_second = 0.0

    def snapshot(self) -> MetricsSnapshot:
        status, body = self.server.request("GET", "/metrics", timeout=30)
        if status != 200:
            raise RuntimeError(f"GET /metrics answered {status}: {body[:200]!r}")
        requests: dict[tuple[str, str], float] = {}
        response_bytes: dict[tuple[str, str], float] = {}
        for line in body.decode().splitlines():
            match = _SAMPLE.match(line)
            if match is None or match["name"] not in (
                "apiserver_request_total",
                "apiserver_response_sizes_sum",
            ):
                continue
            labels = dict(_LABEL.findall(match["labels"]))
            if not labels.get("resource"):
                continue  # /metrics, /healthz, discovery: not the work being measured
            value = float(match["value"])
            if match["name"] == "apiserver_request_total":
                key = (labels["verb"], labels["resource"])
                requests[key] = requests.get(key, 0.0) + value
            else:
                size_key = (labels["verb"], labels["resource"])
                response_bytes[size_key] = response_bytes.get(size_key, 0.0) + value
        return MetricsSnapshot(time.monotonic(), requests, self._read_audit(), response_bytes)

    def _read_audit(self) -> dict[str, float]:
        """The app user's requests so far, by verb (the log is read from where it was left)."""
        path = self.server.audit_log_path
        if path.exists():
            with path.open("rb") as log:
                log.seek(self._audit_offset)
                chunk = log.read()
            complete = chunk.rfind(b"\n") + 1  # a line being written is read next time
            self._audit_offset += complete
            for line in chunk[:complete].splitlines():
                event = json.loads(line)
                if event.get("stage") == "ResponseComplete" and event.get("objectRef"):
                    verb = str(event["verb"])
                    self._app_requests[verb] = self._app_requests.get(verb, 0.0) + 1
        return dict(self._app_requests)

    def traffic(self, before: MetricsSnapshot, after: MetricsSnapshot) -> Traffic:
        seconds = after.at - before.at
        json_reads = json_writes = every = 0.0
        for key, value in after.requests.items():
            every += value - before.requests.get(key, 0.0)
        for verb, value in after.app_requests.items():
            delta = value - before.app_requests.get(verb, 0.0)
            if verb in WRITE_VERBS:
                json_writes += delta
            else:
                json_reads += delta
        sent = sum(
            value - before.response_bytes.get(key, 0.0)
            for key, value in after.response_bytes.items()
        )
        return Traffic(
            seconds=seconds,
            json_reads=json_reads,
            json_writes=json_writes,
            all_requests=max(every - self.background_requests_per_second * seconds, 0.0),
            response_bytes=max(sent - self.background_bytes_per_second * seconds, 0.0),
        )

    def measure_background(self, seconds: float) -> None:
        """The requests the API server sees while the app does nothing (its own loops, the
        controller manager): a rate, subtracted from every later window."""
        before = self.snapshot()
        time.sleep(seconds)
        after = self.snapshot()
        elapsed = after.at - before.at
        every = sum(v - before.requests.get(k, 0.0) for k, v in after.requests.items())
        in_json = sum(v - before.app_requests.get(k, 0.0) for k, v in after.app_requests.items())
        sent = sum(v - before.response_bytes.get(k, 0.0) for k, v in after.response_bytes.items())
        self.background_requests_per_second = every / elapsed
        self.background_json_per_second = in_json / elapsed
        self.background_bytes_per_second = sent / elapsed

    def wait_quiet(self, quiet_for: float = 3.0, timeout: float = 300.0) -> float:
        """Wait until no resource request reaches the API server for ``quiet_for`` seconds
        beyond its idle background (the controller manager catching up with new namespaces,
        Deployments...). Returns how long it took."""
        start = time.monotonic()
        deadline = start + timeout
        previous = self.snapshot()
        quiet_since = previous.at
        while time.monotonic() < deadline:
            time.sleep(0.5)
            current = self.snapshot()
            new = sum(v - previous.requests.get(k, 0.0) for k, v in current.requests.items())
            allowance = self.background_requests_per_second * (current.at - previous.at) + 2
            if new > allowance:
                quiet_since = current.at
            previous = current
            if current.at - quiet_since >= quiet_for:
                return time.monotonic() - start
        raise RuntimeError(f"the API server never went quiet within {timeout:.0f} s")


def postgres() -> bool:
    return connection.vendor == "postgresql"


# PGSTAT_IDLE_INTERVAL (10 s), and a little more.
IDLE_STATS_FLUSH_SECONDS = 10.5


def rows_written() -> int:
    """Rows inserted, updated and deleted in this database's tables, as PostgreSQL counts them.

    Backends report their counts when a transaction ends, at most once a second; a backend
    that went idle within that second reports them only after 10 s idle (PostgreSQL 15+), or
    through the statistics collector with a short delay (older). So wait out those 10 s, then
    read until the figure holds still for over a second.
    """

    def read() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0) "
                "FROM pg_stat_user_tables"
            )
            row = cursor.fetchone()
        assert row is not None
        return int(row[0])

    time.sleep(IDLE_STATS_FLUSH_SECONDS)
    previous = read()
    deadline = time.monotonic() + 15
    while True:
        time.sleep(1.2)
        current = read()
        if current == previous or time.monotonic() > deadline:
            return current
        previous = current


class Broker:
    """This run's queue in Redis: what waits in it, and what a worker took but has not acked."""

    def __init__(self, url: str, queue: str) -> None:
        import redis

        self.client: Any = redis.Redis.from_url(url)
        self.queue = queue
        # kombu keeps one list per priority step; messages without a priority go to the first.
        separator = "\x06\x16"
        self.lists = [queue] + [f"{queue}{separator}{step}" for step in (3, 6, 9)]

    def pending(self) -> int:
        pipe = self.client.pipeline()
        for key in self.lists:
            pipe.llen(key)
        pipe.hlen("unacked")
        *lengths, unacked = pipe.execute()
        waiting = int(sum(lengths))
        if unacked:
            # Acks late: a message stays here until its task returns (or while its countdown
            # runs). The hash is shared by every queue of this Redis database: count ours.
            for raw in self.client.hvals("unacked"):
                try:
                    _, _, routing_key = json.loads(raw)
                except (TypeError, ValueError):
                    continue
                if routing_key == self.queue:
                    waiting += 1
        return waiting


def projects_leased() -> bool:
    return (
        Project.objects.filter(reconcile_lease_until__gt=timezone.now())
        .exclude(Q(reconcile_lease_token=""))
        .exists()
    )


def wait_drained(broker: Broker, timeout: float, poll: float = 0.01) -> float:
    """Wait until no message waits or runs and no project is leased; return when that began.

    A worker moves a message from the list to the unacked hash in two steps, so "empty" must
    hold on two looks a little apart before it counts.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = time.perf_counter()
        if broker.pending() == 0 and not projects_leased():
            time.sleep(0.02)
            if broker.pending() == 0 and not projects_leased():
                return seen
        else:
            time.sleep(poll)
    raise RuntimeError(f"the queue was not drained within {timeout:.0f} s")


_TASK_LINE = re.compile(
    r"Task (?P<name>[\w.]+)\[[0-9a-f-]+\] "
    r"(?:succeeded in (?P<runtime>[\d.e-]+)s|(?P<other>retry|raised))"
)


@dataclass
class TaskRuns:
    succeeded: dict[str, int]
    seconds: float  # summed run time of the tasks that succeeded
    retried: int
    failed: int

    @property
    def count(self) -> int:
        return sum(self.succeeded.values())


class WorkerLogs:
    """The ``Task ... succeeded in ...s`` lines the workers logged since ``mark()``."""

    def __init__(self, logs: Sequence[Path]) -> None:
        self.logs = list(logs)
        self.offsets = [0] * len(self.logs)

    def mark(self) -> None:
        self.offsets = [log.stat().st_size if log.exists() else 0 for log in self.logs]

    def runs(self) -> TaskRuns:
        runs = TaskRuns({}, 0.0, 0, 0)
        for log, offset in zip(self.logs, self.offsets, strict=True):
            with log.open("rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
            for match in _TASK_LINE.finditer(text):
                if match["runtime"] is not None:
                    name = match["name"].rsplit(".", 1)[-1]
                    runs.succeeded[name] = runs.succeeded.get(name, 0) + 1
                    runs.seconds += float(match["runtime"])
                elif match["other"] == "retry":
                    runs.retried += 1
                else:
                    runs.failed += 1
        return runs


def until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(poll)
