"""Choosing services in a form, at any project size.

A small project lists every service as a checkbox, as before. A large one (more than
``INLINE_UP_TO`` services) shows the services already chosen, then a search: each keystroke
asks the server for at most ``MATCHES`` services whose name matches. The chosen ones stay where
they are (a search never sends them, however many); what was ticked in the list of matches is
sent along, and comes back ticked above the new matches. The page costs the same with ten
services or a hundred thousand; the form's field still validates what is submitted against the
project's services (one ``pk IN`` query).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import Q, QuerySet
from django.forms import BoundField
from django.urls import reverse

from networking.models import Project, Service

INLINE_UP_TO = 30
MATCHES = 20
_FIELDS = ("pk", "name", "display_name", "project_id")


@dataclass(frozen=True)
class Picker:
    name: str  # the form field's input name
    inline: bool  # a small project: every service, one checkbox each
    search_url: str = ""
    chosen: list[Service] = field(default_factory=list)  # chosen before this page (kept as is)
    picked: list[Service] = field(default_factory=list)  # ticked in the list of matches
    matches: list[Service] = field(default_factory=list)
    more: bool = False  # more services match than are listed
    query: str = ""
    offers: bool = True  # there is any service to choose


def ids_in(values: Iterable[object]) -> list[int]:
    """The service IDs among submitted values (anything else is no ID)."""
    ids = []
    for value in values:
        text = str(getattr(value, "pk", value))
        if text.isdecimal() and len(text) < 19:
            ids.append(int(text))
    return ids


def matches(
    queryset: QuerySet[Service], query: str, *, leaving_out: Iterable[int] = ()
) -> tuple[list[Service], bool]:
    """Up to ``MATCHES`` services of ``queryset`` whose name holds ``query``, and whether
    there are more."""
    # What a person types: anything unprintable (a NUL byte, a newline) is no part of a name.
    query = "".join(ch for ch in query if ch.isprintable()).strip()
    found = queryset.exclude(pk__in=list(leaving_out)).only(*_FIELDS)
    if query:
        found = found.filter(
            Q(name__icontains=query.replace(" ", "-")) | Q(display_name__icontains=query)
        )
    listed = list(found.order_by("name")[: MATCHES + 1])
    return listed[:MATCHES], len(listed) > MATCHES


def picker(
    field: BoundField, project: Project, *, exclude: Service | None = None, **chosen_of: int
) -> Picker:
    """How ``field`` (a choice of this project's services) is shown on a page. ``chosen_of``
    (``secret=<id>``) tells the search whose choice it is, so it can leave those out."""
    queryset = field.field.queryset  # type: ignore[attr-defined]
    first = len(queryset.only("pk")[: INLINE_UP_TO + 1])
    if first <= INLINE_UP_TO:
        return Picker(name=field.html_name, inline=True, offers=first > 0)
    ids = ids_in(field.value() or [])
    chosen = list(queryset.filter(pk__in=ids).only(*_FIELDS).order_by("name")) if ids else []
    listed, more = matches(queryset, "", leaving_out=ids)
    query = {"field": field.html_name, **chosen_of}
    if exclude is not None:
        query["exclude"] = exclude.pk
    url = (
        reverse("service-choices", args=[project.uid])
        + "?"
        + "&".join(f"{key}={value}" for key, value in query.items())
    )
    return Picker(
        name=field.html_name,
        inline=False,
        search_url=url,
        chosen=chosen,
        matches=listed,
        more=more,
    )
