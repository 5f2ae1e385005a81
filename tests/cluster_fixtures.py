"""Fixtures for tests against the real Kubernetes API server (tests/kubeapi.py) and workers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from kubernetes import client, config

from dashboard.celery import app as celery_app
from networking.cluster import kube
from tests.kubeapi import TestAPIServer, kube_api_session
from tests.kubehttp import HttpRecorder
from tests.worker import BeatProcess, WorkerProcess, database_url


@pytest.fixture(scope="session")
def kube_api() -> Iterator[TestAPIServer]:
    """etcd + kube-apiserver + controller manager (scripts/test-cluster/build.sh builds them)."""
    yield from kube_api_session(controller_manager=True, users=["worker"])


@dataclass
class Cluster:
    """The API server as the app sees it (``http``) and as a test inspects it (``core``...)."""

    api: TestAPIServer
    http: HttpRecorder
    core: client.CoreV1Api
    networking: client.NetworkingV1Api
    apps: client.AppsV1Api

    def services(self, namespace: str) -> dict[str, Any]:
        items: list[Any] = self.core.list_namespaced_service(namespace).items
        return {str(item.metadata.name): item for item in items}

    def policies(self, namespace: str) -> dict[str, Any]:
        items: list[Any] = self.networking.list_namespaced_network_policy(namespace).items
        return {str(item.metadata.name): item for item in items}

    def namespace(self, name: str) -> Any:
        try:
            return self.core.read_namespace(name)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise


@pytest.fixture
def cluster(kube_api: TestAPIServer, settings: Any) -> Iterator[Cluster]:
    """Point the app at the test API server, with counting at the client's HTTP layer."""
    settings.CLUSTER_BACKEND = "kubernetes"
    settings.KUBECONFIG = str(kube_api.kubeconfig_path)
    settings.KUBE_CONTEXT = ""
    kube._api_client.cache_clear()
    app_client = kube.api_client()
    recorder = HttpRecorder(app_client.rest_client.pool_manager)
    app_client.rest_client.pool_manager = recorder  # type: ignore[assignment]
    admin = config.new_client_from_config(config_file=str(kube_api.kubeconfig_path))
    try:
        yield Cluster(
            api=kube_api,
            http=recorder,
            core=client.CoreV1Api(admin),
            networking=client.NetworkingV1Api(admin),
            apps=client.AppsV1Api(admin),
        )
    finally:
        kube._api_client.cache_clear()
        admin.close()


@pytest.fixture
def worker_env(cluster: Cluster, transactional_db: Any) -> Iterator[dict[str, str]]:
    """What a worker or watcher process of this test runs with. The run's queue starts and
    ends empty: a process of an earlier test (a watcher finding that test's namespaces
    orphaned, say) may have queued work that only this test's workers would take."""
    _purge_queue()
    yield {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "CLUSTER_BACKEND": "kubernetes",
        "KUBECONFIG": str(cluster.api.kubeconfig_path),
        # A killed worker's lease and unacknowledged message come back within seconds.
        "RECONCILE_LEASE_SECONDS": "3",
        "CELERY_VISIBILITY_TIMEOUT": "3",
    }
    _purge_queue()


def _purge_queue() -> None:
    if settings.REDIS_URL:
        import redis

        redis.Redis.from_url(settings.REDIS_URL).delete(settings.CELERY_TASK_DEFAULT_QUEUE)


@pytest.fixture
def start_worker(
    worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start a worker with ``worker_env`` as it is at the call, and ``env`` over it."""
    workers: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        worker = WorkerProcess({**worker_env, **env}, tmp_path / "worker.log")
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def start_beat(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], BeatProcess]]:
    """Start ``celery beat``, with its schedule file in this test's folder."""
    beats: list[BeatProcess] = []

    def start() -> BeatProcess:
        schedule = str(tmp_path / "beat-schedule")
        beat = BeatProcess(dict(worker_env), tmp_path / "beat.log", ["--schedule", schedule])
        beat.start()
        beats.append(beat)
        return beat

    yield start
    for beat in beats:
        beat.stop()


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """``.delay()`` runs the task in-process, as a worker would on receiving it."""
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = False
