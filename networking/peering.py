"""VPC peering between two projects: request, acceptance, support's decision, connection.

The life of a request, in the style of AWS VPC peering::

    requested ──(other organization?)──> pending acceptance ──accept──> pending support
        └──(same organization)───────────────────────────────────────> pending support
    pending support ──approve──> approved ──(both namespaces have their policy)──> active
    pending support ──reject (with a reason)──> rejected
    pending (either) ──cancel (either side)──> cancelled;  ──7 days──> expired
    approved / active ──revoke (either side)──> revoking ──(both policies gone)──> revoked

Every transition happens under a row lock, records who made it in ``history`` and in both
projects' audit logs, and sends the notification emails once the transaction commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from networking import enqueue, plain_text
from networking.models import (
    AuditEvent,
    Membership,
    Notification,
    Organization,
    PeeringNotification,
    PeeringRequest,
    Project,
    actor_label,
)

Status = PeeringRequest.Status
EXPIRES_AFTER = timedelta(days=7)


class PeeringRefused(Exception):
    """A request or transition that is not allowed; ``str()`` says why, for the user.

    ``code`` says what kind of refusal it is, for the API's status: "conflict" (the peering's
    state or another open request stands in the way, or the project is the requester itself),
    "forbidden" (not this person or plan), "unknown" (no Enterprise project has that ID) or
    "invalid" (the input).
    """

    def __init__(self, message: str, *, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


def _enter(
    peering: PeeringRequest, status: str, actor: Any, *, reason: str = "", now: datetime
) -> None:
    peering.status = status
    peering.history = [
        *peering.history,
        {"status": status, "by": actor_label(actor), "at": now.isoformat(), "reason": reason},
    ]


def _record(
    peering: PeeringRequest,
    actor: Any,
    action: AuditEvent.Action,
    *,
    changes_cluster: bool,
    event: str,
) -> None:
    """Audit on both sides; bump both generations if the desired policies changed; notify."""
    for project in (peering.requester_project, peering.target_project):
        peer = peering.peer_of(project)
        details = {"peer": peer.uid, "peer_name": peer.name, "request": peering.pk}
        target = f"peering with {peer.name}"
        if changes_cluster:
            project.record_change(actor=actor, action=action, target=target, details=details)
        else:
            project.audit(actor=actor, action=action, target=target, details=details)
    notification = PeeringNotification.objects.create(peering=peering, event=event)
    enqueue.after_commit(enqueue.SEND_PEERING_NOTIFICATION, notification.pk)
    # And in the header of whoever it concerns, in the same transaction.
    Notification.announce_peering(peering, event, actor=actor)


def _locked(peering: PeeringRequest) -> PeeringRequest:
    return (
        PeeringRequest.objects.select_for_update()
        .select_related("requester_project__organization", "target_project__organization")
        .get(pk=peering.pk)
    )


def _refuse_unless(peering: PeeringRequest, allowed: Iterable[str], verb: str) -> None:
    if peering.status not in allowed:
        raise PeeringRefused(
            f"This peering is {peering.get_status_display().lower()}: it can’t be {verb}.",
            code="conflict",
        )


def _expire_if_due(peering: PeeringRequest, now: datetime) -> bool:
    """Expire a pending request past its deadline; True if it just expired."""
    if peering.status in PeeringRequest.PENDING and peering.expires_at <= now:
        _enter(peering, Status.EXPIRED, None, now=now)
        peering.save(update_fields=["status", "history", "updated_at"])
        _record(
            peering, None, AuditEvent.Action.PEERING_EXPIRED, changes_cluster=False, event="expired"
        )
        return True
    return False


def _refuse_expired(verb: str) -> PeeringRefused:
    return PeeringRefused(
        f"This request expired: nobody decided on it within 7 days, so it can’t be {verb}. "
        "Request peering again.",
        code="conflict",
    )


def _refuse_control_characters(text: str) -> None:
    try:
        plain_text.multiline(text)
    except ValidationError as error:
        raise PeeringRefused(error.messages[0]) from None


def _already_open(existing: PeeringRequest, requester_project: Project) -> PeeringRefused:
    if existing.status in PeeringRequest.PENDING:
        return PeeringRefused(
            f"A peering request between {requester_project.name} and this project is "
            "already pending.",
            code="conflict",
        )
    return PeeringRefused(
        f"{requester_project.name} and this project are already peered.", code="conflict"
    )


def unknown_target(target_uid: str) -> str:
    """The one answer for an ID that is no Enterprise project the requester may learn about.

    It states both causes (a typo, or a project whose organization is on another plan) and
    what to do about each, without saying which applies: see ``_not_enterprise``.
    """
    return (
        f"No Enterprise project has the ID “{target_uid[:20]}”. Check the ID with the other "
        "team (it is on their project’s Settings page). If it is right, that project’s "
        "organization is not on the Enterprise plan: peering needs Enterprise on both sides, "
        "so ask its owner to upgrade."
    )


def _not_enterprise(target_uid: str, actor: Any) -> PeeringRefused:
    """Why ``target_uid`` can't be peered with, in as much detail as ``actor`` may know.

    Which IDs exist, and on what plan, is not for any Enterprise owner to find out by trying:
    a stranger gets the same answer for a typo and for another plan's project. Someone who
    belongs to the target's organization already sees its projects and plan, so they are told
    what stands in the way (its plan) and what to do; nothing is revealed that they can't read
    on their own project list. A request made with an API token reaches one organization
    only: it is a stranger to every other, whatever its holder belongs to.
    """
    actor_id = getattr(actor, "pk", None)
    standings = getattr(actor, "standings", None) or {}
    if any(standing.token_role is not None for standing in standings.values()):
        actor_id = None
    target = (
        Project.objects.select_related("organization")
        .filter(uid=target_uid, organization__memberships__user_id=actor_id)
        .first()
        if actor_id is not None
        else None
    )
    if target is None:
        return PeeringRefused(unknown_target(target_uid), code="unknown")
    organization = target.organization
    return PeeringRefused(
        f"{target.name} belongs to {organization.name}, which is on the "
        f"{organization.get_plan_display()} plan: VPC peering needs both projects on the "
        f"Enterprise plan. Once an owner of {organization.name} has upgraded it to "
        "Enterprise, request again.",
        code="forbidden",
    )


def request_peering(
    requester_project: Project, target_uid: str, justification: str, *, actor: Any
) -> PeeringRequest:
    """An owner of ``requester_project``'s organization asks to peer with ``target_uid``."""
    target_uid = target_uid.strip().lower()
    if requester_project.organization.plan != Organization.Plan.ENTERPRISE:
        raise PeeringRefused(
            "VPC peering is part of the Enterprise plan. Upgrade, or call the other project's "
            "public URL instead.",
            code="forbidden",
        )
    if target_uid == requester_project.uid:
        raise PeeringRefused("A project can’t be peered with itself.", code="conflict")
    target = (
        Project.objects.select_related("organization")
        .filter(uid=target_uid, organization__plan=Organization.Plan.ENTERPRISE)
        .first()
    )
    if target is None:
        # One answer for an unknown ID and for another plan's project, unless the requester
        # belongs to that project's organization (``_not_enterprise``).
        raise _not_enterprise(target_uid, actor)
    if not justification.strip():
        raise PeeringRefused("Say why these projects need to talk privately: support reads it.")
    _refuse_control_characters(justification)
    now = timezone.now()
    pair = Q(requester_project=requester_project, target_project=target) | Q(
        requester_project=target, target_project=requester_project
    )
    try:
        with transaction.atomic():
            existing = (
                PeeringRequest.objects.select_for_update()
                .filter(pair, status__in=PeeringRequest.OPEN)
                .first()
            )
            if existing is not None:
                _expire_if_due(existing, now)
                if existing.status != Status.EXPIRED:
                    raise _already_open(existing, requester_project)
            peering = PeeringRequest(
                requester_project=requester_project,
                target_project=target,
                requested_by=actor,
                justification=justification.strip()[:2000],
                expires_at=now + EXPIRES_AFTER,
            )
            first = (
                Status.PENDING_ACCEPTANCE if peering.needs_acceptance else Status.PENDING_SUPPORT
            )
            _enter(peering, first, actor, now=now)
            peering.save()
            _record(
                peering,
                actor,
                AuditEvent.Action.PEERING_REQUESTED,
                changes_cluster=False,
                event="requested",
            )
    except IntegrityError:
        # Another request for the pair (from either side) committed first: the row lock above
        # has nothing to lock while no request exists, so the constraint decides.
        winner = PeeringRequest.objects.filter(pair, status__in=PeeringRequest.OPEN).first()
        if winner is None:
            raise
        raise _already_open(winner, requester_project) from None
    return peering


