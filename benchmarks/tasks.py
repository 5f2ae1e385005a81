"""A task that does nothing but say it ran: the broker-and-worker round trip to compare with."""

from __future__ import annotations

import functools
from typing import Any

import redis
from celery import shared_task
from django.conf import settings


@functools.cache
def _redis() -> Any:
    """One connection pool per worker, so a round trip does not pay for a new connection."""
    return redis.Redis.from_url(settings.REDIS_URL)


@shared_task
def touch(key: str) -> None:
    _redis().set(key, 1, ex=60)


@shared_task
def apply_probe(key: str, namespace: str, port: int) -> None:
    """One server-side apply of a Service, as ``kubectl apply --server-side`` makes it.

    The floor under "commit to in sync": a change cannot be in the cluster sooner than a task
    that does nothing but write it. Its own namespace and field manager, so it touches nothing
    the reconcile loop owns.
    """
    from kubernetes import client

    from networking.cluster.kube import APPLY_CONTENT_TYPE, api_client

    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {
            "ports": [{"name": "p", "port": port, "protocol": "TCP"}],
            "selector": {"app": "probe"},
        },
    }
    response: Any = client.CoreV1Api(api_client()).patch_namespaced_service(
        "probe",
        namespace,
        body,
        field_manager="bench-kubectl",
        force=True,
        _content_type=APPLY_CONTENT_TYPE,
        _preload_content=False,
    )
    # Read to the end, as the backend does, so the connection goes back to the pool: unread,
    # the next probe would pay for a new TLS connection (about 3 ms here).
    response.data  # noqa: B018
    _redis().set(key, 1, ex=60)


@shared_task
def apply_many_probe(key: str, namespace: str, count: int) -> None:
    """A new namespace and ``count`` new Services, one server-side apply after another, as
    ``kubectl apply --server-side -f`` of a folder of them makes them: the reference for a new
    project's first pass (which writes the same objects, several at once)."""
    from kubernetes import client

    from networking.cluster.kube import APPLY_CONTENT_TYPE, api_client

    core = client.CoreV1Api(api_client())
    options: dict[str, Any] = {
        "field_manager": "bench-kubectl",
        "force": True,
        "_content_type": APPLY_CONTENT_TYPE,
        "_preload_content": False,
    }
    namespace_body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    response: Any = core.patch_namespace(namespace, namespace_body, **options)
    response.data  # noqa: B018  (read to the end: the connection goes back to the pool)
    for index in range(count):
        name = f"s{index}"
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "ports": [{"name": "p", "port": 3000, "protocol": "TCP"}],
                "selector": {"app": name},
            },
        }
        response = core.patch_namespaced_service(name, namespace, body, **options)
        response.data  # noqa: B018
    _redis().set(key, 1, ex=60)
