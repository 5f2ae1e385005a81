"""Peering notification emails, sent from an outbox (``PeeringNotification``).

A row is written with the change it announces; the task (or, failing that, beat) claims it
with a compare-and-swap on ``sent_at`` and only then sends, so every email goes out once. If
sending fails the claim is released and beat tries again later.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import timezone

from networking import plain_text
from networking.models import Membership, PeeringNotification

logger = logging.getLogger(__name__)

SUBJECTS = {
    "requested": "New VPC peering request",
    "accepted": "Peering request accepted, waiting for support",
    "approved": "Peering approved: connecting the projects",
    "rejected": "Peering request rejected",
    "cancelled": "Peering request cancelled",
    "expired": "Peering request expired",
    "active": "Peering active",
    "revoked": "Peering revoked: disconnecting the projects",
    "revoked-done": "Peering disconnected",
}
# Left this long for its own task before beat sends it instead.
PENDING_AFTER = timedelta(seconds=30)
BATCH = 200


def deliver(notification_id: int) -> int:
    """Send one notification unless it was sent already; how many emails went out."""
    now = timezone.now()
    claimed = PeeringNotification.objects.filter(pk=notification_id, sent_at__isnull=True).update(
        sent_at=now
    )
    if not claimed:
        return 0
    notification = PeeringNotification.objects.select_related(
        "peering__requester_project__organization", "peering__target_project__organization"
    ).get(pk=notification_id)
    try:
        return _send(notification)
    except Exception:
        # Release the claim: beat sends it on a later round.
        PeeringNotification.objects.filter(pk=notification_id, sent_at=now).update(sent_at=None)
        raise


def deliver_pending(now: datetime | None = None) -> int:
    """Send notifications whose own task never ran (a broker outage, a lost message)."""
    cutoff = (now or timezone.now()) - PENDING_AFTER
    pending = PeeringNotification.objects.filter(
        sent_at__isnull=True, created_at__lte=cutoff
    ).values_list("pk", flat=True)[:BATCH]
    sent = 0
    for notification_id in list(pending):
        try:
            sent += deliver(notification_id)
        except Exception:
            logger.exception("Peering notification %s could not be sent", notification_id)
    return sent


def _send(notification: PeeringNotification) -> int:
    request = notification.peering
    if notification.event not in SUBJECTS or not request.history:
        return 0
    User = get_user_model()
    organizations = [
        request.requester_project.organization_id,
        request.target_project.organization_id,
    ]
    owners = set(
        User.objects.filter(
            memberships__organization__in=organizations,
            memberships__role=Membership.Role.OWNER,
            is_active=True,
        )
        .exclude(email="")
        .values_list("email", flat=True)
    )
    staff = set(
        User.objects.filter(is_staff=True, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    body = render_to_string(
        "emails/peering.txt",
        {"peering": request, "event": notification.event, "last": request.history[-1]},
    )
    pair = f"{request.requester_project.name} ↔ {request.target_project.name}"
    # Names are validated as one line of printable text; this keeps older rows safe too.
    subject = plain_text.header_safe(f"[Stackblaze] {SUBJECTS[notification.event]}: {pair}")
    sent = 0
    for recipients in (sorted(owners), sorted(staff - owners)):
        if recipients:
            sent += send_mail(subject, body, None, recipients)
    return sent