def _move(
    peering: PeeringRequest,
    *,
    actor: Any,
    allowed: Iterable[str],
    to: str,
    verb: str,
    action: AuditEvent.Action,
    event: str,
    changes_cluster: bool = False,
    check: Callable[[PeeringRequest], None] | None = None,
    reason: str = "",
) -> None:
    """One transition: lock, check who may, expire if due, move, record, notify."""
    now = timezone.now()
    with transaction.atomic():
        locked = _locked(peering)
        if check is not None:
            check(locked)
        expired = _expire_if_due(locked, now)
        if not expired:
            _refuse_unless(locked, allowed, verb)
            _enter(locked, to, actor, reason=reason, now=now)
            fields = ["status", "history", "updated_at"]
            if reason:
                locked.decision_reason = reason
                fields.append("decision_reason")
            locked.save(update_fields=fields)
            _record(locked, actor, action, changes_cluster=changes_cluster, event=event)
    if expired:  # raised after the commit, so the expiry itself is kept
        raise _refuse_expired(verb)


def accept(peering: PeeringRequest, *, actor: Any, project: Project) -> None:
    """An owner of the target side accepts: the request goes to support."""

    def target_side_only(locked: PeeringRequest) -> None:
        if project.pk != locked.target_project_id:
            raise PeeringRefused(
                "Only the other organization can accept this request.", code="forbidden"
            )

    _move(
        peering,
        actor=actor,
        allowed=[Status.PENDING_ACCEPTANCE],
        to=Status.PENDING_SUPPORT,
        verb="accepted",
        action=AuditEvent.Action.PEERING_ACCEPTED,
        event="accepted",
        check=target_side_only,
    )


