"""The API's notifications: what the header's list shows, for scripts and the CLI.

Read only. The list is the same as the page's, with the same tenancy (``networking.inbox``):
a token sees its own organization's notifications, with its role, and a support token
support's. Marking read stays a thing a person does in the browser: read state is one per
person across their organizations, and a token reaches only one of them.
"""

from __future__ import annotations

from typing import Annotated, Any

from django.http import HttpRequest
from django.views.decorators.cache import never_cache
from ninja import Router, Schema
from ninja.decorators import decorate_view
from ninja.params.functions import Query
from pydantic import Field

from api import schemas
from networking import inbox

router = Router()

ERRORS: dict[int, Any] = dict.fromkeys((400, 401, 403, 404, 413, 422, 429), schemas.ProblemOut)


class NotificationFilters(Schema):
    limit: int = Field(inbox.PAGE_SIZE, ge=1, le=100)
    before: int | None = Field(
        None, ge=1, le=2**63 - 1, description="The next_before of the previous page"
    )
    unread: bool = Field(False, description="Only the unread ones")


@router.get(
    "/notifications",
    response={200: schemas.NotificationPage, **ERRORS},
    tags=["notifications"],
    operation_id="list_notifications",
)
@decorate_view(never_cache)
def list_notifications(
    request: HttpRequest, filters: Annotated[NotificationFilters, Query()]
) -> schemas.NotificationPage:
    """Your notifications, newest first, a page at a time (``next_before``), each marked
    unread or not, with where to act on it; and how many are unread."""
    reader = inbox.Reader.of(request)
    page = reader.page(filters.before, size=filters.limit, unread_only=filters.unread)
    return schemas.NotificationPage(
        items=[
            schemas.from_notification(item.notification, unread=item.unread) for item in page.items
        ],
        next_before=page.next_before,
        unread_count=reader.unread_count(),
    )
