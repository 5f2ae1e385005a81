"""Workloads as the platform's deploy system makes them, and what a test reads of them."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from django.conf import settings as django_settings

from networking import passes as reconciler
from networking.cluster.desired import SECRETS_ANNOTATION, SHARED_SECRETS
from networking.models import Project
from tests import deploy_system
from tests.cluster_fixtures import Cluster

NAME = "INTERNAL_API_SECRET"


def deploy(cluster: Cluster, namespace: str, service: str, *, replicas: int = 0) -> None:
    """What the deploy system does: one Deployment per service, labelled with its name."""
    cluster.apps.create_namespaced_deployment(
        namespace,
        deploy_system.deployment(namespace, service, replicas=replicas),  # type: ignore[arg-type]
        field_manager=deploy_system.FIELD_MANAGER,
        _preload_content=False,
    )


def deployment(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    response: Any = cluster.apps.read_namespaced_deployment(name, namespace, _preload_content=False)
    result: dict[str, Any] = json.loads(response.data)
    return result


def rollouts(cluster: Cluster, namespace: str, name: str) -> dict[str, str | None]:
    """Revision -> the shared-secrets annotation of that revision's pod template."""
    return template_annotations(cluster, namespace, name, SECRETS_ANNOTATION)


def template_annotations(
    cluster: Cluster, namespace: str, name: str, annotation: str
) -> dict[str, str | None]:
    """Revision -> ``annotation`` on that revision's pod template, for a workload's ReplicaSets."""
    selector = f"{django_settings.WORKLOAD_LABEL}={name}"
    response: Any = cluster.apps.list_namespaced_replica_set(
        namespace, label_selector=selector, _preload_content=False
    )
    result = {}
    for replica_set in json.loads(response.data)["items"]:
        revision = replica_set["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        template = replica_set["spec"]["template"]["metadata"].get("annotations") or {}
        result[revision] = template.get(annotation)
    return dict(sorted(result.items()))


def secret_data(cluster: Cluster, namespace: str) -> dict[str, str]:
    secret = cluster.core.read_namespaced_secret(SHARED_SECRETS, namespace)
    return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}


def settle(project: Project, timeout: float = 60) -> None:
    """Run reconcile passes, as the worker's follow-ups would, until nothing is left to do."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = reconciler.reconcile(project.pk)
        fresh = Project.objects.get(pk=project.pk)
        if outcome.recheck_in is None and fresh.in_sync:
            return
        assert time.monotonic() < deadline, f"did not settle: {fresh.sync_error}"
        time.sleep(0.2)
