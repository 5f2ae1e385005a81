from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client

from tests.conftest import World

LOGIN = "/accounts/login/"


def sign_in(password: str, username: str = "owner", address: str = "10.0.0.1") -> Any:
    return Client(REMOTE_ADDR=address).post(LOGIN, {"username": username, "password": password})


def test_a_right_password_signs_in(world: World) -> None:
    response = sign_in("pw")
    assert response.status_code == 302


def test_an_account_is_locked_after_five_failures(world: World, settings: Any) -> None:
    for _ in range(settings.SIGNIN_MAX_FAILURES_PER_ACCOUNT):
        assert sign_in("wrong").status_code == 200
    # Even the right password is refused now, from any address.
    response = sign_in("pw", address="10.9.9.9")
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    # Other accounts are unaffected.
    assert sign_in("pw", username="member", address="10.9.9.9").status_code == 302


def test_an_address_is_limited_across_accounts(world: World, settings: Any) -> None:
    settings.SIGNIN_MAX_FAILURES_PER_ADDRESS = 3
    for username in ("a", "b", "c"):
        sign_in("wrong", username=username)
    assert sign_in("pw", username="member").status_code == 429
    assert sign_in("pw", username="member", address="10.0.0.2").status_code == 302


def test_a_success_resets_the_account_counter(world: World, settings: Any) -> None:
    for _ in range(settings.SIGNIN_MAX_FAILURES_PER_ACCOUNT - 1):
        sign_in("wrong")
    assert sign_in("pw").status_code == 302
    for _ in range(settings.SIGNIN_MAX_FAILURES_PER_ACCOUNT - 1):
        sign_in("wrong")
    assert sign_in("pw").status_code == 302


def test_failed_attempts_are_logged_without_the_password(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dashboard.auth"):
        sign_in("hunter2-typo", address="192.0.2.7")
    assert "Failed sign-in for 'owner' from 192.0.2.7" in caplog.text
    assert "hunter2" not in caplog.text


def test_the_forwarded_address_counts_only_behind_a_trusted_proxy(
    world: World, settings: Any
) -> None:
    settings.SIGNIN_MAX_FAILURES_PER_ADDRESS = 2
    for username in ("a", "b"):
        Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.1").post(
            LOGIN, {"username": username, "password": "x"}
        )
    # Untrusted header ignored: the limit hit 10.0.0.1 itself.
    assert (
        Client(REMOTE_ADDR="10.0.0.1")
        .post(LOGIN, {"username": "member", "password": "pw"})
        .status_code
        == 429
    )
