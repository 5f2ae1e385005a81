"""Request-wide answers to faults no single view should have to remember."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from networking import contention, enqueue

logger = logging.getLogger(__name__)

QUEUE_DOWN = "Saved. The cluster will be updated when the worker queue is reachable again."


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