def cancel(peering: PeeringRequest, *, actor: Any, project: Project) -> None:
    """Either side withdraws (or declines) a request that is still pending."""
    _move(
        peering,
        actor=actor,
        allowed=PeeringRequest.PENDING,
        to=Status.CANCELLED,
        verb="cancelled",
        action=AuditEvent.Action.PEERING_CANCELLED,
        event="cancelled",
    )


def _staff_check(staff: Any) -> Callable[[PeeringRequest], None]:
    def check(locked: PeeringRequest) -> None:
        if not getattr(staff, "is_staff", False):
            raise PeeringRefused("Only support staff decide on peering requests.", code="forbidden")
        organizations = [
            locked.requester_project.organization_id,
            locked.target_project.organization_id,
        ]
        conflict = (
            Membership.objects.filter(user=staff, organization__in=organizations)
            .select_related("organization")
            .first()
        )
        if conflict is not None:
            raise PeeringRefused(
                f"You belong to {conflict.organization.name}, one of the two organizations: "
                "another member of support must decide.",
                code="forbidden",
            )

    return check


def approve(peering: PeeringRequest, *, staff: Any) -> None:
    _move(
        peering,
        actor=staff,
        allowed=[Status.PENDING_SUPPORT],
        to=Status.APPROVED,
        verb="approved",
        action=AuditEvent.Action.PEERING_APPROVED,
        event="approved",
        changes_cluster=True,
        check=_staff_check(staff),
    )


def reject(peering: PeeringRequest, *, staff: Any, reason: str) -> None:
    reason = reason.strip()[:2000]
    if not reason:
        raise PeeringRefused("Give the customer a reason for the rejection.")
    _refuse_control_characters(reason)
    _move(
        peering,
        actor=staff,
        allowed=[Status.PENDING_SUPPORT],
        to=Status.REJECTED,
        verb="rejected",
        action=AuditEvent.Action.PEERING_REJECTED,
        event="rejected",
        check=_staff_check(staff),
        reason=reason,
    )


def revoke(peering: PeeringRequest, *, actor: Any, project: Project) -> None:
    """Either side disconnects an approved or active peering."""
    _move(
        peering,
        actor=actor,
        allowed=PeeringRequest.CONNECTED,
        to=Status.REVOKING,
        verb="revoked (cancel a pending request instead)",
        action=AuditEvent.Action.PEERING_REVOKED,
        event="revoked",
        changes_cluster=True,
    )


