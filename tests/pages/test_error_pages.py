"""The pages a user meets when an address is not for them to open."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from tests.conftest import World


def test_opening_an_address_that_only_takes_a_button_shows_a_page(
    owner_client: Client, world: World
) -> None:
    """A bookmark of a button's address: Django's bare 405 showed as the browser's own
    "HTTP ERROR 405"; the dashboard says what happened and where to go."""
    url = reverse("secret-end-grace", args=[world.project.uid, world.secret.pk])
    response = owner_client.get(url)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    html = response.content.decode()
    assert "<h1>Nothing to show here</h1>" in html
    assert "Nothing was changed." in html
    assert f'href="{reverse("project-list")}"' in html
    assert "Sign out" in html  # the dashboard's own page, header and all
    # Framed nowhere, and under the same content policy as every page.
    assert response["X-Frame-Options"] == "DENY"
    assert "script-src" in response["Content-Security-Policy"]
    # A class-based view's answer names only what a button does (not HEAD or OPTIONS).
    logout = owner_client.get(reverse("logout"))
    assert logout.status_code == 405
    assert "(a POST)" in logout.content.decode()
    # Nothing but a GET is a person opening an address.
    assert owner_client.put(url).content == b""


def test_the_api_keeps_its_own_answer_for_a_wrong_method(
    owner_client: Client, world: World
) -> None:
    response = owner_client.delete("/api/v1/organizations")
    assert response.status_code == 405
    assert "Nothing to show here" not in response.content.decode()
