from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from hypothesis import example, given
from hypothesis import strategies as st

from networking.naming import LABEL_RE, internal_hostname, normalize_service_name


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("api", "api"),
        ("API", "api"),
        ("  api  ", "api"),
        ("Background Worker", "background-worker"),
        ("background   worker", "background-worker"),
        ("background\tworker", "background-worker"),
        ("background_worker", "background-worker"),
        ("background __ worker", "background-worker"),
        ("background-worker", "background-worker"),
        ("Café", "cafe"),
        ("Crème Brûlée", "creme-brulee"),
        ("Straße", "strasse"),
        ("Ørsted", "orsted"),
        ("Łódź", "lodz"),
        ("api v2", "api-v2"),
        ("a" * 63, "a" * 63),
        ("x1", "x1"),
        ("a--b", "a--b"),
    ],
)
def test_it_normalizes(typed: str, expected: str) -> None:
    assert normalize_service_name(typed) == expected


@pytest.mark.parametrize(
    ("typed", "code", "fragment"),
    [
        ("", "empty", "Enter a name"),
        ("   ", "empty", "Enter a name"),
        ("api!", "invalid_characters", "“!”"),
        ("api.v2", "invalid_characters", "Try “api-v2”"),
        ("🚀 launcher", "invalid_characters", "Try “launcher”"),
        ("数据库", "invalid_characters", "can’t be part of a hostname"),
        ("1api", "invalid_start", "must start with a letter"),
        ("-api", "invalid_start", "Try “api”"),
        ("_api", "invalid_start", "must start with a letter"),
        ("api-", "invalid_end", "must end with a letter or digit"),
        ("api_", "invalid_end", "Try “api”"),
        ("a" * 64, "too_long", "64 characters long; the limit is 63"),
    ],
)
def test_it_rejects_with_a_reason(typed: str, code: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_service_name(typed)
    assert caught.value.code == code
    assert fragment in caught.value.messages[0]


@pytest.mark.parametrize(
    ("typed", "suggestion"),
    [("2fa", "svc-2fa"), ("3D render", "svc-3d-render"), ("-42", "svc-42")],
)
def test_a_name_starting_with_a_digit_keeps_its_meaning(typed: str, suggestion: str) -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_service_name(typed)
    assert f"Try “{suggestion}”" in caught.value.messages[0]
    assert normalize_service_name(suggestion) == suggestion


def test_a_long_name_suggests_a_short_one() -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_service_name("x" * 70)
    assert "Shorten the name by 7" in caught.value.messages[0]
    assert f"Try “{'x' * 63}”" in caught.value.messages[0]


def test_internal_hostname() -> None:
    assert internal_hostname("api") == "api.internal"


@given(st.text(max_size=80))
@example("Ⅸ worker")
@example("ǅemal")
@example("İstanbul")
def test_every_accepted_name_is_a_valid_label_and_every_rejection_explains(typed: str) -> None:
    try:
        name = normalize_service_name(typed)
    except ValidationError as error:
        messages = error.messages
        assert messages
        assert all(len(message) > 20 for message in messages)
    else:
        assert LABEL_RE.match(name)
        assert len(name) <= 63
        # Normalizing is idempotent: the label maps to itself.
        assert normalize_service_name(name) == name


@given(st.from_regex(r"\A[a-z]([-a-z0-9]{0,61}[a-z0-9])?\Z"))
def test_every_valid_label_is_accepted_unchanged(label: str) -> None:
    assert normalize_service_name(label) == label
