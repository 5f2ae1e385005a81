"""The data plane: a current Kubernetes with a node, CoreDNS loaded with our snippet and an
enforcing NetworkPolicy controller (``tests/kubeapi.py``, ``tests/kubenode.py``).

Tests here drive the product as a customer does (its API), let a real worker apply the change
with the least-privilege identity of ``deploy/rbac.yaml``, run workloads as the platform's
deploy system would (one Deployment per service, labelled with its name), and then ask from
inside pods what the spec promises: a name resolves, a connection opens, a packet is refused.

The cluster and the worker live as long as this folder's tests (package scope): started once,
stopped before the tests after them, whose workers must not meet this one on the queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from kubernetes import client, config
from kubernetes.stream import stream

from networking.models import Project
from tests import rbac
from tests.conftest import World, issue_token
from tests.deploy_system import FIELD_MANAGER
from tests.kubeapi import (
    NODE_CONTROLLERS,
    ClusterUnavailable,
    TestAPIServer,
    images_dir,
    require_binaries,
)
from tests.kubenode import TestNode, image
from tests.waiting import wait_until
from tests.worker import WatcherProcess, WorkerProcess, database_url

Call = Callable[..., Any]
WORKLOAD = "/usr/local/bin/workload"


@dataclass
class Answer:
    """What a command run in a pod printed (its one JSON line, parsed) and how it exited."""

    code: int | None
    data: dict[str, Any]
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass
class DataPlane:
    api: TestAPIServer
    node: TestNode
    # The admin's clients, as Any: tests hand them plain dicts, as kubectl takes YAML.
    core: Any = field(init=False)
    apps: Any = field(init=False)
    networking: Any = field(init=False)

    def __post_init__(self) -> None:
        admin = config.new_client_from_config(config_file=str(self.api.kubeconfig_path))
        self.core = client.CoreV1Api(admin)
        # Its own client for exec: ``stream`` swaps the client's transport for a websocket
        # while it runs, which a thread listing pods meanwhile (``Calls``) must not meet.
        self._exec_core = client.CoreV1Api(
            config.new_client_from_config(config_file=str(self.api.kubeconfig_path))
        )
        self.apps = client.AppsV1Api(admin)
        self.networking = client.NetworkingV1Api(admin)

    # -- questions asked from inside a pod ----------------------------------------------------

    def exec(self, namespace: str, pod: str, *command: str, timeout: float = 30) -> Answer:
        """Run ``command`` in the pod's first container, as ``kubectl exec`` does."""
        response = stream(
            self._exec_core.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            command=list(command),
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            _preload_content=False,
        )
        try:
            response.run_forever(timeout=timeout)
            output = response.read_stdout() or ""
            errors = response.read_stderr() or ""
            code = response.returncode
        finally:
            response.close()
        data: dict[str, Any] = {}
        lines = [line for line in output.splitlines() if line.strip()]
        if lines:
            try:
                data = json.loads(lines[-1])
            except ValueError:
                data = {}
        return Answer(code=code, data=data, stdout=output, stderr=errors)

    def ask(self, namespace: str, pod: str, *question: str, timeout: float = 30) -> Answer:
        """One of the test workload's questions (resolve, connect, get) from inside ``pod``."""
        return self.exec(namespace, pod, WORKLOAD, *question, timeout=timeout)

    def until(
        self, namespace: str, pod: str, *question: str, succeeds: bool = True, timeout: float = 30
    ) -> Answer:
        """Ask until the answer succeeds (or, with ``succeeds=False``, fails), as a user retries
        while DNS, kube-proxy and the enforcer catch up with a change; that answer."""
        answers: list[Answer] = []

        def settled() -> bool:
            answers.append(self.ask(namespace, pod, *question))
            return answers[-1].ok == succeeds

        outcome = "succeed" if succeeds else "fail"
        wait_until(settled, f"{' '.join(question)} in {namespace}/{pod} to {outcome}", timeout)
        return answers[-1]

    def resolve(self, namespace: str, pod: str, name: str) -> list[str]:
        """The addresses ``name`` resolves to in ``pod`` (none when it does not resolve)."""
        answer = self.ask(namespace, pod, "resolve", name)
        return list(answer.data.get("addresses") or []) if answer.ok else []

    # -- pods and workloads -------------------------------------------------------------------

    def client_pod(self, namespace: str, name: str = "client", **labels: str) -> str:
        """A pod that does nothing but answer ``exec``: the caller in a test."""
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"role": name}},
            "spec": {
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {
                        "name": "workload",
                        "image": image("workload"),
                        "imagePullPolicy": "Never",
                        "args": ["sleep"],
                    }
                ],
            },
        }
        self.core.create_namespaced_pod(namespace, manifest)
        wait_until(lambda: self._pod_ready(namespace, name), f"pod {namespace}/{name} ready", 60)
        return name

    def _pod_ready(self, namespace: str, name: str) -> bool:
        pod = self.core.read_namespaced_pod(name, namespace)
        return any(
            condition.type == "Ready" and condition.status == "True"
            for condition in pod.status.conditions or []
        )

    def deploy(
        self,
        namespace: str,
        service: str,
        *,
        ports: Sequence[int] = (8080,),
        image_name: str = "workload",
        args: Sequence[str] | None = None,
        command: Sequence[str] | None = None,
        env: Sequence[dict[str, Any]] = (),
        replicas: int = 1,
        run_as_user: int | None = None,
        ready_check: bool = True,
        wait: bool = True,
    ) -> None:
        """What the platform's deploy system does for a service: one Deployment labelled with
        its name, under the deploy system's own field manager; ready once its first port
        accepts connections (at once, with no ports or without ``ready_check``, as a deploy
        with no readiness check of its own would be)."""
        labels = {settings.WORKLOAD_LABEL: service}
        container: dict[str, Any] = {
            "name": "app",
            "image": image(image_name),
            "imagePullPolicy": "Never",
            "env": [
                {"name": "SERVICE_NAME", "value": service},
                {
                    "name": "POD_NAMESPACE",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                },
                *env,
            ],
            "ports": [{"containerPort": port} for port in ports],
        }
        if ports and ready_check:
            container["readinessProbe"] = {
                "tcpSocket": {"port": ports[0]},
                "periodSeconds": 1,
                "failureThreshold": 1,
            }
        if args is not None:
            container["args"] = list(args)
        elif image_name == "workload":
            container["args"] = ["http", *[arg for port in ports for arg in ("-port", str(port))]]
        if command is not None:
            container["command"] = list(command)
        if run_as_user is not None:
            container["securityContext"] = {"runAsUser": run_as_user, "runAsGroup": run_as_user}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": service, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "terminationGracePeriodSeconds": 2,
                        "containers": [container],
                    },
                },
            },
        }
        self.apps.patch_namespaced_deployment(
            service,
            namespace,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        if wait:
            self.wait_rolled_out(namespace, service)

    def rolled_out(self, namespace: str, name: str) -> bool:
        deployment = self.apps.read_namespaced_deployment(name, namespace)
        spec, status = deployment.spec, deployment.status
        return bool(
            (status.observed_generation or 0) >= (deployment.metadata.generation or 0)
            and (status.updated_replicas or 0) == spec.replicas
            and (status.replicas or 0) == spec.replicas
            and (status.available_replicas or 0) == spec.replicas
        )

    def wait_rolled_out(self, namespace: str, name: str, timeout: float = 90) -> None:
        wait_until(
            lambda: self.rolled_out(namespace, name), f"{namespace}/{name} rolled out", timeout
        )

    def pods(self, namespace: str, service: str) -> list[Any]:
        selector = f"{settings.WORKLOAD_LABEL}={service}"
        items: list[Any] = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return [pod for pod in items if pod.metadata.deletion_timestamp is None]

    def pod_ips(self, namespace: str, service: str) -> list[str]:
        return [pod.status.pod_ip for pod in self.pods(namespace, service) if pod.status.pod_ip]

    def delete_namespace(self, namespace: str) -> None:
        try:
            self.core.delete_namespace(namespace, grace_period_seconds=0)
        except client.ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture(scope="package")
def dataplane() -> Iterator[DataPlane]:
    try:
        bin_dir = require_binaries()
    except ClusterUnavailable as error:  # say why, and fail: never skip
        pytest.fail(f"the test cluster cannot be had: {error.reason}", pytrace=False)
    api = TestAPIServer(
        bin_dir, controller_manager=True, controllers=NODE_CONTROLLERS, users=["worker"]
    )
    api.start()
    try:
        api.start_scheduler()
        rbac.apply(api, "worker", image("probe"))
        node = TestNode(api, bin_dir, images_dir(bin_dir))
        node.start()
        try:
            yield DataPlane(api, node)
        finally:
            node.stop()
    finally:
        api.stop()


@dataclass
class ControlProcesses:
    """The worker and the watcher: what applies changes and repairs drift."""

    worker: WorkerProcess
    watcher: WatcherProcess

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Frozen (SIGSTOP) meanwhile: nothing repairs what a negative control removes."""
        processes = [p.process for p in (self.worker, self.watcher) if p.process is not None]
        for process in processes:
            process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for process in processes:
                process.send_signal(signal.SIGCONT)


@pytest.fixture(scope="package")
def dataplane_worker(
    dataplane: DataPlane, django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlProcesses]:
    """A real Celery worker and the watcher, both as deploy/rbac.yaml's identity."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "CLUSTER_BACKEND": "kubernetes",
        "KUBECONFIG": str(dataplane.api.kubeconfig_for("worker")),
        "CONNECTION_TEST_IMAGE": image("probe"),
        "CONNECTION_TEST_PULL_POLICY": "Never",
        # A rotation's grace window, long in production, is a few seconds here.
        "ROTATION_GRACE_SECONDS": "3",
        # The kubelet here refreshes mounted Secrets within its 5 s sync period (production:
        # a minute, and its cache's TTL): a CA rotation's phases wait three times that.
        "MTLS_PROPAGATION_SECONDS": "15",
    }
    logs = tmp_path_factory.mktemp("dataplane")
    worker = WorkerProcess(env, logs / "worker.log")
    # The watcher, as production runs it: a workload the deploy system creates after a pass
    # gets its secrets from the pass the watcher asks for.
    watcher = WatcherProcess(env, logs / "watcher.log")
    worker.start()
    try:
        watcher.start()
        yield ControlProcesses(worker, watcher)
    finally:
        watcher.stop()
        worker.stop()


