"""Receivers that turn row changes into work for the cluster."""

from __future__ import annotations

from typing import Any

from django.db.models import F
from django.db.models.signals import post_delete
from django.dispatch import receiver

from networking import enqueue
from networking.models import Project, Service


@receiver(post_delete, sender=Project, dispatch_uid="networking.project_namespace_cleanup")
def delete_namespace_of_deleted_project(sender: type[Project], instance: Project, **_: Any) -> None:
    """A deleted project's namespace goes once the deletion commits (the task re-checks)."""
    enqueue.after_commit(enqueue.DELETE_NAMESPACE_IF_ORPHANED, instance.namespace)


@receiver(post_delete, sender=Service, dispatch_uid="networking.service_removed")
def note_service_removed(
    sender: type[Service], instance: Service, origin: Any = None, **_: Any
) -> None:
    """A service is gone: its project's next change generation is one that removed a service,
    so a worker that knows the services as of before reads them all again (``lease.claim``).

    As the row goes, in its transaction, however it was deleted (``delete_once``, or any
    queryset's delete); not when its whole project (or organization) goes with it: one
    write per service to a row on its way out would be all such a deletion cost.
    """
    if origin is not None and not (
        isinstance(origin, Service) or getattr(origin, "model", None) is Service
    ):
        return
    Project.objects.filter(pk=instance.project_id).update(
        services_removed_generation=F("generation") + 1
    )
