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


# -- The same rules as patterns, for the API's OpenAPI document ------------------------------
#
# Each pattern matches exactly what the validators above accept (a name with no white space
# around it: the API takes it as sent, where a form trims it first), and reads alike in
# ECMA-262 (JSON Schema's) and Python: anchored, no ``.`` or ``\s``, only classes spelled out
# code point by code point from the rule itself.


def character_ranges(members: list[int]) -> str:
    """The body of a regular-expression character class holding ``members`` (sorted code
    points), in ranges spelled ``\\uXXXX-\\uXXXX``."""
    parts: list[str] = []
    start = previous = members[0]
    for point in [*members[1:], -1]:
        if point == previous + 1:
            previous = point
            continue
        parts.append(
            f"\\u{start:04x}" if start == previous else f"\\u{start:04x}-\\u{previous:04x}"
        )
        start = previous = point
    return "".join(parts)


# Every control character, white space and steering character is in the Basic Multilingual
# Plane; beyond it, everything is printable.
_BMP = [chr(point) for point in range(0x10000)]
_NOT_PRINTABLE = character_ranges(
    [ord(ch) for ch in _BMP if ch.isspace() or _steering(ch, multiline=False)]
)
# A character that shows, on one line: neither white space nor a control character.
PRINTABLE = f"[^{_NOT_PRINTABLE}]"
# White space that may stand between words of a name (the rest is a control character).
_BETWEEN_WORDS = [ord(ch) for ch in _BMP if ch.isspace() and not _steering(ch, multiline=False)]
SPACE = f"[{character_ranges(_BETWEEN_WORDS)}]"
_TEXT = f"(?:{PRINTABLE}|{SPACE}|[\\t\\n\\r])"

# A name on one line, without white space around it: what ``single_line`` accepts, trimmed.
ONE_LINE = f"^{PRINTABLE}(?:(?:{PRINTABLE}|{SPACE})*{PRINTABLE})?$"
# Free text with something in it: what ``multiline`` accepts, and not blank.
SOME_TEXT = f"^{_TEXT}*{PRINTABLE}{_TEXT}*$"
