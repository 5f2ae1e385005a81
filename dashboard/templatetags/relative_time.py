from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

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
