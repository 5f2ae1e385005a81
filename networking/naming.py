"""The naming rule: how a service's display name becomes its ``.internal`` hostname.

The name as typed is trimmed, lowercased, each run of whitespace or underscores becomes one
hyphen and accents are folded to ASCII (``Café`` -> ``cafe``). The result must be an RFC 1035
label, which is also what Kubernetes requires of a Service name: ``[a-z]([-a-z0-9]*[a-z0-9])?``,
at most 63 characters. Anything else is refused with a message naming the rule that failed and,
where one exists, a name that would pass.
"""

from __future__ import annotations

import re
import unicodedata

from django.core.exceptions import ValidationError

from networking import plain_text

MAX_LABEL_LENGTH = 63
INTERNAL_ZONE = "internal"

LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SEPARATOR_RUN_RE = re.compile(r"[\s_]+")
_NOT_LABEL_CHARACTER_RE = re.compile(r"[^a-z0-9-]")

# Latin letters that Unicode does not decompose into a base letter plus an accent.
_LETTER_FOLDS = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "œ": "oe",
        "ø": "o",
        "đ": "d",
        "ð": "d",
        "ł": "l",
        "þ": "th",
        "ı": "i",
    }
)


def _fold_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_LETTER_FOLDS))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _transform(display_name: str) -> str:
    text = display_name.strip().lower()
    text = _fold_accents(text)
    # Folding can produce upper-case compatibility forms (e.g. "Ⅸ" -> "IX").
    text = text.lower()
    return _SEPARATOR_RUN_RE.sub("-", text)


EMPTY_NAME = "Enter a name: it becomes the service’s hostname, like “api” for api.internal."
# Put before a name that starts with a digit, so "2fa" keeps its meaning as "svc-2fa".
DIGIT_PREFIX = "svc-"


def suggest_service_name(display_name: str) -> str | None:
    """A valid name close to what was typed, or None if nothing sensible remains."""
    text = _NOT_LABEL_CHARACTER_RE.sub("-", _transform(display_name))
    text = re.sub(r"-{2,}", "-", text).lstrip("-")
    if text[:1].isdigit():
        text = DIGIT_PREFIX + text
    text = text[:MAX_LABEL_LENGTH].rstrip("-")
    return text if LABEL_RE.match(text) else None


def _with_suggestion(message: str, display_name: str) -> str:
    suggestion = suggest_service_name(display_name)
    if suggestion:
        return f"{message} Try “{suggestion}”."
    return message


def _describe(characters: list[str]) -> str:
    shown = []
    for ch in characters:
        if ch.isprintable() and not ch.isspace():
            shown.append(f"“{ch}”")
        else:
            shown.append(f"U+{ord(ch):04X}")
    return ", ".join(shown)


def normalize_service_name(display_name: str) -> str:
    """Return the DNS label for ``display_name`` or raise ``ValidationError`` saying why not.

    >>> normalize_service_name("  Background Worker ")
    'background-worker'
    """
    name = _transform(display_name)
    if not name:
        raise ValidationError(EMPTY_NAME, code="empty")
    bad = sorted(set(_NOT_LABEL_CHARACTER_RE.findall(name)), key=name.index)
    if bad:
        raise ValidationError(
            _with_suggestion(
                f"{_describe(bad)} can’t be part of a hostname. "
                "Use letters, digits, spaces, hyphens or underscores.",
                display_name,
            ),
            code="invalid_characters",
        )
    if not name[0].isalpha():
        raise ValidationError(
            _with_suggestion(
                f"The hostname must start with a letter, and “{name}” starts with “{name[0]}”.",
                display_name,
            ),
            code="invalid_start",
        )
    if name.endswith("-"):
        raise ValidationError(
            _with_suggestion(
                "The hostname must end with a letter or digit, not a hyphen.", display_name
            ),
            code="invalid_end",
        )
    if len(name) > MAX_LABEL_LENGTH:
        raise ValidationError(
            _with_suggestion(
                f"The hostname “{name}” is {len(name)} characters long; "
                f"the limit is {MAX_LABEL_LENGTH}. Shorten the name by "
                f"{len(name) - MAX_LABEL_LENGTH}.",
                display_name,
            ),
            code="too_long",
        )
    # Every rule above is a piece of this pattern; the assertion keeps them in step.
    assert LABEL_RE.match(name), name
    return name


def internal_hostname(name: str) -> str:
    """The private hostname of a service whose DNS label is ``name``."""
    return f"{name}.{INTERNAL_ZONE}"


# -- The rule as a pattern, for the API's OpenAPI document -----------------------------------


def _latin_letters() -> str:
    """ASCII letters and the Latin letters with accents that fold to one of them (é, ø, ł…)."""
    folding = [
        point
        for block in (range(0xC0, 0x250), range(0x1E00, 0x1F00))
        for point in block
        if unicodedata.category(chr(point)) in ("Lu", "Ll")
        and len(folded := _transform(chr(point))) == 1
        and folded.isascii()
        and folded.isalpha()
    ]
    return "A-Za-z" + plain_text.character_ranges(folding)


_LETTERS = _latin_letters()
_LETTER = f"[{_LETTERS}]"
_LETTER_OR_DIGIT = f"[{_LETTERS}0-9]"
# The names the API takes: those of the rule a pattern can state exactly. Letters (accents
# fold away), digits and hyphens, with spaces or underscores between words, starting with a
# letter and ending with a letter or digit; each run of spaces and underscores becomes one
# hyphen, and the hostname is at most 63 characters. (The dashboard also takes what folds in
# less obvious ways, such as “ß” to “ss”: the rule's message says what to type instead.)
DISPLAY_NAME_PATTERN = (
    f"^{_LETTER}(?:(?:{_LETTER_OR_DIGIT}|-|[ _]+){{0,{MAX_LABEL_LENGTH - 2}}}{_LETTER_OR_DIGIT})?$"
)
# A DNS label, as the API names an existing service.
LABEL_PATTERN = f"^[a-z](?:[-a-z0-9]{{0,{MAX_LABEL_LENGTH - 2}}}[a-z0-9])?$"
