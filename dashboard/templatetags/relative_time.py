from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.timesince import timesince

from networking.models import PeeringRequest

register = template.Library()


@register.filter
def ago(value: datetime | None) -> str:
    """ "12 s ago" for the last minute (what a sync badge wants), else Django's timesince."""
    if value is None:
        return ""
    seconds = (timezone.now() - value).total_seconds()
    if seconds < 1:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    return f"{timesince(value)} ago"


def _duration(start: datetime, end: datetime) -> str:
    """How long from ``start`` to ``end``, as Django's timesince says it ("3 days, 2 hours"),
    except that under a minute is "less than a minute", never "0 minutes"."""
    if (end - start).total_seconds() < 60:
        return "less than a minute"
    return timesince(start, end)


@register.filter
def duration_since(value: datetime | None, now: datetime | None = None) -> str:
    """How long since ``value`` (``_duration``)."""
    return "" if value is None else _duration(value, now or timezone.now())


@register.filter
def duration_until(value: datetime | None, now: datetime | None = None) -> str:
    """How long until ``value`` (``_duration``)."""
    return "" if value is None else _duration(now or timezone.now(), value)


@register.filter
def as_datetime(value: str) -> datetime | None:
    """An ISO timestamp kept in JSON, as a datetime for the ``date`` filter."""
    return parse_datetime(value) if value else None


@register.filter
def peering_status(value: str) -> str:
    """A peering status stored in a history entry, as the words the page uses for it."""
    return str(PeeringRequest.Status(value).label) if value in PeeringRequest.Status else value
