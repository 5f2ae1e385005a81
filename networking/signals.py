"""Receivers that turn row changes into work for the cluster."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete
from django.dispatch import receiver

from networking import enqueue
from networking.models import Project


@receiver(post_delete, sender=Project, dispatch_uid="networking.project_namespace_cleanup")
def delete_namespace_of_deleted_project(sender: type[Project], instance: Project, **_: Any) -> None:
    """A deleted project's namespace goes once the deletion commits (the task re-checks)."""
    enqueue.after_commit(enqueue.DELETE_NAMESPACE_IF_ORPHANED, instance.namespace)
