"""Hostile input and a broken broker: a clear answer, nothing stored that should not be."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.core import mail
from django.test import Client
from django.urls import reverse

from dashboard.celery import app as celery_app
from networking import peering
from networking.models import AuditEvent, PeeringRequest, Project, Service
from networking.tasks import resync_all_projects, send_peering_notification
from tests.access.test_access_matrix import MATRIX, _kwargs
from tests.conftest import ROLES, World

# -- URL parameters --------------------------------------------------------------------------

PROJECT_PAGES = ["", "services/", "services/new/", "secrets/", "peering/", "audit/", "sync/"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", PROJECT_PAGES)
@pytest.mark.parametrize(
    "project_id",
    ["%00", "abc%00defghjk", "ABCDEFGHJKMN", "abcdefghjkm", "abcdefghjkmnp", "0000oooo1111"],
)
def test_a_malformed_project_id_is_404(world: World, role: str, page: str, project_id: str) -> None:
    response = world.client_for(role).get(f"/projects/{project_id}/{page}")
    assert response.status_code == 404


def test_a_well_formed_but_unknown_project_id_is_404(owner_client: Client) -> None:
    assert owner_client.get("/projects/abcdefghjkmn/").status_code == 404


# Every query parameter a page reads (the overview's search and filters, the audit log's).
QUERY_PARAMETERS = [
    "display_name", "service", "was", "page", "next", "q", "kind", "status", "sort", "since",
    "until", "who", "what", "part", "shown",
]  # fmt: skip
FORM_FIELDS = [
    "name", "display_name", "kind", "ports", "services", "value", "rotate_every_days",
    "target", "justification", "reason", "username", "password",
]  # fmt: skip


@pytest.mark.parametrize("role", ["viewer", "owner", "support"])
def test_nul_bytes_anywhere_never_make_a_500(world: World, role: str) -> None:
    # Deletions last: the objects the other URLs name are made from the world's service.
    for name, method in sorted(MATRIX, key=lambda entry: entry[0].endswith("-delete")):
        client = world.client_for(role)  # signed in for each: the matrix holds "Sign out" too
        url = reverse(name, kwargs=_kwargs(world, name, foreign=False))
        if method == "GET":
            response = client.get(url, dict.fromkeys(QUERY_PARAMETERS, "a\x00b"))
        else:
            response = client.post(url, dict.fromkeys(FORM_FIELDS, "a\x00b"))
        assert response.status_code < 500, (name, method, response.status_code)
        # Still signed in: the page itself answered (not the sign-in page's redirect).
        if name != "logout":
            assert settings.LOGIN_URL not in response.get("Location", ""), name
    assert all("\x00" not in service.display_name for service in Service.objects.all())


@pytest.mark.parametrize("until", ["9999-12-31", "0001-01-01", "2026-02-30"])
def test_audit_dates_at_the_ends_of_the_calendar_never_make_a_500(
    world: World, owner_client: Client, until: str
) -> None:
    # A day the calendar lacks is refused: on the page beside its field, by the export as 400.
    exists = until != "2026-02-30"
    for name in ("audit-log", "audit-log-csv"):
        url = reverse(name, args=[world.project.uid])
        response = owner_client.get(url, {"since": until, "until": until})
        expected = 200 if exists or name == "audit-log" else 400
        assert response.status_code == expected, (name, until)
        if name == "audit-log-csv" and exists:
            b"".join(response.streaming_content)  # type: ignore[attr-defined]


# -- Control characters in names and free text ------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Ini\nBeta", "Ini\rBeta", "Tab\there", "Bell\x07", "Esc\x1b[31m", "Rev\u202eesrever"]
)
def test_a_project_name_with_control_characters_is_refused(
    world: World, owner_client: Client, name: str
) -> None:
    response = owner_client.post(
        reverse("project-settings", args=[world.project.uid]), {"name": name}
    )
    assert response.status_code == 200
    assert "Remove" in response.content.decode()
    world.project.refresh_from_db()
    assert world.project.name == "Storefront"
    create = owner_client.post(reverse("project-create", args=[world.acme.slug]), {"name": name})
    assert create.status_code == 200
    assert not Project.objects.filter(name=name).exists()


def test_a_service_name_with_a_line_break_is_refused(world: World, owner_client: Client) -> None:
    response = owner_client.post(
        reverse("service-create", args=[world.project.uid]),
        {"display_name": "Back\nend", "kind": "private", "ports": "3000"},
    )
    assert response.status_code == 200
    assert "Remove a line break" in response.content.decode()
    assert not Service.objects.filter(display_name__contains="\n").exists()


def test_a_justification_may_have_line_breaks_but_no_escape_sequences(world: World) -> None:
    target = Project.objects.create(organization=world.globex, name="Ledger")
    with pytest.raises(peering.PeeringRefused, match="U\\+001B"):
        peering.request_peering(
            world.project, target.uid, "Reads\x1b[2J orders.", actor=world.users["owner"]
        )
    request = peering.request_peering(
        world.project, target.uid, "Reads orders.\nAnd refunds.", actor=world.users["owner"]
    )
    assert request.justification == "Reads orders.\nAnd refunds."


def test_a_rejection_reason_with_a_control_character_is_refused(world: World) -> None:
    with pytest.raises(peering.PeeringRefused, match="Remove"):
        peering.reject(world.other_peering, staff=world.users["support"], reason="No\x08pe")
    world.other_peering.refresh_from_db()
    assert world.other_peering.status == PeeringRequest.Status.PENDING_SUPPORT


def test_notifications_for_a_name_stored_before_the_rule_are_still_sent(world: World) -> None:
    # A row written before names were validated (or by hand in the database).
    Project.objects.filter(pk=world.other_project.pk).update(name="Ini\nBeta")
    history = [{"status": "pending_acceptance", "by": "globex-owner", "at": "2026-01-01T00:00"}]
    PeeringRequest.objects.filter(pk=world.peering.pk).update(history=history)
    notification = world.peering.notifications.create(event="requested")
    sent = send_peering_notification(notification.pk)
    assert sent >= 1
    assert mail.outbox[-1].subject.endswith("Ini Beta ↔ Storefront")


# -- The broker is down -----------------------------------------------------------------------


def test_a_change_is_saved_and_said_so_when_the_broker_is_down(
    transactional_db: None,
    world: World,
    owner_client: Client,
    broker_down: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    generation = world.project.generation
    response = owner_client.post(
        reverse("service-create", args=[world.project.uid]),
        {"display_name": "Background Worker", "kind": "private", "ports": "3000"},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Saved. The cluster will be updated when the worker queue is reachable again." in page
    assert Service.objects.filter(name="background-worker").exists()
    world.project.refresh_from_db()
    assert world.project.generation == generation + 1
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SERVICE_CREATED).count() == 1
    assert "Worker queue unreachable" in caplog.text


def test_a_peering_decision_is_kept_when_the_broker_is_down(
    transactional_db: None, world: World, broker_down: None
) -> None:
    support = world.client_for("support")
    response = support.post(reverse("support-approve", args=[world.other_peering.pk]), follow=True)
    assert response.status_code == 200
    assert "worker queue is reachable again" in response.content.decode()
    world.other_peering.refresh_from_db()
    assert world.other_peering.status == PeeringRequest.Status.APPROVED
    # Its email waits in the outbox for beat (tests/domain/test_peering.py sends such leftovers).
    assert world.other_peering.notifications.filter(event="approved", sent_at=None).exists()


def test_the_next_resync_applies_what_the_outage_held_back(
    transactional_db: None, world: World, owner_client: Client, broker_down: None, settings: Any
) -> None:
    owner_client.post(
        reverse("service-create", args=[world.project.uid]),
        {"display_name": "Background Worker", "kind": "private", "ports": "3000"},
    )
    world.project.refresh_from_db()
    assert world.project.sync_state == Project.SyncState.QUEUED
    # The queue is back: beat's resync reaches the worker (run in-process here).
    celery_app.conf.task_always_eager = True
    try:
        resync_all_projects.delay()
    finally:
        celery_app.conf.task_always_eager = False
    world.project.refresh_from_db()
    assert world.project.in_sync
    folder = settings.MANIFESTS_DIR / world.project.namespace
    assert any("background-worker" in path.name for path in folder.iterdir())