@pytest.fixture
def namespaces(dataplane: DataPlane) -> Iterator[list[str]]:
    """Namespaces a test made (its projects' and its own): deleted after it, pods and all."""
    made: list[str] = []
    yield made
    for namespace in made:
        dataplane.delete_namespace(namespace)


@pytest.fixture
def api_client() -> Any:
    """The product's API called with a token, as a script would: ``call(token, method, path,
    body)``."""

    def call(token: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        browser = Client()
        response = browser.generic(
            method,
            f"/api/v1{path}",
            data=json.dumps(body) if body is not None else "",
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
        return response

    return call


def in_sync(project: Project) -> bool:
    """What the dashboard's badge says: the cluster has caught up with every change."""
    project.refresh_from_db()
    return project.sync_state == Project.SyncState.IN_SYNC


@pytest.fixture
def acme_token(api_tokens: dict[str, str | None]) -> str:
    token = api_tokens["owner"]
    assert token is not None
    return token


@pytest.fixture
def globex_token(world: World) -> str:
    owner = world.globex.memberships.get(role="owner").user
    return issue_token(owner, world.globex, "owner", "globex-owner-token")


def create_service(
    call: Call, token: str, project: Project, name: str, kind: str, **extra: Any
) -> dict[str, Any]:
    response = call(
        token, "POST", f"/projects/{project.uid}/services", {"name": name, "kind": kind, **extra}
    )
    assert response.status_code == 201, response.content
    return dict(response.json())


def read_service(call: Call, token: str, project: Project, service_id: int) -> dict[str, Any]:
    response = call(token, "GET", f"/projects/{project.uid}/services/{service_id}")
    assert response.status_code == 200, response.content
    return dict(response.json())


def applied(call: Call, token: str, project: Project, service: dict[str, Any]) -> dict[str, Any]:
    """The service as the API shows it once the worker has applied it (its ClusterIP set)."""
    wait_until(lambda: in_sync(project), f"{project.name} in sync", 60)
    return wait_until(
        lambda: (
            (found := read_service(call, token, project, service["id"]))["cluster_ip"] and found
        ),
        f"{service['hostname']}'s ClusterIP",
        30,
    )


@pytest.fixture
def storefront(
    world: World,
    dataplane: DataPlane,
    dataplane_worker: ControlProcesses,
    namespaces: list[str],
    api_client: Call,
    acme_token: str,
) -> dict[str, Any]:
    """Acme's project applied, its web service ``api`` running, and a pod to call from."""
    project = world.project
    namespaces.append(project.namespace)
    project.request_reconcile()
    api = applied(api_client, acme_token, project, {"id": world.api.pk, "hostname": "api.internal"})
    dataplane.deploy(project.namespace, "api", ports=[8080])
    dataplane.client_pod(project.namespace)
    # Ready when a pod of the project gets an answer by the name (DNS, kube-proxy and the
    # enforcer have all caught up): what every test here starts from.
    wait_until(
        lambda: dataplane.ask(project.namespace, "client", "get", "http://api.internal:8080/").ok,
        "api.internal to answer in Storefront",
        60,
    )
    return {"project": project, "api": api}


class Calls:
    """Follows the log of every pod of the calling service, old and new: one line per call."""

    def __init__(self, dataplane: DataPlane, namespace: str, service: str, since: str) -> None:
        self.dataplane, self.namespace, self.service = dataplane, namespace, service
        self.since = since
        self.lines: list[dict[str, Any]] = []
        self.followed: set[str] = set()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopped.wait(0.2):
            for pod in self.dataplane.pods(self.namespace, self.service):
                name = pod.metadata.name
                if name not in self.followed and pod.status.phase == "Running":
                    self.followed.add(name)
                    threading.Thread(target=self._follow, args=(name,), daemon=True).start()

    def _follow(self, pod: str) -> None:
        stream = self.dataplane.core.read_namespaced_pod_log(
            pod, self.namespace, follow=True, _preload_content=False
        )
        for raw in stream:
            for line in raw.decode().splitlines():
                if line.startswith("{") and (call := json.loads(line))["at"] >= self.since:
                    self.lines.append({**call, "pod": pod})
            if self.stopped.is_set():
                break

    def stop(self) -> None:
        self.stopped.set()


# How long what the pages promise took here, printed at the end of the run.
TIMINGS: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("data plane: how long it took")
        for line in TIMINGS:
            terminalreporter.write_line(line)
