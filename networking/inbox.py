"""Who sees which notification, and what they have read: for the pages and the API alike.

A person sees the notifications of the organizations they belong to *now*, those meant for
their role or a lower one (``Notification.for_role``), and, if they are support staff, those
for support: the same memberships, with a token's role cap and organization, that let them
into every other page (``networking.access``). A member removed sees none of them any more;
one who joins sees the organization's earlier ones, as they see its audit log.

Read state is per person: a marker (``InboxState.read_up_to``: everything up to it is read)
that "Mark all as read" moves, and one ``NotificationRead`` per notification opened since.
Every question asked here costs a bounded number of indexed queries, whatever the number of
rows: lists are a page at a time, counts stop at ``COUNT_LIMIT``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest

from networking import live
from networking.access import SUPPORT_ROLE, capped_memberships, token_of
from networking.models import InboxState, Membership, Notification, NotificationRead

PAGE_SIZE = 25
# An unread count stops here: the header shows "99+" past it, at the cost of 100 rows at most.
COUNT_LIMIT = 100


@dataclass(frozen=True)
class Item:
    notification: Notification
    unread: bool


@dataclass(frozen=True)
class Page:
    items: list[Item]
    # The id to continue from (older ones), or None on the last page.
    next_before: int | None
    # The newest notification this reader sees, read or not (for "Mark all as read").
    newest_id: int | None


@dataclass
class Reader:
    """The requesting person, as their notifications see them."""

    user_id: int
    memberships: list[Membership]
    support: bool

    @classmethod
    def of(cls, request: HttpRequest) -> Reader:
        """The request's person, with the memberships (a token's role caps them) and support
        standing it is let in with."""
        token = token_of(request)
        support = bool(
            request.user.is_authenticated
            and request.user.is_staff
            and (token is None or token.role == SUPPORT_ROLE)
        )
        return cls(
            user_id=request.user.pk or 0,
            memberships=capped_memberships(request) if request.user.is_authenticated else [],
            support=support,
        )

    def scope(self) -> list[str]:
        """What the reader sees, as audiences with roles: the header's poll compares a digest
        of it (``live.inbox_fingerprint``), so a role changed or an organization joined or left
        is news too."""
        entries = sorted(f"org:{m.organization_id}/{m.role}" for m in self.memberships)
        if self.support:
            entries.append("support")
        return [*entries, live.inbox_person(self.user_id)]

    def visible(self) -> QuerySet[Notification]:
        """Every notification this reader may see, newest first."""
        allowed = Q(pk__in=[])
        for membership in self.memberships:
            allowed |= Q(
                organization_id=membership.organization_id,
                for_role__in=Membership.roles_up_to(membership.role),
            )
        if self.support:
            allowed |= Q(organization__isnull=True)
        return Notification.objects.filter(allowed).order_by("-id")

    def read_up_to(self) -> int:
        found = (
            InboxState.objects.filter(user_id=self.user_id)
            .values_list("read_up_to", flat=True)
            .first()
        )
        return found or 0

    def _unread(self, notifications: QuerySet[Notification], marker: int) -> QuerySet[Notification]:
        return notifications.filter(id__gt=marker).exclude(
            Exists(
                NotificationRead.objects.filter(user_id=self.user_id, notification=OuterRef("pk"))
            )
        )

    def unread_count(self) -> int:
        """How many unread, up to ``COUNT_LIMIT``."""
        return self._unread(self.visible(), self.read_up_to())[:COUNT_LIMIT].count()

    def page(
        self, before: int | None = None, *, size: int = PAGE_SIZE, unread_only: bool = False
    ) -> Page:
        """A page of notifications, newest first, older than ``before`` (an id); each with
        ``unread`` set and its project loaded; only the unread ones if ``unread_only``."""
        marker = self.read_up_to()
        everything = self.visible()
        newest = everything.values_list("id", flat=True).first()
        if unread_only:
            everything = self._unread(everything, marker)
        rows = everything.select_related("project__organization").annotate(
            opened=Exists(
                NotificationRead.objects.filter(user_id=self.user_id, notification=OuterRef("pk"))
            )
        )
        if before is not None:
            rows = rows.filter(id__lt=before)
        found = list(rows[: size + 1])
        shown = found[:size]
        return Page(
            items=[
                Item(row, unread=row.pk > marker and not getattr(row, "opened", False))
                for row in shown
            ],
            next_before=shown[-1].pk if len(found) > size else None,
            newest_id=newest,
        )

    def fingerprint(self) -> str:
        """A digest of what the header shows, for the poll's "anything new?": from the cache's
        tokens when it can say (no query), else from the database (the newest visible id, the
        marker and the count)."""
        scope = self.scope()
        cached = live.inbox_fingerprint(scope)
        if cached is not None:
            return cached
        state = f"{scope}|{self.visible().values_list('id', flat=True).first()}|"
        state += f"{self.read_up_to()}|{self.unread_count()}"
        return "db-" + hashlib.sha256(state.encode()).hexdigest()[:24]

    def find(self, notification_id: int) -> Notification | None:
        """One notification this reader may see; None for any other (or none at all)."""
        return self.visible().select_related("project").filter(pk=notification_id).first()

    def mark_read(self, notification: Notification) -> None:
        """One notification read (found through ``find``)."""
        if notification.pk > self.read_up_to():
            NotificationRead.objects.bulk_create(
                [NotificationRead(user_id=self.user_id, notification=notification)],
                ignore_conflicts=True,
            )
            live.inbox_moved([live.inbox_person(self.user_id)])

    def mark_all_read(self, up_to: int | None = None) -> None:
        """Everything up to ``up_to`` (the newest the page showed: not one that arrived
        after it was drawn), or up to the newest there is."""
        newest = self.visible().values_list("id", flat=True).first()
        if newest is None:
            return
        marker = min(up_to, newest) if up_to is not None else newest
        # Whoever clicks twice, in whichever order: the marker only moves forward.
        InboxState.objects.bulk_create(
            [InboxState(user_id=self.user_id, read_up_to=0)], ignore_conflicts=True
        )
        InboxState.objects.filter(user_id=self.user_id, read_up_to__lt=marker).update(
            read_up_to=marker
        )
        NotificationRead.objects.filter(
            user_id=self.user_id, notification_id__lte=self.read_up_to()
        ).delete()
        live.inbox_moved([live.inbox_person(self.user_id)])
