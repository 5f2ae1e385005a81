"""The audit log: who did what to which object, and when (never a secret value)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.db import models, transaction

if TYPE_CHECKING:
    from networking.models.projects import Project


def via_token_of(actor: Any) -> str:
    """The name of the API token ``actor`` is acting with, or "" in a browser session.

    The API's authentication marks the request's user with the token it presented
    (``via_token``), so every domain function that records who did something says so too.
    """
    return str(getattr(actor, "via_token", "") or "")


def actor_label(actor: Any, *, nobody: str = "system") -> str:
    """Who did something, as a log reads it: "alice", "alice via token ci-deploy", "system"."""
    if actor is None:
        return nobody
    via = via_token_of(actor)
    return f"{actor.get_username()} via token {via}" if via else str(actor.get_username())


class Standing(Protocol):
    """What a request was let into an organization as (``networking.access.Standing``)."""

    def confirm(self) -> None:
        """Read the membership again under lock; ``PermissionDenied`` if it no longer allows
        what the request was let in to do."""


def confirm_standing(actor: Any, organization_id: int) -> None:
    """Confirm, inside the current transaction, that ``actor`` may still act in the organization.

    Only an actor let in through a membership there carries a standing for it
    (``networking.access`` hands it over, as the API's authentication hands over ``via_token``);
    the system, the worker and support staff carry none, and nothing is checked for them.
    """
    standings = getattr(actor, "standings", None)
    standing: Standing | None = standings.get(organization_id) if standings else None
    if standing is not None:
        standing.confirm()


class AuditEvent(models.Model):
    """Who did what to which object, and when. Never holds a secret value."""

    class Action(models.TextChoices):
        PROJECT_CREATED = "project.created", "created the project"
        PROJECT_RENAMED = "project.renamed", "renamed the project"
        PROJECT_DELETED = "project.deleted", "deleted the project"
        MEMBER_ADDED = "member.added", "added a member"
        MEMBER_ROLE_CHANGED = "member.role_changed", "changed the role of"
        MEMBER_REMOVED = "member.removed", "removed a member"
        SERVICE_CREATED = "service.created", "created a service"
        SERVICE_RENAMED = "service.renamed", "renamed a service"
        SERVICE_PORTS_CHANGED = "service.ports_changed", "changed a service’s ports"
        SERVICE_DELETED = "service.deleted", "deleted a service"
        CREDENTIALS_REVEALED = "service.credentials_revealed", "revealed database credentials"
        SECRET_CREATED = "secret.created", "created a shared secret"
        SECRET_UPDATED = "secret.updated", "changed which services receive a shared secret"
        SECRET_DELETED = "secret.deleted", "deleted a shared secret"
        SECRET_REVEALED = "secret.revealed", "revealed a shared secret"
        ROTATION_STARTED = "secret.rotation_started", "started rotating a shared secret"
        ROTATION_PHASE = "secret.rotation_phase", "moved a rotation to its next phase"
        ROTATION_GRACE_ENDED = "secret.rotation_grace_ended", "ended a rotation’s grace window"
        ROTATION_COMPLETED = "secret.rotation_completed", "completed a rotation"
        REFERENCE_ADDED = "service.reference_added", "gave a service the address of"
        REFERENCE_REMOVED = "service.reference_removed", "took from a service the address of"
        ALIAS_EXTENDED = "service.alias_extended", "kept an old hostname resolving longer"
        ALIAS_ENDED = "service.alias_ended", "ended an old hostname"
        ALIAS_EXPIRED = "service.alias_expired", "let an old hostname expire"
        PEERING_REQUESTED = "peering.requested", "requested VPC peering"
        PEERING_ACCEPTED = "peering.accepted", "accepted a peering request"
        PEERING_APPROVED = "peering.approved", "approved a peering request"
        PEERING_REJECTED = "peering.rejected", "rejected a peering request"
        PEERING_CANCELLED = "peering.cancelled", "cancelled a peering request"
        PEERING_EXPIRED = "peering.expired", "let a peering request expire"
        PEERING_ACTIVE = "peering.active", "connected a peering"
        PEERING_REVOKED = "peering.revoked", "revoked a peering"
        PEERING_DISCONNECTED = "peering.disconnected", "disconnected a peering"
        TOKEN_CREATED = "token.created", "created an API token"
        TOKEN_FIRST_USED = "token.first_used", "used an API token for the first time"
        TOKEN_REVOKED = "token.revoked", "revoked an API token"
        CONNECTION_TESTED = "service.connection_tested", "tested the connection to"
        MTLS_ENABLED = "mtls.enabled", "turned on mutual TLS"
        MTLS_CALLERS_CHANGED = "mtls.callers_changed", "changed who may call"
        MTLS_RENEWED = "mtls.renewed", "renewed service certificates"
        CA_ROTATION_STARTED = "mtls.ca_rotation_started", "started rotating the project’s CA"
        CA_ROTATION_PHASE = "mtls.ca_rotation_phase", "moved a CA rotation to its next phase"
        CA_ROTATION_COMPLETED = "mtls.ca_rotation_completed", "completed a CA rotation"

    organization = models.ForeignKey(
        "networking.Organization", on_delete=models.CASCADE, related_name="audit_events"
    )
    project = models.ForeignKey(
        "networking.Project",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="audit_events",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    # Kept apart from ``actor`` so the log still reads right after a user is deleted.
    actor_label = models.CharField(max_length=150)
    # The API token the change was made with ("" in a browser session): "alice via token ci".
    via_token = models.CharField(max_length=50, blank=True)
    action = models.CharField(max_length=64, choices=Action)
    target = models.CharField(max_length=200)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"], name="audit_by_project")]

    def __str__(self) -> str:
        return f"{self.actor_display} {self.get_action_display()} {self.target}"

    @property
    def actor_display(self) -> str:
        """Who, as people read it: "alice", or "alice via token ci-deploy"."""
        if self.via_token:
            return f"{self.actor_label} via token {self.via_token}"
        return self.actor_label

    @classmethod
    def record(
        cls,
        *,
        organization_id: int,
        project: Project | None,
        actor: Any,
        action: AuditEvent.Action,
        target: str,
        details: dict[str, Any] | None = None,
        confirm: bool = True,
    ) -> AuditEvent:
        """One event; ``project`` None for the organization's own log (team, deletions).

        Every change records its event inside the transaction that makes it, so this is where a
        member's standing is confirmed (``confirm_standing``): a member removed, or given a role
        that can't make the change, while the request was on its way is refused here and the
        whole transaction rolls back. ``confirm`` False only for a change that confirmed it
        before it altered the actor's own membership (``networking.teams``: someone leaving).
        """
        with transaction.atomic(savepoint=False):
            if confirm:
                confirm_standing(actor, organization_id)
            return cls.objects.create(
                organization_id=organization_id,
                project=project,
                actor=actor if actor is not None and actor.is_authenticated else None,
                actor_label=actor.get_username() if actor is not None else "system",
                via_token=via_token_of(actor),
                action=action,
                target=target,
                details=details or {},
            )
