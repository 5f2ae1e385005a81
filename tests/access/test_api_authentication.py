"""What the API says to a caller whose ``Authorization`` header carries no token."""

from __future__ import annotations

import pytest
from django.test import Client

from networking.models import Service
from tests.conftest import World

TOKEN_MISSING = "The token is missing"


@pytest.mark.parametrize("header", ["Bearer ", "Bearer", "bearer   ", " Bearer "])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_bearer_header_without_a_token_is_told_the_token_is_missing(
    world: World, header: str, method: str
) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.generic(
        method,
        f"/api/v1/projects/{world.project.uid}/services",
        '{"name": "Worker", "kind": "private", "ports": [3000]}' if method == "POST" else "",
        content_type="application/json",
        headers={"Authorization": header},
    )
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    detail = response.json()["detail"]
    assert detail.startswith(TOKEN_MISSING)
    assert "CSRF" not in detail
    assert not Service.objects.filter(name="worker").exists()


def test_a_signed_in_browser_sending_an_empty_bearer_header_is_told_too(world: World) -> None:
    """The header says a token was meant: the session is not used in its place."""
    client = Client(enforce_csrf_checks=True)
    member = world.users["member"]
    assert member is not None
    client.force_login(member)
    response = client.post(
        f"/api/v1/projects/{world.project.uid}/services",
        {"name": "Worker", "kind": "private", "ports": [3000]},
        content_type="application/json",
        headers={"Authorization": "Bearer "},
    )
    assert response.status_code == 401
    assert response.json()["detail"].startswith(TOKEN_MISSING)


def test_no_authorization_header_still_gets_the_general_answer(world: World) -> None:
    response = Client().get(f"/api/v1/projects/{world.project.uid}/services")
    assert response.status_code == 401
    assert not response.json()["detail"].startswith(TOKEN_MISSING)
