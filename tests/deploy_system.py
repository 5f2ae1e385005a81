"""What the platform's deploy system creates for a service: one Deployment, with its label.

Shared by the tests and the benchmarks, which create such workloads the way the deploy system
would (under its own field manager), so the worker's server-side apply meets real objects.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

FIELD_MANAGER = "deploy-system"


def deployment(namespace: str, service: str, *, replicas: int = 0) -> dict[str, Any]:
    labels = {settings.WORKLOAD_LABEL: service}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": service, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example/app:1",
                            "env": [{"name": "PORT", "value": "8080"}],
                        }
                    ]
                },
            },
        },
    }
