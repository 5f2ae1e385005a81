"""Fixtures for the tests against the real API server (the ``cluster`` fixture itself is in
``tests/cluster_fixtures.py``, shared with the data-plane tests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings

from networking import passes
from networking.cluster import kube, liveness
from networking.cluster.informer import ClusterCache
from networking.cluster.watcher import Watcher
from tests.cluster_fixtures import Cluster


@pytest.fixture
def watcher(cluster: Cluster, transactional_db: Any, eager_tasks: None) -> Iterator[Watcher]:
    """The watcher in this process; the reconciles it asks for run at once (eager).

    On a client of its own, as in its own process: its lists and watches are not the
    reconcile's calls that ``cluster.http`` counts.
    """
    own_client = kube._api_client.__wrapped__(
        django_settings.KUBECONFIG, django_settings.KUBE_CONTEXT
    )
    watcher = Watcher(
        passes.watch_view,
        ClusterCache(own_client, django_settings.WORKLOAD_LABEL, watch_seconds=30),
    )
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    assert watcher.cache.wait_synced(60)
    yield watcher
    watcher.stop()
    thread.join(10)


@pytest.fixture
def watched(cluster: Cluster) -> Iterator[liveness.Signal]:
    """Say "watching" as a running watcher does (``test_watcher.py`` runs the real one)."""
    signal = liveness.Signal()
    signal.update(True)
    yield signal
    signal.close()
