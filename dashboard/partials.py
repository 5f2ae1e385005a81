"""A page, or the part of it that htmx asked for: decided here, once, for every view.

A page that updates itself shares its URL with its parts: htmx asks for a part (a table, a
panel) with ``HX-Request``; a person, a bookmark, a reload get the page. One htmx request is
different: after a history cache miss, htmx 2 asks for the URL again with ``HX-Request`` *and*
``HX-History-Restore-Request`` and puts the answer in place of the whole page, so that request
gets the page too (as NetBox and django-htmx's example app decide). Without this, Back after a
cache miss showed a bare table.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.vary import vary_on_headers

# Every view whose answer depends on ``wants_part`` must say so to caches.
vary_on_htmx = vary_on_headers("HX-Request", "HX-History-Restore-Request")


def wants_part(request: HttpRequest) -> bool:
    """True for an htmx request for part of a page; False for the page (a history restore
    included)."""
    htmx = getattr(request, "htmx", None)
    return htmx is not None and bool(htmx) and not htmx.history_restore_request


def page_or_part(
    request: HttpRequest, page: str, part: str, context: dict[str, Any], **kwargs: Any
) -> HttpResponse:
    """``page`` rendered whole, or only its ``{% partialdef part %}`` when ``wants_part``."""
    return render(request, f"{page}#{part}" if wants_part(request) else page, context, **kwargs)
