"""API tokens: hashed at rest, refused when revoked, expired or orphaned, capped, never logged."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from api.models import ApiToken
from networking.models import AuditEvent, Membership
from tests.conftest import World, bearer


def issue(world: World, role: str = "member", **extra: object) -> tuple[ApiToken, str]:
    user = world.users[role]
    assert user is not None
    return ApiToken.issue(user=user, organization=world.acme, name="ci", role=role, **extra)


def me(token: str) -> tuple[int, dict[str, object]]:
    response = Client().get("/api/v1/me", headers=bearer(token))
    return response.status_code, response.json()


class TestAtRest:
    def test_it_stores_only_a_hash_and_a_prefix(self, world: World) -> None:
        token, raw = issue(world)
        stored = ApiToken.objects.filter(pk=token.pk).values().get()
        assert raw not in str(stored)
        assert stored["digest"] == hashlib.sha256(raw.encode()).hexdigest()
        assert raw.startswith(stored["prefix"]) and len(stored["prefix"]) == 12

    def test_it_has_a_prefix_secret_scanners_recognise(self, world: World) -> None:
        _, raw = issue(world)
        assert raw.startswith("sbk_") and len(raw) == 44 and raw[4:].isalnum()

    def test_its_str_never_shows_the_secret(self, world: World) -> None:
        token, raw = issue(world)
        assert raw not in str(token) and raw not in repr(token)


class TestRefused:
    def test_a_valid_token_is_accepted(self, world: World) -> None:
        _, raw = issue(world)
        assert me(raw) == (
            200,
            {
                "username": "member",
                "organization": "acme",
                "role": "member",
                "token": "ci",
                "support": False,
            },
        )

    def test_a_revoked_token_is_refused(self, world: World) -> None:
        token, raw = issue(world)
        assert token.revoke(actor=world.users["member"])
        status, problem = me(raw)
        assert status == 401
        assert problem["detail"] == "The token “ci” was revoked. Create a new one."

    def test_an_expired_token_is_refused(self, world: World) -> None:
        _, raw = issue(world, expires_at=timezone.now() - timedelta(seconds=1))
        status, problem = me(raw)
        assert (status, problem["detail"]) == (
            401,
            "The token “ci” has expired. Create a new one.",
        )

    def test_a_token_of_someone_no_longer_a_member_is_refused(self, world: World) -> None:
        _, raw = issue(world)
        Membership.objects.filter(user=world.users["member"], organization=world.acme).delete()
        status, problem = me(raw)
        assert (status, problem["detail"]) == (
            401,
            "This token’s holder is no longer a member of Acme.",
        )

    def test_a_deactivated_account_is_refused(self, world: World) -> None:
        _, raw = issue(world)
        user = world.users["member"]
        assert user is not None
        user.is_active = False
        user.save()
        assert me(raw)[0] == 401

    @pytest.mark.parametrize(
        "raw",
        ["sbk_" + "A" * 40, "sbk_short", "ghp_" + "A" * 40, "", "sbk_" + "\x00" * 40],
    )
    def test_a_made_up_token_is_refused(self, world: World, raw: str) -> None:
        response = Client().get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"})
        assert response.status_code == 401
        assert response["Content-Type"] == "application/problem+json"
        assert response["WWW-Authenticate"].startswith("Bearer")

    def test_a_token_one_character_short_is_told_so(self, world: World) -> None:
        _, raw = issue(world)
        response = Client().get("/api/v1/me", headers={"Authorization": f"Bearer {raw[:-1]}"})
        assert response.status_code == 401
        detail = response.json()["detail"]
        assert detail.startswith("This token is cut short or mistyped")
        assert "Copy it again" in detail
        other = Client().get("/api/v1/me", headers={"Authorization": "Bearer ghp_" + "A" * 40})
        assert other.json()["detail"] == (
            "This is not a Stackblaze API token (they start with sbk_)."
        )

    def test_a_token_for_one_digit_off_is_refused(self, world: World) -> None:
        _, raw = issue(world)
        tampered = raw[:-1] + ("a" if raw[-1] != "a" else "b")
        assert me(tampered)[0] == 401


class TestRole:
    def test_a_role_above_ones_own_is_refused(self, world: World) -> None:
        viewer = world.users["viewer"]
        with pytest.raises(Exception, match="can’t be higher than your own role"):
            ApiToken.issue(user=viewer, organization=world.acme, name="x", role="owner")

    def test_a_demotion_caps_existing_tokens(self, world: World) -> None:
        _, raw = issue(world, role="owner")
        Membership.objects.filter(user=world.users["owner"], organization=world.acme).update(
            role="viewer"
        )
        assert me(raw)[1]["role"] == "viewer"
        url = f"/api/v1/projects/{world.project.uid}/services/{world.api.pk}"
        response = Client().delete(url, headers=bearer(raw))
        assert response.status_code == 403

    def test_a_viewer_token_of_an_owner_changes_nothing(self, world: World) -> None:
        owner = world.users["owner"]
        _, raw = ApiToken.issue(user=owner, organization=world.acme, name="ro", role="viewer")
        url = f"/api/v1/projects/{world.project.uid}/secrets/{world.secret.pk}/rotate"
        response = Client().post(url, content_type="application/json", headers=bearer(raw))
        assert response.status_code == 403

    def test_only_support_staff_hold_tokens_without_an_organization(self, world: World) -> None:
        with pytest.raises(Exception, match="Only support staff"):
            ApiToken.issue(user=world.users["owner"], organization=None, name="x", role="support")


class TestAudit:
    def test_creating_using_first_and_revoking_are_audited_once(self, world: World) -> None:
        token, raw = issue(world)
        for _ in range(3):
            assert me(raw)[0] == 200
        token.revoke(actor=world.users["owner"])
        token.revoke(actor=world.users["owner"])
        actions = list(
            AuditEvent.objects.filter(organization=world.acme, target="ci")
            .order_by("id")
            .values_list("action", "actor_label")
        )
        assert actions == [
            ("token.created", "member"),
            ("token.first_used", "member"),
            ("token.revoked", "owner"),
        ]
        token.refresh_from_db()
        assert token.last_used_at is not None

    def test_a_change_made_with_a_token_says_which(self, world: World) -> None:
        _, raw = issue(world)
        response = Client().post(
            f"/api/v1/projects/{world.project.uid}/services",
            {"name": "Background Worker", "kind": "private", "ports": [3000]},
            content_type="application/json",
            headers=bearer(raw),
        )
        assert response.status_code == 201
        event = AuditEvent.objects.get(action=AuditEvent.Action.SERVICE_CREATED)
        assert event.actor_display == "member via token ci"
        assert str(event) == "member via token ci created a service background-worker"
        # The dashboard's log and its CSV say so too.
        page = world.client_for("owner").get(reverse("audit-log", args=[world.project.uid]))
        assert "member via token ci" in page.content.decode()


class TestNeverLogged:
    def test_a_token_never_reaches_a_log_line(
        self, world: World, caplog: pytest.LogCaptureFixture, settings: object
    ) -> None:
        _, raw = issue(world)
        revoked, revoked_raw = ApiToken.issue(
            user=world.users["owner"], organization=world.acme, name="old", role="owner"
        )
        revoked.revoke(actor=world.users["owner"])
        client = Client(raise_request_exception=False)
        with caplog.at_level(logging.DEBUG):
            client.get("/api/v1/me", headers=bearer(raw))
            client.get("/api/v1/me", headers=bearer(revoked_raw))  # 401, logged as a warning
            client.get("/api/v1/me", headers={"Authorization": f"Token {raw}"})  # wrong scheme
            client.post(
                f"/api/v1/projects/{world.project.uid}/services",
                "{not json",
                content_type="application/json",
                headers=bearer(raw),
            )
            client.get(f"/api/v1/projects/{world.project.uid}/nothing", headers=bearer(raw))
        assert caplog.records, "the requests above log something"
        assert raw not in caplog.text and revoked_raw not in caplog.text
        assert raw[4:] not in caplog.text


class TestCommand:
    def test_create_api_token_prints_a_working_token(self, world: World) -> None:
        output = StringIO()
        call_command(
            "create_api_token", "owner", org="acme", role="member", name="ops", stdout=output
        )
        raw = output.getvalue().strip()
        assert me(raw)[1]["role"] == "member"
        assert ApiToken.objects.get(name="ops").digest != raw

    def test_create_api_token_for_support(self, world: World) -> None:
        output = StringIO()
        call_command("create_api_token", "support", role="support", stdout=output)
        assert me(output.getvalue().strip())[1]["support"] is True

    def test_create_api_token_refuses_a_role_above_the_users(self, world: World) -> None:
        with pytest.raises(CommandError, match="higher than your own"):
            call_command("create_api_token", "viewer", org="acme", role="owner")


class TestDashboard:
    def test_the_token_is_shown_once_and_works(self, world: World) -> None:
        client = world.client_for("member")
        url = reverse("org-token-create", args=["acme"])
        response = client.post(url, {"name": "ci-deploy", "role": "member"})
        assert response.status_code == 200
        assert "no-store" in response["Cache-Control"]
        body = response.content.decode()
        raw = body.split('id="new-token-value">')[1].split("<")[0]
        assert me(raw)[1]["token"] == "ci-deploy"
        listing = client.get(reverse("org-tokens", args=["acme"])).content.decode()
        assert "ci-deploy" in listing and raw not in listing and raw[:12] in listing

    def test_the_roles_offered_stop_at_ones_own(self, world: World) -> None:
        page = world.client_for("viewer").get(reverse("org-tokens", args=["acme"]))
        assert b'value="viewer"' in page.content and b'value="owner"' not in page.content
        refused = world.client_for("viewer").post(
            reverse("org-token-create", args=["acme"]), {"name": "x", "role": "owner"}
        )
        assert "Select a valid choice" in refused.content.decode()
        assert not ApiToken.objects.filter(name="x").exists()

    def test_owners_see_and_revoke_everyones_tokens(self, world: World) -> None:
        token, _ = issue(world)
        page = world.client_for("owner").get(reverse("org-tokens", args=["acme"]))
        assert b"ci" in page.content and b"member" in page.content
        response = world.client_for("owner").post(
            reverse("org-token-revoke", args=["acme", token.pk])
        )
        assert response.status_code == 302
        token.refresh_from_db()
        assert token.revoked_at is not None

    def test_members_do_not_see_each_others_tokens(self, world: World) -> None:
        issue(world, role="member")
        page = world.client_for("viewer").get(reverse("org-tokens", args=["acme"]))
        assert b"No tokens yet" in page.content