def expire_stale(now: datetime | None = None) -> int:
    """Beat: pending requests nobody decided on within 7 days expire."""
    now = now or timezone.now()
    expired = 0
    for peering_id in PeeringRequest.objects.filter(
        status__in=PeeringRequest.PENDING, expires_at__lte=now
    ).values_list("pk", flat=True):
        with transaction.atomic():
            peering = (
                PeeringRequest.objects.select_for_update()
                .select_related("requester_project", "target_project")
                .get(pk=peering_id)
            )
            if peering.status in PeeringRequest.PENDING:
                _expire_if_due(peering, now)
                expired += 1
    return expired


def connected_peerings(project: Project) -> list[PeeringRequest]:
    """Peerings whose policy this project's namespace should hold."""
    return [p for p in in_flight_peerings(project) if p.status in PeeringRequest.CONNECTED]


IN_FLIGHT = PeeringRequest.IN_FLIGHT

# What the Peering page promises: traffic flows (or stops) this soon after support approves
# (or either side revokes). Measured by the data-plane tests against a real enforcer.
SETTLES_WITHIN_SECONDS = 30


def in_flight_peerings(project: Project) -> list[PeeringRequest]:
    """Peerings a pass of this project looks at: to connect, connected, or being revoked."""
    return list(
        PeeringRequest.objects.filter(
            Q(requester_project=project) | Q(target_project=project), status__in=IN_FLIGHT
        ).select_related("requester_project", "target_project")
    )


@dataclass(frozen=True)
class _Applied:
    """What a pass that holds ``connected_ids`` means for one peering."""

    side: str
    applied: bool
    changed: bool
    activates: bool
    disconnects: bool

    @property
    def news(self) -> bool:
        return self.changed or self.activates or self.disconnects


def _applied(peering: PeeringRequest, project: Project, connected_ids: set[int]) -> _Applied:
    side = (
        "requester_side_applied"
        if peering.requester_project_id == project.pk
        else "target_side_applied"
    )
    applied = peering.pk in connected_ids
    sides = {
        "requester_side_applied": peering.requester_side_applied,
        "target_side_applied": peering.target_side_applied,
        side: applied,
    }
    both = all(sides.values())
    neither = not any(sides.values())
    return _Applied(
        side=side,
        applied=applied,
        changed=getattr(peering, side) != applied,
        activates=peering.status == Status.APPROVED and both,
        disconnects=peering.status == Status.REVOKING and neither,
    )


def needs_recording(
    project: Project, peerings: list[PeeringRequest], connected_ids: set[int]
) -> bool:
    """Whether ``record_applied`` would write anything, judged on rows read without a lock
    (``in_flight_peerings``): a pass of a project whose peerings all stand still writes nothing."""
    return any(_applied(p, project, connected_ids).news for p in peerings)


def record_applied(project: Project, connected_ids: set[int]) -> None:
    """After a successful pass: which peerings' policies this namespace now holds.

    A peering becomes active once both namespaces hold theirs, and revoked once neither does.
    """
    now = timezone.now()
    with transaction.atomic():
        peerings = (
            PeeringRequest.objects.select_for_update()
            .filter(Q(requester_project=project) | Q(target_project=project), status__in=IN_FLIGHT)
            .select_related("requester_project", "target_project")
        )
        for peering in peerings:
            outcome = _applied(peering, project, connected_ids)
            if not outcome.news:
                continue  # nothing new: an ordinary pass writes nothing here
            setattr(peering, outcome.side, outcome.applied)
            fields = [outcome.side, "updated_at"]
            activates, disconnects = outcome.activates, outcome.disconnects
            if activates:
                _enter(peering, Status.ACTIVE, None, now=now)
                fields += ["status", "history"]
                _record(
                    peering,
                    None,
                    AuditEvent.Action.PEERING_ACTIVE,
                    changes_cluster=False,
                    event="active",
                )
            elif disconnects:
                _enter(peering, Status.REVOKED, None, now=now)
                fields += ["status", "history"]
                _record(
                    peering,
                    None,
                    AuditEvent.Action.PEERING_DISCONNECTED,
                    changes_cluster=False,
                    event="revoked-done",
                )
            peering.save(update_fields=fields)
