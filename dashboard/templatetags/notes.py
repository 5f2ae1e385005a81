from __future__ import annotations

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

register = template.Library()


@register.filter
def inline_code(text: str) -> SafeString:
    """Text whose `backticked` parts are code: those become ``<code>``, all of it escaped."""
    parts = str(text).split("`")
    return format_html_join(
        "",
        "{}",
        (
            (format_html("<code>{}</code>", part) if index % 2 else part,)
            for index, part in enumerate(parts)
        ),
    )
