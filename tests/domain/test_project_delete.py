"""Owners delete a project by typing its name; its namespace and its peers' policies follow."""

from __future__ import annotations

from typing import Any

from celery.signals import before_task_publish
from django.test import Client
from django.urls import reverse

from networking.models import AuditEvent, PeeringRequest, Project, SharedSecret
from networking.tasks import delete_namespace_if_orphaned
from tests.conftest import World


def test_it_needs_the_name_typed_exactly(owner_client: Client, world: World) -> None:
    url = reverse("project-delete", args=[world.project.uid])
    page = owner_client.get(url).content.decode()
    assert "2 services" in page and "1 shared secret" in page
    assert world.project.namespace in page
    for typed in ("", "storefront", "Storefront!"):
        response = owner_client.post(url, {"confirm_name": typed})
        assert response.status_code == 200
        assert "exactly, to delete it" in response.content.decode()
    assert Project.objects.filter(pk=world.project.pk).exists()


def test_deleting_removes_everything_and_queues_the_namespace(
    owner_client: Client, world: World, django_capture_on_commit_callbacks: Any
) -> None:
    sent: list[tuple[str, Any]] = []

    def capture(body: Any = None, headers: Any = None, **_: Any) -> None:
        sent.append((headers["task"], list(body[0])))

    before_task_publish.connect(capture)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = owner_client.post(
                reverse("project-delete", args=[world.project.uid]),
                {"confirm_name": f" {world.project.name} "},
            )
    finally:
        before_task_publish.disconnect(capture)
    assert response.status_code == 302
    assert response["Location"] == reverse("project-list")
    assert not Project.objects.filter(pk=world.project.pk).exists()
    assert not SharedSecret.objects.filter(pk=world.secret.pk).exists()
    assert (delete_namespace_if_orphaned.name, [world.project.namespace]) in sent
    event = AuditEvent.objects.get(action=AuditEvent.Action.PROJECT_DELETED)
    assert (event.organization_id, event.actor_label, event.target) == (
        world.acme.pk,
        "owner",
        world.project.name,
    )
    assert event.details["project_id"] == world.project.uid


def test_a_peered_project_is_re_applied_without_the_deleted_one(
    owner_client: Client, world: World
) -> None:
    PeeringRequest.objects.filter(pk=world.peering.pk).update(status=PeeringRequest.Status.ACTIVE)
    peer = world.other_project
    before = Project.objects.get(pk=peer.pk).generation
    owner_client.post(
        reverse("project-delete", args=[world.project.uid]),
        {"confirm_name": world.project.name},
    )
    assert Project.objects.get(pk=peer.pk).generation == before + 1
    event = AuditEvent.objects.get(project=peer, action=AuditEvent.Action.PEERING_DISCONNECTED)
    assert event.details == {"reason": "the peered project was deleted"}
    assert not PeeringRequest.objects.filter(pk=world.peering.pk).exists()
