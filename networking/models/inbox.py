"""The notifications in the header: what needs someone's attention, and who has read it.

One row per event per audience (``Notification``): the members of an organization, or, with no
organization, support staff. Who sees a row is decided when they look, from their memberships
then (``networking.inbox``), the way every page decides it: a member who joins later sees the
organization's earlier notifications, and one who is removed sees none of them any more.

Each row is written in the transaction that made the change it announces, so a notification
never tells of something that was rolled back, and nothing that committed goes untold. The
peering e-mails are a separate outbox (``PeeringNotification``) and stay as they were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from networking import live
from networking.models.tenancy import Membership

if TYPE_CHECKING:
    from networking.models.peering import PeeringRequest
    from networking.models.secrets import SharedSecret


_audiences = live.inbox_audiences


class Notification(models.Model):
    """Something that needs someone: a peering waiting for them, support's decision, a failed
    sync, a rotation stuck on a workload.

    For the members of ``organization`` whose role is at least ``for_role`` (those who can act
    on it), or for support staff when ``organization`` is None. ``title`` and ``detail`` are
    written once, in words a person reads, with the names as they were then.

    ``episode`` names a condition that lasts (a sync failing, a rotation waiting, a request
    waiting for a decision) while it lasts: one notification per episode, however many passes
    see it (a unique constraint decides), and it is cleared, with ``resolved_at`` set, when the
    condition ends, so the next episode is told again.
    """

    class Kind(models.TextChoices):
        PEERING_REQUESTED = "peering_requested", "Peering waiting for your acceptance"
        PEERING_PENDING_SUPPORT = "peering_pending_support", "Peering waiting for support"
        PEERING_APPROVED = "peering_approved", "Peering approved"
        PEERING_REJECTED = "peering_rejected", "Peering rejected"
        PEERING_ACTIVE = "peering_active", "Peering active"
        PEERING_REVOKED = "peering_revoked", "Peering revoked"
        PEERING_CANCELLED = "peering_cancelled", "Peering request cancelled"
        PEERING_EXPIRED = "peering_expired", "Peering request expired"
        SYNC_FAILED = "sync_failed", "Sync failed"
        ROTATION_STUCK = "rotation_stuck", "Rotation waiting for a workload"

    organization = models.ForeignKey(
        "networking.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    for_role = models.CharField(
        max_length=20, choices=Membership.Role, default=Membership.Role.VIEWER
    )
    project = models.ForeignKey(
        "networking.Project", on_delete=models.CASCADE, related_name="notifications"
    )
    secret = models.ForeignKey(
        "networking.SharedSecret",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
    )
    kind = models.CharField(max_length=40, choices=Kind)
    title = models.CharField(max_length=300)
    detail = models.TextField(blank=True)
    episode = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    # Kinds whose link is the project's Peering page (the support queue, for support's).
    PEERING_KINDS: ClassVar[frozenset[str]] = frozenset(
        {
            Kind.PEERING_REQUESTED,
            Kind.PEERING_APPROVED,
            Kind.PEERING_REJECTED,
            Kind.PEERING_ACTIVE,
            Kind.PEERING_REVOKED,
            Kind.PEERING_CANCELLED,
            Kind.PEERING_EXPIRED,
        }
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            # A reader's list and unread count: their organizations' rows, newest first.
            models.Index(fields=["organization", "-id"], name="notifications_by_org"),
            # What beat forgets, hourly (``forget_old``): found without reading the table.
            models.Index(fields=["created_at"], name="notifications_by_age"),
            # Support's: the rows with no organization.
            models.Index(
                fields=["-id"],
                condition=Q(organization__isnull=True),
                name="notifications_for_support",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["episode"], condition=~Q(episode=""), name="one_notification_per_episode"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.title}"

    def get_absolute_url(self) -> str:
        """Where to act on it: the page that shows what it is about."""
        if self.kind == self.Kind.PEERING_PENDING_SUPPORT:
            return reverse("support-queue")
        uid = self.project.uid
        if self.kind in self.PEERING_KINDS:
            return reverse("project-peering", args=[uid])
        if self.kind == self.Kind.SYNC_FAILED:
            return reverse("project-sync", args=[uid])
        if self.kind == self.Kind.ROTATION_STUCK and self.secret_id is not None:
            return reverse("secret-detail", args=[uid, self.secret_id])
        return reverse("project-overview", args=[uid])

    # -- Writing them ---------------------------------------------------------------------------

    @classmethod
    def announce(
        cls,
        kind: str,
        *,
        project_by_organization: Mapping[int | None, Any],
        title: str,
        detail: str = "",
        for_role: str = Membership.Role.VIEWER,
        episode: str = "",
        secret_id: int | None = None,
        read_by: Any = None,
    ) -> list[Notification]:
        """One row per audience (an organization's id, or None for support staff), each about
        that audience's project; the open pages' counts hear of it once this commits.

        With an ``episode`` that is still open, nothing is written (the first one told it).
        ``read_by``: the person whose change this announces, for whom it is not news.
        """
        # An episode is told once, to one audience (the constraint is on the episode alone).
        assert not episode or len(project_by_organization) == 1, "one audience per episode"
        rows = [
            Notification(
                organization_id=organization_id,
                project=project,
                secret_id=secret_id,
                kind=kind,
                for_role=for_role,
                title=title[:300],
                detail=detail,
                episode=episode,
            )
            for organization_id, project in project_by_organization.items()
        ]
        try:
            with transaction.atomic():  # a savepoint: a conflict leaves the caller's work be
                rows = Notification.objects.bulk_create(rows)
        except IntegrityError:
            return []  # the episode is open: told already, by a call that committed first
        if rows and read_by is not None and getattr(read_by, "is_authenticated", False):
            NotificationRead.objects.bulk_create(
                [NotificationRead(user_id=read_by.pk, notification=row) for row in rows],
                ignore_conflicts=True,
            )
        if rows:
            live.inbox_moved(_audiences(project_by_organization))
        return rows

    @classmethod
    def forget_old(cls, *, now: datetime | None = None, batch: int = 1000) -> int:
        """Drop what is older than ``NOTIFICATION_RETENTION_DAYS`` (beat, hourly), in batches,
        with its read marks; an episode still open (a sync failing for months) stays told.
        How many went. Keeps a reader's list and count as cheap in a year as in a week."""
        cutoff = (now or timezone.now()) - timedelta(days=settings.NOTIFICATION_RETENTION_DAYS)
        old = cls.objects.filter(created_at__lt=cutoff, episode="").order_by("pk")
        forgotten, audiences = 0, set[int | None]()
        while rows := list(old.values_list("pk", "organization_id")[:batch]):
            _, per_model = cls.objects.filter(pk__in=[pk for pk, _ in rows]).delete()
            forgotten += per_model.get(cls._meta.label, 0)
            audiences.update(organization_id for _, organization_id in rows)
        # An unread one gone: the open pages' counts must hear of it.
        live.inbox_moved(_audiences(audiences))
        return forgotten

    @classmethod
    def resolve(cls, episodes: Sequence[str]) -> int:
        """These conditions have ended: their notifications say so, and the next is told."""
        return cls.objects.filter(episode__in=list(episodes)).update(
            episode="", resolved_at=timezone.now()
        )

    @classmethod
    def announce_peering(cls, peering: PeeringRequest, event: str, *, actor: Any) -> None:
        """A peering's new state, to whoever it concerns (called by ``networking.peering``
        inside the transition's transaction, with ``event`` as its e-mail has it).

        Requested: the other organization's owners, whose acceptance it waits for (support,
        when both projects are one organization's). Accepted: support, whose decision it waits
        for. Approved, rejected, active, revoked, cancelled, expired: both organizations.
        """
        requester, target = peering.requester_project, peering.target_project
        pair = f"{requester.name} ↔ {target.name}"
        acceptance, decision = f"peering-{peering.pk}-acceptance", f"peering-{peering.pk}-support"
        both: dict[int | None, Any] = {
            target.organization_id: target,
            requester.organization_id: requester,
        }
        if event != "requested":
            cls.resolve([acceptance] if event == "accepted" else [acceptance, decision])
        if event == "requested" and peering.status == peering.Status.PENDING_ACCEPTANCE:
            cls.announce(
                cls.Kind.PEERING_REQUESTED,
                project_by_organization={target.organization_id: target},
                title=(
                    f"{requester.organization.name} asks to peer {requester.name} with "
                    f"{target.name}"
                ),
                detail=(
                    "Waiting for your acceptance: accept or decline it on the project’s Peering "
                    f"page within 7 days. Their reason: {peering.justification[:300]}"
                ),
                for_role=Membership.Role.OWNER,
                episode=acceptance,
                read_by=actor,
            )
        elif event in ("requested", "accepted"):
            cls.announce(
                cls.Kind.PEERING_PENDING_SUPPORT,
                project_by_organization={None: requester},
                title=f"Peering request waiting for your decision: {pair}",
                detail=(
                    f"Approve or reject it in the support queue. Their reason: "
                    f"{peering.justification[:300]}"
                ),
                episode=decision,
            )
        elif event in _PEERING_NEWS:
            kind, title, detail = _PEERING_NEWS[event]
            if event == "rejected":
                detail = f"{detail} {peering.decision_reason[:500]}"
            cls.announce(
                kind,
                project_by_organization=both,
                title=f"{title}: {pair}",
                detail=detail,
                read_by=actor,
            )

    @classmethod
    def announce_sync_failure(cls, project_id: int, error: str) -> None:
        """The project's sync gave up (no retry is scheduled): its members, once per failure
        episode (until a pass succeeds: ``end_sync_failure``), however many passes fail."""
        episode = f"sync-{project_id}"
        if cls.objects.filter(episode=episode).exists():
            return
        # The model by its relation: ``projects`` imports this module, not the other way.
        projects: Any = cls._meta.get_field("project").related_model
        found = projects._default_manager.filter(pk=project_id).first()
        if found is None:
            return
        cls.announce(
            cls.Kind.SYNC_FAILED,
            project_by_organization={found.organization_id: found},
            title=f"{found.name} could not be synced to the cluster",
            detail=(
                f"{error[:500]} The quick retries have stopped; the periodic resync tries again "
                "every few minutes. Fix the cause, then press Retry on the project’s Sync page "
                "to try at once."
            ),
            for_role=Membership.Role.MEMBER,
            episode=episode,
        )

    @classmethod
    def end_sync_failure(cls, project_id: int) -> int:
        """A pass of the project succeeded: its failure notification, if any, is resolved."""
        return cls.resolve([f"sync-{project_id}"])

    @classmethod
    def announce_rotation_stuck(cls, secret: SharedSecret, waiting_on: Sequence[str]) -> None:
        """A rotation's phase has waited on a workload's rollout for longer than
        ``ROTATION_STUCK_AFTER_SECONDS``: its project's members, once per phase (the next
        phase resolves it: ``end_rotation_wait``)."""
        started = secret.phase_started_at
        threshold = settings.ROTATION_STUCK_AFTER_SECONDS
        if started is None or (timezone.now() - started).total_seconds() < threshold:
            return
        episode = f"rotation-{secret.pk}"
        if cls.objects.filter(episode=episode).exists():
            return
        project = secret.project
        names = ", ".join(sorted(waiting_on)[:5])
        cls.announce(
            cls.Kind.ROTATION_STUCK,
            project_by_organization={project.organization_id: project},
            title=f"Rotation of {secret.name} is waiting for {names}",
            detail=(
                f"The rotation’s phase “{secret.get_rotation_phase_display()}” started "
                f"{int((timezone.now() - started).total_seconds() // 60)} minutes ago and waits "
                "until every receiving workload has rolled out. Check why the rollout does not "
                "finish (pods that can’t start, a paused Deployment); the rotation goes on by "
                "itself once it does, and refuses no request meanwhile."
            ),
            for_role=Membership.Role.MEMBER,
            episode=episode,
            secret_id=secret.pk,
        )

    @classmethod
    def end_rotation_wait(cls, secret_id: int) -> int:
        """The rotation moved on (or ended): its waiting notification, if any, is resolved."""
        return cls.resolve([f"rotation-{secret_id}"])


# event: kind, title, the first words of the detail.
_PEERING_NEWS: dict[str, tuple[str, str, str]] = {
    "approved": (
        Notification.Kind.PEERING_APPROVED,
        "Peering approved",
        "Support approved it: the two projects are being connected.",
    ),
    "rejected": (
        Notification.Kind.PEERING_REJECTED,
        "Peering rejected",
        "Support rejected it. Their reason:",
    ),
    "active": (
        Notification.Kind.PEERING_ACTIVE,
        "Peering active",
        "Both projects’ networks now admit each other’s traffic.",
    ),
    "revoked": (
        Notification.Kind.PEERING_REVOKED,
        "Peering revoked",
        "One side revoked it: the two projects are being disconnected.",
    ),
    "cancelled": (
        Notification.Kind.PEERING_CANCELLED,
        "Peering request cancelled",
        "One side cancelled or declined the request before it was decided.",
    ),
    "expired": (
        Notification.Kind.PEERING_EXPIRED,
        "Peering request expired",
        "Nobody decided on it within 7 days. Request peering again if it is still needed.",
    ),
}


class NotificationRead(models.Model):
    """One person has read one notification newer than their ``InboxState.read_up_to``.

    Dropped when "Mark all as read" moves the marker past it: the table holds at most the
    notifications someone opened one by one since they last marked everything read.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="reads")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "notification"], name="one_read_per_user_and_notification"
            )
        ]

    def __str__(self) -> str:
        return f"notification {self.notification_id} read by user {self.user_id}"


class InboxState(models.Model):
    """Per person: every notification up to ``read_up_to`` (an id) counts as read.

    "Mark all as read" moves it; notification ids only grow, so one number stands for any
    number of rows, in every organization the person belongs to.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    read_up_to = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"user {self.user_id} has read up to notification {self.read_up_to}"
