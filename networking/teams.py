"""Who belongs to an organization, in which role: owners invite, change roles, remove.

Every change holds a lock on the organization's owner memberships, so two owners demoting
each other at the same moment cannot leave it with none: the last owner can be neither
removed nor demoted. Each change is one event in the organization's audit log.

The organization's row is locked first, and held until the change commits: every write by a
member confirms their membership under a lock on that row (``networking.access.Standing``), so a
removal or a role change waits for the writes already past that point, and the writes after it
see it. The owner making the change is confirmed the same way, before anything changes.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.dispatch import Signal

from networking import live
from networking.models import AuditEvent, Membership, Organization, confirm_standing

# Sent inside the transaction that takes someone out of an organization (``organization``,
# ``user_id``). Whatever credentials they hold there go with them: each receiver revokes its
# own and returns how many (the API's tokens: ``api.signals``); the audit event counts them.
member_removed = Signal()


class TeamChangeRefused(Exception):
    """A change that cannot be made, with the reason in words a user can act on."""


def _owners_locked(organization: Organization, actor: Any) -> list[int]:
    """Lock the organization's row, confirm that ``actor`` is still the owner they were when
    their request was let in, and return the owners' membership ids."""
    Organization.objects.select_for_update().filter(pk=organization.pk).first()
    # Now, before the change: it may be to the actor's own membership (an owner leaving or
    # stepping down), which the audit event must then not hold against them.
    confirm_standing(actor, organization.pk)
    return list(
        Membership.objects.select_for_update()
        .filter(organization=organization, role=Membership.Role.OWNER)
        .values_list("pk", flat=True)
    )


def _record(
    organization: Organization,
    actor: Any,
    action: AuditEvent.Action,
    target: str,
    details: dict[str, Any],
) -> None:
    AuditEvent.record(
        organization_id=organization.pk,
        project=None,
        actor=actor,
        action=action,
        target=target,
        details=details,
        confirm=False,  # confirmed before the change (``_owners_locked``)
    )


def _notifications_moved(user_id: int) -> None:
    """What the person may see changed: their open pages' unread count asks again at once
    (``networking.inbox``), instead of trusting its cached scope for up to half a minute."""
    live.inbox_moved([live.inbox_person(user_id)])


def _locked_member(
    organization: Organization, membership_id: int, actor: Any
) -> tuple[Membership | None, bool]:
    """The membership, locked after the organization's owners (see ``_owners_locked``), and
    whether it is the last owner's."""
    owners = _owners_locked(organization, actor)
    membership = (
        Membership.objects.select_for_update()
        .select_related("user")
        .filter(pk=membership_id, organization=organization)
        .first()
    )
    return membership, membership is not None and owners == [membership.pk]


def _last_owner(organization: Organization, membership: Membership) -> TeamChangeRefused:
    return TeamChangeRefused(
        f"{membership.user.get_username()} is the last owner of {organization.name}: "
        "make someone else an owner first."
    )


def invite(organization: Organization, who: str, role: str, *, actor: Any) -> Membership:
    """Add an existing user, found by username or email, in ``role``."""
    who = who.strip()
    if not who:
        raise TeamChangeRefused("Enter the username or email address of the person to add.")
    if role not in Membership.Role.values:
        raise TeamChangeRefused("Choose a role: owner, member or viewer.")
    users = get_user_model().objects.filter(
        Q(username__iexact=who) | Q(email__iexact=who), is_active=True
    )
    found = list(users[:2])
    if not found:
        raise TeamChangeRefused(
            f"No one has the username or email “{who[:100]}”. They need an account first; "
            "then add them here."
        )
    if len(found) > 1:
        raise TeamChangeRefused(f"Several accounts match “{who[:100]}”: use the username.")
    user = found[0]
    if user.is_staff:
        raise TeamChangeRefused("Support staff are never members of a customer organization.")
    try:
        with transaction.atomic():
            _owners_locked(organization, actor)
            membership = Membership.objects.create(user=user, organization=organization, role=role)
            _record(
                organization,
                actor,
                AuditEvent.Action.MEMBER_ADDED,
                user.get_username(),
                {"role": role},
            )
            _notifications_moved(user.pk)
    except IntegrityError:
        raise TeamChangeRefused(
            f"{user.get_username()} is already a member of {organization.name}."
        ) from None
    return membership


def change_role(organization: Organization, membership_id: int, role: str, *, actor: Any) -> bool:
    """Give a member another role; False if it was already theirs."""
    if role not in Membership.Role.values:
        raise TeamChangeRefused("Choose a role: owner, member or viewer.")
    with transaction.atomic():
        membership, last_owner = _locked_member(organization, membership_id, actor)
        if membership is None:
            raise TeamChangeRefused("That person is no longer a member of this organization.")
        if membership.role == role:
            return False
        if last_owner:
            raise _last_owner(organization, membership)
        before = membership.role
        Membership.objects.filter(pk=membership.pk).update(role=role)
        _record(
            organization,
            actor,
            AuditEvent.Action.MEMBER_ROLE_CHANGED,
            membership.user.get_username(),
            {"from": before, "to": role},
        )
        _notifications_moved(membership.user_id)
    return True


def remove(organization: Organization, membership_id: int, *, actor: Any) -> bool:
    """Take someone out of the organization, and revoke their API tokens for it; False if they
    were already gone."""
    with transaction.atomic():
        membership, last_owner = _locked_member(organization, membership_id, actor)
        if membership is None:
            return False
        if last_owner:
            raise _last_owner(organization, membership)
        membership.delete()
        # Their API tokens for this organization go with them: added back one day, they start
        # with none (an old token in a forgotten CI job would otherwise work again).
        answers: list[tuple[Any, Any]] = member_removed.send(
            sender=Membership, organization=organization, user_id=membership.user_id
        )
        revoked = sum(count for _, count in answers if isinstance(count, int))
        details: dict[str, Any] = {"role": membership.role}
        if revoked:
            details["tokens_revoked"] = revoked
        _record(
            organization,
            actor,
            AuditEvent.Action.MEMBER_REMOVED,
            membership.user.get_username(),
            details,
        )
        _notifications_moved(membership.user_id)
    return True
