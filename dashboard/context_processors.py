"""Template context every page gets."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def cluster(request: HttpRequest) -> dict[str, Any]:
    """What the backend in use does: only a real cluster assigns ClusterIPs."""
    return {"assigns_addresses": settings.CLUSTER_BACKEND == "kubernetes"}
