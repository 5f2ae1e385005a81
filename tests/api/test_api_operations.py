"""The operations a script needed and the dashboard already had: projects, reference variables,
old hostnames, a rotation's grace window, members and tokens; and each service's status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from api.models import ApiToken
from networking import rotation
from networking.models import (
    AuditEvent,
    Membership,
    Project,
    ReferenceVariable,
    Service,
    ServiceAlias,
    SharedSecret,
)
from tests.api.test_api import Api
from tests.conftest import World


@pytest.fixture
def as_role(api_tokens: dict[str, str | None]) -> Any:
    return lambda role: Api(api_tokens[role])


def _service_status(api: Api, world: World, service: Service) -> tuple[str, int]:
    body = api.get(f"/projects/{world.project.uid}/services/{service.pk}").json()
    return body["status"], body["generation"]


def test_a_service_reports_its_status_as_the_overview_shows_it(world: World, as_role: Any) -> None:
    """pending until the cluster reaches the generation that changed it; then applied, and
    live once its ClusterIP is read back. The API, the overview's filter and its column agree."""
    owner = as_role("owner")
    uid = world.project.uid
    created = owner.send("POST", f"/projects/{uid}/services", {"name": "Status Probe"})
    assert created.status_code == 201
    service = Service.objects.get(pk=created.json()["id"])
    assert created.json()["generation"] == service.changed_generation > 0
    # The cluster is one generation behind this service's change.
    Project.objects.filter(pk=world.project.pk).update(
        applied_generation=service.changed_generation - 1
    )
    assert _service_status(owner, world, service) == ("pending", service.changed_generation)
    overview = world.client_for("owner")

    def listed(status: str) -> bool:
        page = overview.get(f"/projects/{uid}/?status={status}").content.decode()
        return "status-probe.internal" in page

    assert listed("pending") and not listed("applied") and not listed("live")

    Project.objects.filter(pk=world.project.pk).update(
        applied_generation=service.changed_generation
    )
    assert _service_status(owner, world, service) == ("applied", service.changed_generation)
    assert listed("applied") and not listed("pending")

    Service.objects.filter(pk=service.pk).update(cluster_ip="10.96.0.77")
    assert _service_status(owner, world, service)[0] == "live"
    assert listed("live") and not listed("applied")
    page = owner.get(f"/projects/{uid}/services?name=status-probe").json()
    assert page["items"][0]["status"] == "live"


