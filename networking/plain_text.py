"""What a stored name or free text may contain: printable characters, nothing that steers.

Names end up in email headers, audit lines, CSV exports and terminals; a line feed in a project
name once made every notification about it fail. Control characters (C0, DEL, C1), the
Unicode line and paragraph separators and the bidirectional overrides (which make text read
differently from how it is stored) are refused with a message; free text (a justification, a
reason) may still hold line breaks and tabs.
"""

from __future__ import annotations

import re
import unicodedata

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

# Bidirectional embeddings, overrides and isolates: U+202A–U+202E and U+2066–U+2069.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LINE_BREAKS = frozenset("\n\r\t")


def _steering(character: str, *, multiline: bool) -> bool:
    if multiline and character in _LINE_BREAKS:
        return False
    return unicodedata.category(character) in ("Cc", "Zl", "Zp") or character in _BIDI_CONTROLS


def _describe(character: str) -> str:
    names = {"\n": "a line break", "\r": "a line break", "\t": "a tab", "\x00": "a NUL byte"}
    return names.get(character, f"the invisible control character U+{ord(character):04X}")


@deconstructible
class PrintableText:
    """Validator: refuse control characters; ``multiline`` allows line breaks and tabs."""

    def __init__(self, *, multiline: bool = False) -> None:
        self.multiline = multiline

    def __call__(self, value: str) -> None:
        for character in value:
            if _steering(character, multiline=self.multiline):
                raise ValidationError(
                    f"Remove {_describe(character)}: names and descriptions are plain text "
                    "on one line."
                    if not self.multiline
                    else f"Remove {_describe(character)}: only printable text and line breaks "
                    "are allowed.",
                    code="control_character",
                )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrintableText) and other.multiline == self.multiline

    def __hash__(self) -> int:
        return hash(self.multiline)


single_line = PrintableText()
multiline = PrintableText(multiline=True)

_WHITESPACE_RUN = re.compile(r"\s+")


def header_safe(text: str) -> str:
    """``text`` on one line with no control characters: safe in an email header or a log."""
    printable = "".join(" " if _steering(ch, multiline=False) else ch for ch in text)
    return _WHITESPACE_RUN.sub(" ", printable).strip()
