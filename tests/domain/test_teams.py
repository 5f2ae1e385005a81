"""The Organization page: owners add people, change roles and remove members; the last owner
stays; every change is in the organization's audit log."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from networking import teams
from networking.models import AuditEvent, Membership
from tests.conftest import World


def team_page(client: Client, world: World) -> str:
    return client.get(reverse("org-team", args=[world.acme.slug])).content.decode()


def member(world: World, username: str) -> Membership:
    return Membership.objects.get(organization=world.acme, user__username=username)


def test_every_member_sees_the_team_and_only_owners_can_change_it(world: World) -> None:
    for role in ("viewer", "member", "owner"):
        html = team_page(world.client_for(role), world)
        assert "<strong>viewer</strong>" in html and "<strong>owner</strong>" in html
        assert ("Add someone" in html) == (role == "owner")


@pytest.mark.parametrize("who", ["newcomer", "NEW@acme.example", "  newcomer  "])
def test_an_owner_adds_someone_by_username_or_email(
    owner_client: Client, world: World, who: str
) -> None:
    newcomer = User.objects.create_user("newcomer", email="new@acme.example", password="pw")
    response = owner_client.post(
        reverse("org-team-invite", args=[world.acme.slug]),
        {"who": who, "role": "viewer"},
        follow=True,
    )
    assert "Added newcomer as viewer." in response.content.decode()
    assert Membership.objects.get(user=newcomer, organization=world.acme).role == "viewer"
    event = AuditEvent.objects.get(action=AuditEvent.Action.MEMBER_ADDED)
    assert (event.actor_label, event.target, event.details) == (
        "owner",
        "newcomer",
        {"role": "viewer"},
    )
    # They now see the organization's projects.
    newcomer_client = Client()
    newcomer_client.force_login(newcomer)
    assert world.project.name in newcomer_client.get(reverse("project-list")).content.decode()


@pytest.mark.parametrize(
    ("who", "said"),
    [
        ("nobody", "They need an account first"),
        ("viewer", "already a member of Acme"),
        ("support", "Support staff are never members"),
        ("bad\x00name", "Remove a NUL byte"),
    ],
)
def test_adding_is_refused_with_a_reason(
    owner_client: Client, world: World, who: str, said: str
) -> None:
    response = owner_client.post(
        reverse("org-team-invite", args=[world.acme.slug]),
        {"who": who, "role": "member"},
        follow=True,
    )
    assert response.status_code == 200
    assert said in response.content.decode()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.MEMBER_ADDED).exists()


def test_an_owner_changes_a_role_and_it_is_audited(owner_client: Client, world: World) -> None:
    viewer = member(world, "viewer")
    owner_client.post(
        reverse("org-team-role", args=[world.acme.slug, viewer.pk]), {"role": "member"}
    )
    assert member(world, "viewer").role == "member"
    event = AuditEvent.objects.get(action=AuditEvent.Action.MEMBER_ROLE_CHANGED)
    assert event.details == {"from": "viewer", "to": "member"}
    assert "changed the role of <strong>viewer</strong>" in team_page(owner_client, world)


def test_the_last_owner_can_be_neither_demoted_nor_removed(
    owner_client: Client, world: World
) -> None:
    owner = member(world, "owner")
    demoted = owner_client.post(
        reverse("org-team-role", args=[world.acme.slug, owner.pk]), {"role": "viewer"}, follow=True
    )
    assert "the last owner of Acme" in demoted.content.decode()
    removed = owner_client.post(
        reverse("org-team-remove", args=[world.acme.slug, owner.pk]), follow=True
    )
    assert "the last owner of Acme" in removed.content.decode()
    assert member(world, "owner").role == "owner"
    # With a second owner, the first may step down.
    teams.change_role(world.acme, member(world, "member").pk, "owner", actor=None)
    assert teams.change_role(world.acme, owner.pk, "viewer", actor=None)


def test_two_owners_demoting_each_other_leave_one(world: World) -> None:
    teams.change_role(world.acme, member(world, "member").pk, "owner", actor=None)
    teams.change_role(world.acme, member(world, "owner").pk, "viewer", actor=None)
    with pytest.raises(teams.TeamChangeRefused, match="last owner"):
        teams.change_role(world.acme, member(world, "member").pk, "viewer", actor=None)


def test_a_removed_member_loses_access(owner_client: Client, world: World) -> None:
    viewer = member(world, "viewer")
    owner_client.post(reverse("org-team-remove", args=[world.acme.slug, viewer.pk]))
    assert not Membership.objects.filter(pk=viewer.pk).exists()
    overview = reverse("project-overview", args=[world.project.uid])
    assert world.client_for("viewer").get(overview).status_code == 404
    event = AuditEvent.objects.get(action=AuditEvent.Action.MEMBER_REMOVED)
    assert (event.target, event.details) == ("viewer", {"role": "viewer"})


def test_a_removed_member_added_back_has_no_working_token(
    owner_client: Client, world: World, api_tokens: dict[str, str | None]
) -> None:
    """Their tokens go with them: re-added later, an old token in a CI job stays dead."""
    viewer = member(world, "viewer")
    owner_client.post(reverse("org-team-remove", args=[world.acme.slug, viewer.pk]))
    event = AuditEvent.objects.get(action=AuditEvent.Action.MEMBER_REMOVED)
    assert event.details == {"role": "viewer", "tokens_revoked": 1}
    Membership.objects.create(organization=world.acme, user=viewer.user, role="viewer")
    me = Client().get("/api/v1/me", headers={"Authorization": f"Bearer {api_tokens['viewer']}"})
    assert me.status_code == 401 and "was revoked" in me.json()["detail"]
