"""The backend this deployment uses, chosen by ``settings.CLUSTER_BACKEND``.

Kept apart from ``networking.cluster.backends`` (the types every backend shares) so that the
backends import those types and nothing imports a backend back.
"""

from __future__ import annotations

from django.conf import settings

from networking.cluster.backends import Backend


def get_backend() -> Backend:
    # Imported here: a deployment writing manifests never loads the Kubernetes client.
    if settings.CLUSTER_BACKEND == "kubernetes":
        from networking.cluster.kube import KubernetesBackend

        return KubernetesBackend.from_settings()
    from networking.cluster.manifests import ManifestsBackend

    return ManifestsBackend(settings.MANIFESTS_DIR)
