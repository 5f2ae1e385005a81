"""The notifications list in the header, and its page.

Every signed-in page carries a Notifications link whose unread count stays live: a hidden
poller asks ``notifications_live`` every few seconds, and "nothing new" is answered from the
cache before the session is even read (``InboxPollMiddleware``).

A notification counts as read once it is opened (its button marks it read, then goes where it
points) or once "Mark all as read" is pressed; merely showing the page marks nothing. The list
is where one decides what to look at first, so what is unread stays marked until it has been
looked at, and a person who opens the page to find one thing keeps the others. Both are POSTs:
a GET (a prefetch, a link preview) never changes what someone has read.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from dashboard.partials import wants_part
from networking import inbox, live


def _id_or_none(text: str | None) -> int | None:
    return int(text) if text and text.isdecimal() and len(text) < 19 else None


def _badge(count: int) -> str:
    return f"{count}" if count < inbox.COUNT_LIMIT else f"{inbox.COUNT_LIMIT - 1}+"


@login_required
@require_GET
@never_cache
def notification_list(request: HttpRequest) -> HttpResponse:
    """Newest first, a page at a time (``?before=`` an id: bounded, however many there are)."""
    reader = inbox.Reader.of(request)
    page = reader.page(_id_or_none(request.GET.get("before")))
    return render(
        request,
        "notifications/list.html",
        {
            "page": page,
            "unread_count": reader.unread_count(),
            "first_page": "before" not in request.GET,
        },
    )


@login_required
@require_POST
def notification_open(request: HttpRequest) -> HttpResponse:
    """Mark one notification read and go where it points."""
    reader = inbox.Reader.of(request)
    found = reader.find(_id_or_none(request.POST.get("notification")) or 0)
    if found is None:
        raise Http404("No such notification: it may be about a project you no longer belong to.")
    reader.mark_read(found)
    return redirect(found.get_absolute_url())


@login_required
@require_POST
def notifications_mark_read(request: HttpRequest) -> HttpResponse:
    """Everything up to the newest the page showed (``up_to``) is read. Without a readable
    ``up_to`` nothing is: "all" means what the person saw, never what came after."""
    up_to = _id_or_none(request.POST.get("up_to"))
    if up_to is None:
        messages.info(request, "Nothing was marked as read: press the button on the list again.")
    else:
        inbox.Reader.of(request).mark_all_read(up_to)
    return redirect("notification-list")


@require_GET
@never_cache
def notifications_live(request: HttpRequest) -> HttpResponse:
    """The header's poll: has the unread count changed since ``since``?

    "No" is an empty 204, which htmx leaves alone (usually from the cache alone, in
    ``InboxPollMiddleware``). "Yes" is a new poller carrying the new ``since``, and the count,
    swapped in out of band. The digest is taken before the count is read: whatever commits in
    between changes it again, so the next poll brings it. A page left open after its session
    ended stops polling (rather than swap the sign-in page into its header).
    """
    if not request.user.is_authenticated:
        if wants_part(request):
            return HttpResponseStopPolling()
        # A person who opened the poll's address: after signing in, the list, not a fragment.
        return redirect_to_login(reverse("notification-list"))
    reader = inbox.Reader.of(request)
    scope = reader.scope()
    fingerprint = reader.fingerprint()
    live.inbox_seen(request.session.session_key, scope)
    if request.GET.get("since") == fingerprint:
        return HttpResponse(status=204)
    count = reader.unread_count()
    return render(
        request,
        "notifications/live.html",
        {"since": fingerprint, "unread_count": count, "badge": _badge(count)},
    )
