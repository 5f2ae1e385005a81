"""Request-wide answers to faults no single view should have to remember."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from networking import contention, enqueue, live
from networking.models import PROJECT_ID_PATTERN

logger = logging.getLogger(__name__)

QUEUE_DOWN = "Saved. The cluster will be updated when the worker queue is reachable again."


class LivePollMiddleware:
    """Answer an open project page's "anything new?" poll from the cache when nothing is.

    First in the chain, before the session, the user and the database: one digest and two
    cache reads (``networking.live``). It says only "nothing new" (an empty 204), and only to a
    session that the full view let read the project within ``live.MIRROR_SECONDS``; anything
    else goes on to ``dashboard.views.project_live``, which checks everything and refills the
    cache.
    """

    PATH = re.compile(rf"^/projects/(?P<uid>{PROJECT_ID_PATTERN})/live/$")

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "GET":
            match = self.PATH.match(request.path_info)
            since = request.GET.get("since", "")
            session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
            if (
                match is not None
                and session_key
                and since.isdecimal()
                and len(since) < 19
                and live.unchanged(session_key, match["uid"], int(since))
            ):
                return HttpResponse(status=204)
        return self.get_response(request)


class InboxPollMiddleware:
    """Answer the header's "any new notifications?" poll from the cache when there are none.

    Like ``LivePollMiddleware``, before the session, the user and the database: a digest and a
    few cache reads (``networking.live.inbox_unchanged``), and only "nothing new" (an empty
    204), only to a session the full view (``dashboard.notification_views.notifications_live``)
    let read within ``live.MIRROR_SECONDS``.
    """

    PATH = "/notifications/live/"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "GET" and request.path_info == self.PATH:
            since = request.GET.get("since", "")
            session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
            if (
                session_key
                and since
                and len(since) < 64
                and live.inbox_unchanged(session_key, since)
            ):
                return HttpResponse(status=204)
        return self.get_response(request)


class WorkerQueueMiddleware:
    """Say so when a saved change could not be handed to the workers (the broker is down).

    The change is committed either way; the periodic resync applies it once the queue is
    back, so the page shows a warning instead of an error.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        enqueue.start_counting()
        response = self.get_response(request)
        if enqueue.undelivered():
            messages.warning(request, QUEUE_DOWN)
        return response


class ConcurrentChangeMiddleware:
    """A last line for races a view did not foresee: a clear 409 (or 404, for something deleted
    meanwhile) instead of a 500.

    Every known race is handled where it belongs (constraints and row locks in the domain
    functions, with a specific message); this only catches what a new endpoint forgot.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if contention.lost_a_race(exception):
            logger.warning(
                "Concurrent change on %s %s: %s", request.method, request.path, exception
            )
            return render(request, "409.html", {"exception": contention.CONFLICT}, status=409)
        if isinstance(exception, ObjectDoesNotExist):
            # Deleted by someone else while this request worked on it: gone, not broken.
            logger.warning(
                "Deleted meanwhile on %s %s", request.method, request.path, exc_info=exception
            )
            return render(request, "404.html", {"reason": contention.GONE}, status=404)
        return None


class MethodNotAllowedPageMiddleware:
    """A page, not a browser error, for an address opened that only takes a form's POST.

    Django answers a GET on a POST-only view with an empty 405, which a browser shows as its
    own "HTTP ERROR 405"; a bookmark or a link copied from the address bar leads there. Only a
    GET gets the page (nothing else is a person opening an address). The API answers its own
    405s (problem+json). Last in the chain, so the page gets every security header.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code != 405
            or request.method != "GET"
            or response.streaming
            or response.content
            or request.path_info.startswith("/api/")
        ):
            return response
        allowed = [
            method.strip()
            for method in response.get("Allow", "").split(",")
            if method.strip() not in ("", "HEAD", "OPTIONS")
        ]
        page = render(request, "405.html", {"allowed": allowed}, status=405)
        page["Allow"] = response.get("Allow", "")
        return page
