from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.conftest import World, closed_port

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


@pytest.mark.parametrize(
    "spelling",
    [
        "\uff56\uff49\uff45\uff57\uff45\uff52",  # fullwidth
        "\U0001d42f\U0001d422\U0001d41e\U0001d430\U0001d41e\U0001d42b",  # mathematical bold
        "view\uff45r",  # one fullwidth letter
        "  viewer ",  # surrounding spaces, which the form strips
        " " * 200 + "viewer",  # past the field's length, until the form strips them
    ],
    ids=["fullwidth", "mathematical-bold", "one-fullwidth-letter", "spaces", "past-max-length"],
)
def test_the_lockout_holds_for_every_spelling_of_the_account(
    world: World, settings: Any, spelling: str
) -> None:
    for _ in range(settings.SIGNIN_MAX_FAILURES_PER_ACCOUNT):
        assert sign_in("wrong", username="viewer").status_code == 200
    client = Client(REMOTE_ADDR="10.9.9.9")
    response = client.post(LOGIN, {"username": spelling, "password": "pw"})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_failures_under_other_spellings_count_for_the_account(world: World, settings: Any) -> None:
    for _ in range(settings.SIGNIN_MAX_FAILURES_PER_ACCOUNT):
        assert sign_in("wrong", username="\uff56\uff49\uff45\uff57\uff45\uff52").status_code == 200
    assert sign_in("pw", username="viewer", address="10.9.9.9").status_code == 429


def test_the_lockout_shows_only_the_lockout_message(world: World, settings: Any) -> None:
    for _ in range(settings.SIGNIN_MAX_FAILURES_PER_ACCOUNT):
        sign_in("wrong")
    for password in ("wrong", "pw"):
        page = sign_in(password).content.decode()
        assert "Too many failed sign-ins" in page
        assert "Please enter a correct" not in page


def test_a_locked_out_attempt_does_not_check_the_password(
    world: World, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(settings.SIGNIN_MAX_FAILURES_PER_ACCOUNT):
        sign_in("wrong")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dashboard.auth"):
        sign_in("wrong-again")
    assert "Failed sign-in" not in caplog.text
    assert "Sign-in refused" in caplog.text


def redis_cache_at(location: str, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": location,
            "KEY_PREFIX": "stackblaze-test-unreachable",
            "OPTIONS": options,
        }
    }


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections and never answers, like a hung Redis."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def assert_sign_in_works_without_the_cache(world: World, caplog: pytest.LogCaptureFixture) -> None:
    viewer = User.objects.get(username="viewer")
    viewer.set_password("correct-horse-battery-5123")
    viewer.save()
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        wrong = Client(REMOTE_ADDR="10.0.0.1").post(
            LOGIN, {"username": "viewer", "password": "incorrect-staple-5123"}
        )
        assert wrong.status_code == 200
        assert "Please enter a correct username and password" in wrong.content.decode()
        assert [record for record in caplog.records if "not being counted" in record.message]

        client = Client(REMOTE_ADDR="10.0.0.1")
        right = client.post(LOGIN, {"username": "viewer", "password": "correct-horse-battery-5123"})
        assert right.status_code == 302
        assert right["Location"] == reverse("home")  # which sends a viewer to the projects
        assert client.get(reverse("project-list")).status_code == 200

    unreachable = [record for record in caplog.records if "not being counted" in record.message]
    assert len(unreachable) == 2  # one warning per attempt, however many counters it skipped
    for secret in ("horse", "staple", "cache-password"):
        assert secret not in caplog.text


def test_sign_in_works_while_redis_refuses_connections(
    world: World, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CACHES = redis_cache_at(
        f"redis://:cache-password@127.0.0.1:{closed_port()}/0", settings.REDIS_CACHE_OPTIONS
    )
    assert_sign_in_works_without_the_cache(world, caplog)


def test_sign_in_works_while_redis_never_answers(
    world: World, settings: Any, caplog: pytest.LogCaptureFixture, silent_port: int
) -> None:
    settings.CACHES = redis_cache_at(
        f"redis://:cache-password@127.0.0.1:{silent_port}/0", settings.REDIS_CACHE_OPTIONS
    )
    assert_sign_in_works_without_the_cache(world, caplog)
