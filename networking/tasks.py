"""Celery tasks. Arguments are ids only: never a secret, never a model."""

from __future__ import annotations

import random
from typing import Any

from celery import Task, shared_task
from django.conf import settings

from networking import connection_tests, mtls, notifications, passes, peering, rotation
from networking.cluster import lease, orphans
from networking.cluster import reconcile as reconciler
from networking.cluster.errors import ClusterError
from networking.models import Notification, Project, ServiceAlias


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with jitter: about base·2ⁿ, capped, never two workers in step."""
    ceiling = min(
        settings.RECONCILE_RETRY_MAX_SECONDS, settings.RECONCILE_RETRY_BASE_SECONDS * 2**retries
    )
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not cryptography)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def reconcile_project(self: Task[Any, Any], project_id: int) -> str:
    """Apply one project's desired state; retry transient cluster errors with backoff."""
    try:
        # The first run is the project's queued message: the next change may queue another.
        outcome = passes.reconcile(project_id, take_queued=self.request.retries == 0)
    except reconciler.ReconcileFailed as failure:
        retries = self.request.retries
        will_retry = failure.error.transient and retries < settings.RECONCILE_MAX_RETRIES
        delay = backoff_seconds(retries) if will_retry else None
        if delay is not None and failure.error.retry_after:
            delay = max(delay, failure.error.retry_after)
        reconciler.record_failure(project_id, failure, retry_in=delay)
        if delay is not None:
            raise self.retry(countdown=delay) from None
        return "failed"
    if outcome.recheck_in is not None:
        # A rotation waits for rollouts or its grace window: look again then.
        reconcile_project.apply_async((project_id,), countdown=outcome.recheck_in)
    if outcome.status == "busy" and self.request.retries < settings.RECONCILE_MAX_RETRIES:
        # Another worker is applying and will pick up our change when done; but should it
        # have died, look again once its lease has lapsed.
        raise self.retry(countdown=outcome.lease_remaining + backoff_seconds(0))
    return outcome.status


@shared_task(acks_late=True)
def resync_all_projects() -> int:
    """Beat: reconcile what is behind, and re-read a few projects in full.

    Behind: a change whose message was lost or never sent (a broker outage), or a failed
    pass. That is one indexed query, and nothing is written or enqueued for a project in
    sync: drift in the cluster is the watcher's to notice, from its watches. A handful of the
    projects verified longest ago are also reconciled in full, reading everything, so even a
    change the watcher could not see (made while it was down) is repaired.
    """
    project_ids = reconciler.projects_to_resync()
    enqueued = 0
    for project_id in project_ids:
        if Project(pk=project_id).request_reconcile(stale_after=settings.RESYNC_SECONDS):
            enqueued += 1
    return enqueued


@shared_task(acks_late=True)
def delete_orphan_namespaces() -> int:
    """Delete every namespace of ours whose project no longer exists; how many."""
    return len(orphans.delete_orphans())


@shared_task(bind=True, acks_late=True, max_retries=None)
def delete_namespace_if_orphaned(self: Task[Any, Any], namespace: str) -> bool:
    """Delete one namespace if its project no longer exists; retry transient cluster errors."""
    try:
        return orphans.delete_if_orphaned(namespace)
    except ClusterError as error:
        retries = self.request.retries
        if error.transient and retries < settings.RECONCILE_MAX_RETRIES:
            raise self.retry(countdown=backoff_seconds(retries)) from None
        raise


@shared_task(acks_late=True)
def requeue_abandoned_reconciles() -> int:
    """Beat, every half lease: hand the projects of workers that died mid-pass to live ones."""
    abandoned = lease.abandoned_leases()
    for project_id, token in abandoned:
        # Enqueue first: should this worker die in between, the next tick enqueues it again.
        reconcile_project.delay(project_id)
        lease.clear_abandoned_lease(project_id, token)
    return len(abandoned)


@shared_task(acks_late=True)
def expire_service_aliases() -> int:
    """Beat, every minute: renamed services' old hostnames whose time is up stop resolving."""
    return ServiceAlias.expire_due()


@shared_task(acks_late=True)
def rotate_due_secrets() -> int:
    """Beat: start the scheduled rotations that are due."""
    return rotation.start_due_rotations()


@shared_task(acks_late=True)
def expire_peering_requests() -> int:
    """Beat: peering requests not decided within 7 days expire."""
    return peering.expire_stale()


@shared_task(acks_late=True)
def send_peering_notification(notification_id: int) -> int:
    """Email both organizations' owners, and support, about a peering's new state."""
    return notifications.deliver(notification_id)


@shared_task(acks_late=True)
def send_pending_notifications() -> int:
    """Beat: send what a broker outage or a lost message held back."""
    return notifications.deliver_pending()


@shared_task(acks_late=True)
def renew_certificates() -> int:
    """Beat, every 10 minutes: projects whose service certificates are due get a pass that
    renews them, and those whose CA expires within a month a CA rotation; how many."""
    return mtls.renew_due() + mtls.rotate_expiring()


@shared_task(acks_late=True)
def forget_old_notifications() -> int:
    """Beat, hourly: the header's notifications older than the retention period go."""
    return Notification.forget_old()


@shared_task(acks_late=True)
def run_connection_test(test_id: int) -> str:
    """One step of a "Test connection"; schedules the next one (never waits in a task)."""
    step = connection_tests.advance(test_id)
    if step.look_again_in is not None:
        run_connection_test.apply_async((test_id,), countdown=step.look_again_in)
    return step.status
