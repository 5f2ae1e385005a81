"""Choosing services in a form, at any project size.

A small project lists every service as a checkbox, as before. A large one (more than
``INLINE_UP_TO`` services) shows the services already chosen and a search: each keystroke asks
the server for at most ``MATCHES`` services whose name matches, and the chosen ones stay
checked whatever is searched (the search sends them along). The page costs the same with ten
services or a hundred thousand; the form's field still validates what is submitted against the
project's services (one ``pk IN`` query).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
    label: str
    inline: bool  # a small project: every service, one checkbox each
    chosen: list[Service]
    matches: list[Service]
    more: bool  # more services match than are listed
    query: str
    search_url: str
    offers: bool = True  # there is any service to choose


def _chosen_ids(values: Iterable[object]) -> list[int]:
    ids = []
    for value in values:
        text = str(getattr(value, "pk", value))
        if text.isdecimal() and len(text) < 19:
            ids.append(int(text))
    return ids


def choices(
    queryset: QuerySet[Service], chosen: Iterable[object], query: str = ""
) -> tuple[list[Service], list[Service], bool]:
    """The chosen services (in ``queryset``), and up to ``MATCHES`` others matching ``query``."""
    ids = _chosen_ids(chosen)
    picked = list(queryset.filter(pk__in=ids).only(*_FIELDS).order_by("name")) if ids else []
    others = queryset.exclude(pk__in=[service.pk for service in picked]).only(*_FIELDS)
    # What a person types: anything unprintable (a NUL byte, a newline) is no part of a name.
    query = "".join(ch for ch in query if ch.isprintable()).strip()
    if query:
        others = others.filter(
            Q(name__icontains=query.replace(" ", "-")) | Q(display_name__icontains=query)
        )
    found = list(others.order_by("name")[: MATCHES + 1])
    return picked, found[:MATCHES], len(found) > MATCHES


def picker(field: BoundField, project: Project, *, exclude: Service | None = None) -> Picker:
    """How ``field`` (a choice of this project's services) is shown on a page."""
    queryset = field.field.queryset  # type: ignore[attr-defined]
    first = len(queryset.only("pk")[: INLINE_UP_TO + 1])
    small = first <= INLINE_UP_TO
    value = field.value() or []
    chosen, matches, more = ([], [], False) if small else choices(queryset, value)
    url = reverse("service-choices", args=[project.uid])
    query = f"?field={field.html_name}" + (f"&exclude={exclude.pk}" if exclude else "")
    return Picker(
        name=field.html_name,
        label=str(field.label),
        inline=small,
        chosen=chosen,
        matches=matches,
        more=more,
        query="",
        search_url=url + query,
        offers=first > 0,
    )
