"""The patterns the API's OpenAPI document states are the rules themselves: a value matches
exactly when the rule takes it (as the API receives it, with no white space around a name)."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from networking import naming, plain_text, rotation

# Letters, digits and the characters the rules treat apart: white space of several kinds,
# control and steering characters, letters with accents that fold away (or to two letters).
TRICKY = "aZ09_- .é\u00df\uff41\t\n\r\x0b\x00\u00a0\u2003\u2028\u202e\u0301"


def takes(rule: object, value: str) -> bool:
    try:
        rule(value)  # type: ignore[operator]
    except ValidationError:
        return False
    return True


@settings(max_examples=500)
@given(st.from_regex(re.compile(naming.DISPLAY_NAME_PATTERN), fullmatch=True))
def test_every_name_the_pattern_takes_the_naming_rule_takes(name: str) -> None:
    assert takes(naming.normalize_service_name, name)


@settings(max_examples=500)
@given(st.text(alphabet=TRICKY, max_size=12))
def test_a_name_the_pattern_refuses_is_refused_or_is_one_it_cannot_state(name: str) -> None:
    dashboard_takes = takes(naming.normalize_service_name, name) and takes(
        plain_text.single_line, name
    )
    if dashboard_takes and not re.fullmatch(naming.DISPLAY_NAME_PATTERN, name):
        # The dashboard takes these too; the document states the plainer names, exactly.
        assert name != name.strip() or re.search("[\u00df\uff41\u00a0\u2003\u0301]", name)


@pytest.mark.parametrize(
    ("name", "matches"),
    [
        ("Background Worker", True),
        ("Café", True),
        ("a" * 63, True),
        ("a" + " " * 90 + "b", True),  # one hyphen: a-b
        ("a" * 64, False),
        ("2fa", False),
        ("api-", False),
        (" api", False),
    ],
)
def test_the_display_name_pattern(name: str, matches: bool) -> None:
    assert bool(re.fullmatch(naming.DISPLAY_NAME_PATTERN, name)) is matches


@settings(max_examples=500)
@given(
    st.one_of(
        st.text(alphabet="ABNTX_9 a", max_size=12),
        st.sampled_from([*rotation.RESERVED_NAMES, "KUBERNETES_X", "TOKEN_NEXT", "_PREVIOUS"]),
    )
)
def test_the_secret_name_pattern_is_the_rule(name: str) -> None:
    rule_takes = takes(rotation.validate_secret_name, name) and name == name.strip()
    assert bool(re.fullmatch(rotation.SECRET_NAME_PATTERN, name)) is rule_takes


@settings(max_examples=1000)
@given(st.text(alphabet=TRICKY, max_size=8))
def test_one_line_is_the_single_line_rule_with_nothing_around(text: str) -> None:
    rule_takes = takes(plain_text.single_line, text) and text == text.strip() != ""
    assert bool(re.fullmatch(plain_text.ONE_LINE, text)) is rule_takes


@settings(max_examples=1000)
@given(st.text(alphabet=TRICKY, max_size=8))
def test_some_text_is_the_multiline_rule_not_blank(text: str) -> None:
    rule_takes = takes(plain_text.multiline, text) and text.strip() != ""
    assert bool(re.fullmatch(plain_text.SOME_TEXT, text)) is rule_takes