def test_projects_are_created_renamed_and_deleted_with_the_name_typed_back(
    world: World, as_role: Any
) -> None:
    owner = as_role("owner")
    created = owner.send("POST", "/projects", {"name": "Data Platform"})
    assert created.status_code == 201, created.content
    project = created.json()
    assert (project["name"], project["organization"], project["role"]) == (
        "Data Platform",
        "acme",
        "owner",
    )
    again = owner.send("POST", "/projects", {"name": "Data Platform"})
    assert again.status_code == 409
    assert "already" in again.json()["detail"]

    renamed = owner.send("PATCH", f"/projects/{project['id']}", {"name": "Data"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Data"
    assert renamed.json()["namespace"] == project["namespace"]

    # Any text is a well-formed confirmation: one that is not the name is a conflict with the
    # project as it is (renamed meanwhile, say), not invalid input.
    wrong = owner.send("DELETE", f"/projects/{project['id']}?confirm_name=Data%20Platform")
    assert wrong.status_code == 409
    assert wrong.json()["errors"] == {
        "confirm_name": ["Type the project’s name, Data, exactly, to delete it."]
    }
    assert Project.objects.filter(uid=project["id"]).exists()
    assert owner.send("DELETE", f"/projects/{project['id']}?confirm_name=Data").status_code == 204
    assert not Project.objects.filter(uid=project["id"]).exists()
    actions = set(
        AuditEvent.objects.filter(organization=world.acme).values_list("action", flat=True)
    )
    assert {AuditEvent.Action.PROJECT_CREATED, AuditEvent.Action.PROJECT_DELETED} <= actions


def test_a_project_is_made_in_the_organization_named(world: World) -> None:
    """A person in two organizations (a browser session) says which; a token never needs to."""
    owner = world.users["owner"]
    assert owner is not None
    Membership.objects.create(user=owner, organization=world.globex, role="member")
    browser = world.client_for("owner")
    json = "application/json"
    unnamed = browser.post("/api/v1/projects", data={"name": "Ledger"}, content_type=json)
    assert unnamed.status_code == 422
    assert unnamed.json()["errors"]["organization"] == [
        "Give one of your organizations: acme, globex."
    ]
    as_member = browser.post(
        "/api/v1/projects", data={"name": "Ledger", "organization": "globex"}, content_type=json
    )
    assert as_member.status_code == 403  # a member of Globex, not an owner
    made = browser.post(
        "/api/v1/projects", data={"name": "Ledger", "organization": "acme"}, content_type=json
    )
    assert made.status_code == 201
    assert Project.objects.get(uid=made.json()["id"]).organization == world.acme


def test_reference_variables_are_linked_listed_from_both_sides_and_unlinked(
    world: World, as_role: Any
) -> None:
    member = as_role("member")
    base = f"/projects/{world.project.uid}/services"
    linked = member.send("POST", f"{base}/{world.postgres.pk}/references", {"consumers": ["api"]})
    assert linked.status_code == 201, linked.content
    [reference] = linked.json()
    assert (reference["source"], reference["consumer"], reference["variable"]) == (
        "postgres",
        "api",
        "DATABASE_URL",
    )
    source_side = member.get(f"{base}/{world.postgres.pk}/references").json()
    consumer_side = member.get(f"{base}/{world.api.pk}/references").json()
    assert [r["id"] for r in source_side["gives"]] == [reference["id"]]
    assert source_side["receives"] == []
    assert [r["id"] for r in consumer_side["receives"]] == [reference["id"]]

    twice = member.send("POST", f"{base}/{world.postgres.pk}/references", {"consumers": ["api"]})
    assert twice.status_code == 409
    assert twice.json()["errors"]["consumers"] == [
        "api already receives the address of postgres as DATABASE_URL."
    ]
    unknown = member.send(
        "POST", f"{base}/{world.postgres.pk}/references", {"consumers": ["nowhere"]}
    )
    assert unknown.status_code == 409  # a well-formed label, but no service of the project's
    assert "nowhere" in unknown.json()["errors"]["consumers"][0]

    # Either side's service names it.
    gone = member.send("DELETE", f"{base}/{world.api.pk}/references/{reference['id']}")
    assert gone.status_code == 204
    assert not ReferenceVariable.objects.filter(pk=reference["id"]).exists()


def test_old_hostnames_are_listed_kept_longer_and_ended(world: World, as_role: Any) -> None:
    member, owner = as_role("member"), as_role("owner")
    base = f"/projects/{world.project.uid}/services/{world.postgres.pk}"
    renamed = member.send("PATCH", base, {"name": "main-db", "keep_old_name_for_seconds": 3600})
    assert renamed.status_code == 200
    [alias] = member.get(f"{base}/aliases").json()
    assert alias["hostname"] == "postgres.internal"

    seen = alias["expires_at"]
    extend = f"{base}/aliases/{alias['id']}/extend"
    extended = member.send("POST", extend, {"seen_expires_at": seen})
    assert extended.status_code == 200
    stored = ServiceAlias.objects.get(pk=alias["id"])
    assert timedelta(hours=24) <= stored.expires_at - timezone.now() <= timedelta(hours=26)
    # A retry with the end it read extends once.
    member.send("POST", extend, {"seen_expires_at": seen})
    assert ServiceAlias.objects.get(pk=alias["id"]).expires_at == stored.expires_at

    # A time without its offset is refused, not guessed at (or a 500).
    naive = member.send("POST", extend, {"seen_expires_at": "2030-01-01T00:00:00"})
    assert naive.status_code == 422, naive.content
    assert member.send("DELETE", f"{base}/aliases/{alias['id']}").status_code == 403
    assert owner.send("DELETE", f"{base}/aliases/{alias['id']}").status_code == 204
    assert member.get(f"{base}/aliases").json() == []
    assert owner.send("DELETE", f"{base}/aliases/{alias['id']}").status_code == 404


def test_a_rotations_grace_window_is_ended_early(world: World, as_role: Any) -> None:
    owner = as_role("owner")
    secret = world.secret
    path = f"/projects/{world.project.uid}/secrets/{secret.pk}/rotation/end-grace"
    assert owner.send("POST", path).status_code == 409  # not rotating
    SharedSecret.objects.filter(pk=secret.pk).update(
        rotation_phase=SharedSecret.Phase.GRACE, grace_until=timezone.now() + timedelta(hours=1)
    )
    ended = owner.send("POST", path)
    assert ended.status_code == 200, ended.content
    assert ended.json()["grace_until"] is None
    assert SharedSecret.objects.get(pk=secret.pk).grace_until is None
    assert owner.send("POST", path).status_code == 200  # a second click: nothing more to end
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ROTATION_GRACE_ENDED).count() == 1


def test_secrets_count_rotations_as_the_dashboard_does(world: World, as_role: Any) -> None:
    owner = as_role("owner")
    base = f"/projects/{world.project.uid}/secrets"
    assert owner.get(base).json()[0]["rotations"] == 0
    rotation.start_rotation(world.secret, actor=world.users["owner"])
    assert owner.get(base).json()[0]["rotations"] == 1
    assert owner.get(f"{base}/{world.secret.pk}/rotation").json()["number"] == 1


def test_members_are_added_change_role_and_are_removed(world: World, as_role: Any) -> None:
    owner = as_role("owner")
    members = owner.get("/organizations/acme/members").json()
    assert [(m["username"], m["role"]) for m in members] == [
        ("member", "member"),
        ("owner", "owner"),
        ("viewer", "viewer"),
    ]
    added = owner.send("POST", "/organizations/acme/members", {"who": "outsider"})
    assert added.status_code == 201 and added.json()["role"] == "member"
    new_id = added.json()["id"]
    promoted = owner.send("PATCH", f"/organizations/acme/members/{new_id}", {"role": "owner"})
    assert promoted.json()["role"] == "owner"
    nobody = owner.send("POST", "/organizations/acme/members", {"who": "nobody@nowhere.example"})
    assert nobody.status_code in (409, 422)
    assert "nobody@nowhere.example" in nobody.json()["detail"]
    assert owner.send("DELETE", f"/organizations/acme/members/{new_id}").status_code == 204
    assert not Membership.objects.filter(pk=new_id).exists()

    # The last owner can be neither demoted nor removed: said, not done.
    own_id = next(m["id"] for m in members if m["username"] == "owner")
    demote = owner.send("PATCH", f"/organizations/acme/members/{own_id}", {"role": "viewer"})
    assert demote.status_code == 409
    assert "last owner" in demote.json()["detail"]


def test_tokens_are_created_within_ones_role_listed_and_revoked(world: World, as_role: Any) -> None:
    member = as_role("member")
    # Made by a signed-in person (the dashboard's own session), never by a token: a token
    # that could make tokens would outlive its expiry and its revocation through them.
    by_token = member.send("POST", "/organizations/acme/tokens", {"name": "ci"})
    assert by_token.status_code == 403
    assert "A token can't create tokens" in by_token.json()["detail"]
    browser = Api(None, client=world.client_for("member"))
    too_high = browser.send("POST", "/organizations/acme/tokens", {"name": "ci", "role": "owner"})
    assert too_high.status_code == 403  # a role the document lists, above the caller's
    assert "at most what you may" in too_high.json()["detail"]
    created = browser.send(
        "POST",
        "/organizations/acme/tokens",
        {"name": "ci", "role": "member", "expires_in_days": 30},
    )
    assert created.status_code == 201, created.content
    assert created["Cache-Control"].startswith("max-age=0")
    body = created.json()
    raw = body["token"]
    assert raw.startswith("sbk_") and body["prefix"] == raw[:12]
    listed = member.get("/organizations/acme/tokens").json()
    assert listed[0]["revoked_at"] is None  # live ones first
    assert "ci" in [token["name"] for token in listed]
    assert all("token" not in token for token in listed)
    assert Api(raw).get("/me").json()["token"] == "ci"

    duplicate = browser.send("POST", "/organizations/acme/tokens", {"name": "ci"})
    assert duplicate.status_code == 409

    assert member.send("DELETE", f"/organizations/acme/tokens/{body['id']}").status_code == 204
    assert Api(raw).get("/me").status_code == 401
    assert ApiToken.objects.get(pk=body["id"]).revoked_at is not None
    assert member.get("/organizations/acme/tokens").json()[-1]["revoked_at"] is not None


def test_a_viewer_token_makes_no_token(world: World, as_role: Any) -> None:
    refused = as_role("viewer").send("POST", "/organizations/acme/tokens", {"name": "more"})
    assert refused.status_code == 403
    assert "viewer token changes nothing" in refused.json()["detail"]
    assert not ApiToken.objects.filter(name="more").exists()


def test_names_are_checked_as_a_create_would_take_them(world: World, as_role: Any) -> None:
    viewer = as_role("viewer")
    path = f"/projects/{world.project.uid}/service-names"
    answers = viewer.get(f"{path}?name=Email%20Sender&name=9lives&name=Stra%C3%9Fe").json()
    assert answers[0] == {
        "name": "Email Sender",
        "dns_label": "email-sender",
        "hostname": "email-sender.internal",
        "error": None,
    }
    assert answers[1]["dns_label"] is None
    assert answers[1]["error"].startswith("The hostname must start with a letter")
    # The naming rule folds ß, but a create does not take it: neither does the check.
    assert answers[2]["dns_label"] is None and "try “strasse”" in answers[2]["error"]
    refused = as_role("member").send(
        "POST", f"/projects/{world.project.uid}/services", {"name": "Straße"}
    )
    assert refused.status_code == 422
