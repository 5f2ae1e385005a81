"""Projects that are gone leave nothing behind in the cluster.

A namespace labelled as ours whose project no longer exists is deleted, with everything in it.
The database decides what is an orphan, read after the cluster was, so a project created
meanwhile (its row commits before its namespace can exist) is never mistaken for one. Only
namespaces carrying our managed-by label are ever considered or deleted.
"""

from __future__ import annotations

import logging

from networking.cluster.backend_choice import get_backend
from networking.cluster.backends import Backend
from networking.cluster.errors import ClusterError
from networking.models import Project

logger = logging.getLogger(__name__)


def delete_orphans(backend: Backend | None = None) -> list[str]:
    """Delete every managed namespace whose project is gone; the names deleted.

    Listing the namespaces raises ``ClusterError``; a namespace that cannot be deleted is
    logged and left for the next run, so one does not hold the others back.
    """
    backend = backend or get_backend()
    deleted = []
    for namespace in sorted(Project.orphaned_namespaces(backend.managed_namespaces())):
        try:
            if backend.delete_namespace(namespace):
                deleted.append(namespace)
                logger.info("Deleted namespace %s: its project no longer exists", namespace)
        except ClusterError as error:
            logger.warning("Could not delete orphaned namespace %s: %s", namespace, error.for_log)
    return deleted


def delete_if_orphaned(namespace: str, backend: Backend | None = None) -> bool:
    """Delete one namespace if its project is gone (and it is ours); raises ``ClusterError``."""
    if not Project.orphaned_namespaces([namespace]):
        return False
    if not (backend or get_backend()).delete_namespace(namespace):
        return False
    logger.info("Deleted namespace %s: its project no longer exists", namespace)
    return True
