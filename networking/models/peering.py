"""VPC peering between two Enterprise projects, and the e-mails it sends."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from django.conf import settings
from django.db import models
from django.db.models.functions import Greatest, Least

from networking import plain_text

if TYPE_CHECKING:
    from networking.models.projects import Project


class PeeringRequest(models.Model):
    """A request to connect two projects' private networks (Enterprise), and its life.

    See ``networking/peering.py`` for the transitions; every one is kept in ``history``.
    """

    class Status(models.TextChoices):
        PENDING_ACCEPTANCE = "pending_acceptance", "Waiting for the other organization"
        PENDING_SUPPORT = "pending_support", "Waiting for support"
        APPROVED = "approved", "Approved, being connected"
        ACTIVE = "active", "Active"
        REJECTED = "rejected", "Rejected by support"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"
        REVOKING = "revoking", "Revoked, being disconnected"
        REVOKED = "revoked", "Revoked"

    PENDING: ClassVar[frozenset[str]] = frozenset(
        {Status.PENDING_ACCEPTANCE, Status.PENDING_SUPPORT}
    )
    # States in which the pair is taken: no second request for it.
    OPEN: ClassVar[frozenset[str]] = frozenset(
        {
            Status.PENDING_ACCEPTANCE,
            Status.PENDING_SUPPORT,
            Status.APPROVED,
            Status.ACTIVE,
            Status.REVOKING,
        }
    )
    # States in which the NetworkPolicies admitting each other should exist.
    CONNECTED: ClassVar[frozenset[str]] = frozenset({Status.APPROVED, Status.ACTIVE})
    # States only the worker moves on, once both namespaces hold (or dropped) their policy.
    CATCHING_UP: ClassVar[frozenset[str]] = frozenset({Status.APPROVED, Status.REVOKING})
    # States a pass of either project looks at: to connect, connected, or being revoked.
    IN_FLIGHT: ClassVar[tuple[str, ...]] = (Status.APPROVED, Status.ACTIVE, Status.REVOKING)

    requester_project = models.ForeignKey(
        "networking.Project", on_delete=models.CASCADE, related_name="peering_requests_sent"
    )
    target_project = models.ForeignKey(
        "networking.Project", on_delete=models.CASCADE, related_name="peering_requests_received"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    justification = models.TextField(validators=[plain_text.multiline])
    status = models.CharField(max_length=30, choices=Status)
    decision_reason = models.TextField(blank=True, validators=[plain_text.multiline])
    # Which namespaces hold their policy now (set by each project's reconcile).
    requester_side_applied = models.BooleanField(default=False)
    target_side_applied = models.BooleanField(default=False)
    # [{"status": ..., "by": username or "system", "at": iso time, "reason": ...}]
    history = models.JSONField(default=list, blank=True)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                Least("requester_project", "target_project"),
                Greatest("requester_project", "target_project"),
                condition=models.Q(
                    status__in=[
                        "pending_acceptance",
                        "pending_support",
                        "approved",
                        "active",
                        "revoking",
                    ]
                ),
                name="one_open_peering_per_pair",
            ),
            models.CheckConstraint(
                condition=~models.Q(requester_project=models.F("target_project")),
                name="no_peering_with_itself",
            ),
        ]

    def __str__(self) -> str:
        return f"Peering {self.requester_project} ↔ {self.target_project} ({self.status})"

    def peer_of(self, project: Project) -> Project:
        return (
            self.target_project
            if project.pk == self.requester_project_id
            else (self.requester_project)
        )

    @property
    def needs_acceptance(self) -> bool:
        return self.requester_project.organization_id != self.target_project.organization_id


class PeeringNotification(models.Model):
    """An email about a peering's new state, kept until it has been sent: an outbox.

    Written in the transaction that made the change, so neither a broker outage nor a lost
    message loses it (beat sends what is left), and claimed before sending, so a task
    delivered twice sends it once.
    """

    peering = models.ForeignKey(
        PeeringRequest, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.CharField(max_length=30)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=models.Q(sent_at__isnull=True),
                name="unsent_notifications",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} for peering {self.peering_id}"
