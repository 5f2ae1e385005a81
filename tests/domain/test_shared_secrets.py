from __future__ import annotations

import io
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.signals import before_task_publish
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from networking import rotation
from networking.crypto import SecretText
from networking.models import AuditEvent, SecretRotation, Service, SharedSecret
from networking.tasks import reconcile_project, rotate_due_secrets
from tests.access.test_access_matrix import crawl
from tests.conftest import World


def create(client: Client, world: World, **data: Any) -> tuple[int, str]:
    response = client.post(reverse("secret-create", args=[world.project.uid]), data, follow=True)
    return response.status_code, response.content.decode()


class TestCreate:
    @pytest.mark.parametrize(
        ("name", "told"),
        [
            ("DATABASE_URL", "postgres’s connection string"),
            ("API_URL", "api’s internal URL"),
        ],
    )
    def test_a_name_that_would_shadow_a_suggested_variable_is_refused(
        self, owner_client: Client, world: World, name: str, told: str
    ) -> None:
        status, html = create(owner_client, world, name=name, services=[world.api.pk])
        assert status == 200
        assert told in html and "Choose another name" in html
        assert not SharedSecret.objects.filter(project=world.project, name=name).exists()

    def test_a_second_database_is_suggested_its_own_variable(
        self, owner_client: Client, world: World
    ) -> None:
        orders = Service.objects.create(
            project=world.project,
            display_name="orders db",
            name="orders-db",
            kind=Service.Kind.POSTGRESQL,
            ports=[5432],
            database_user="orders",
            database_name="orders",
        )
        page = owner_client.get(reverse("service-detail", args=[world.project.uid, orders.pk]))
        assert "ORDERS_DB_URL=" in page.content.decode()
        first = owner_client.get(
            reverse("service-detail", args=[world.project.uid, world.postgres.pk])
        )
        assert "DATABASE_URL=" in first.content.decode()

    def test_a_generated_value_has_256_bits(self, owner_client: Client, world: World) -> None:
        create(owner_client, world, name="WEBHOOK_SECRET", services=[world.api.pk])
        secret = SharedSecret.objects.get(project=world.project, name="WEBHOOK_SECRET")
        assert secret.value is not None
        assert len(secret.value.reveal()) >= 43  # 32 random bytes, url-safe base64
        assert list(secret.services.all()) == [world.api]
        event = AuditEvent.objects.get(action=AuditEvent.Action.SECRET_CREATED)
        assert event.details == {"services": ["api"]}

    def test_a_pasted_value_is_kept_and_never_shown_back(
        self, owner_client: Client, world: World
    ) -> None:
        pasted = "pasted-value-with-enough-length"
        _, page = create(owner_client, world, name="STRIPE_KEY", value=pasted)
        assert pasted not in page
        secret = SharedSecret.objects.get(name="STRIPE_KEY")
        assert secret.value is not None and secret.value.reveal() == pasted

    @pytest.mark.parametrize(
        ("name", "message"),
        [
            ("", "Enter a name"),
            ("internal_api_secret", "Try INTERNAL_API_SECRET"),
            ("1SECRET", "not starting with a digit"),
            ("MY-SECRET", "Try MY_SECRET"),
            ("PATH", "set by the platform"),
            ("KUBERNETES_TOKEN", "set by the platform"),
            ("API_SECRET_NEXT", "used during rotations"),
            ("INTERNAL_API_SECRET", "already has a secret named INTERNAL_API_SECRET"),
        ],
    )
    def test_a_bad_name_is_refused_with_a_reason(
        self, owner_client: Client, world: World, name: str, message: str
    ) -> None:
        count = SharedSecret.objects.count()
        status, page = create(owner_client, world, name=name)
        assert status == 200
        assert message in page
        assert SharedSecret.objects.count() == count

    def test_a_short_pasted_value_is_refused(self, owner_client: Client, world: World) -> None:
        _, page = create(owner_client, world, name="SHORT", value="tiny")
        assert "at least 16 characters" in page
        assert not SharedSecret.objects.filter(name="SHORT").exists()

    def test_another_tenants_service_cannot_be_attached(
        self, owner_client: Client, world: World
    ) -> None:
        _status, page = create(
            owner_client, world, name="X_SECRET", services=[world.other_service.pk]
        )
        assert "is not in this project" in page
        assert not SharedSecret.objects.filter(name="X_SECRET").exists()


def test_unchecking_every_service_detaches_them(owner_client: Client, world: World) -> None:
    url = reverse("secret-edit", args=[world.project.uid, world.secret.pk])
    assert owner_client.post(url, {}).status_code == 302
    assert world.secret.services.count() == 0


class TestWhoSeesWhat:
    def page(self, client: Client, world: World) -> str:
        return client.get(reverse("secret-list", args=[world.project.uid])).content.decode()

    def test_viewers_see_everything_but_the_value_and_change_nothing(
        self, viewer_client: Client, world: World
    ) -> None:
        html = self.page(viewer_client, world)
        assert "INTERNAL_API_SECRET" in html
        assert "<code>api</code>" in html  # who receives it
        assert "New secret" not in html
        detail = viewer_client.get(
            reverse("secret-detail", args=[world.project.uid, world.secret.pk])
        )
        assert detail.status_code == 200
        page = detail.content.decode()
        assert "<code>api</code>" in page and "Services that receive it" in page
        assert world.secret.value is not None
        assert world.secret.value.reveal() not in page
        for action in ("Reveal value", "Rotate", "Change services", "Delete"):
            assert action not in page

    def test_members_see_names_and_attachments(self, client_for: Any, world: World) -> None:
        html = self.page(client_for("member"), world)
        assert "<code>api</code>" in html
        assert "New secret" not in html
        detail = client_for("member").get(
            reverse("secret-detail", args=[world.project.uid, world.secret.pk])
        )
        assert "Reveal value" not in detail.content.decode()
        assert "Rotate" not in detail.content.decode()

    def test_owners_reveal_and_it_is_audited(self, owner_client: Client, world: World) -> None:
        assert world.secret.value is not None
        value = world.secret.value.reveal()
        detail = reverse("secret-detail", args=[world.project.uid, world.secret.pk])
        assert value not in owner_client.get(detail).content.decode()
        response = owner_client.post(
            reverse("secret-reveal", args=[world.project.uid, world.secret.pk]),
            HTTP_HX_REQUEST="true",
        )
        assert value in response.content.decode()
        assert "no-store" in response["Cache-Control"]
        event = AuditEvent.objects.get(action=AuditEvent.Action.SECRET_REVEALED)
        assert (event.actor_label, event.target) == ("owner", "INTERNAL_API_SECRET")


class TestRotate:
    def url(self, world: World) -> str:
        return reverse("secret-rotate", args=[world.project.uid, world.secret.pk])

    def test_rotate_starts_phase_one(self, owner_client: Client, world: World) -> None:
        response = owner_client.post(self.url(world), follow=True)
        assert "Started rotation 1 of INTERNAL_API_SECRET" in response.content.decode()
        world.secret.refresh_from_db()
        assert world.secret.rotation_phase == SharedSecret.Phase.ACCEPT_NEW
        assert world.secret.next_value is not None
        rotation_record = SecretRotation.objects.get(secret=world.secret)
        assert rotation_record.started_by_label == "owner"
        assert AuditEvent.objects.filter(action=AuditEvent.Action.ROTATION_STARTED).exists()

    def test_a_second_rotate_while_one_runs_is_refused(
        self, owner_client: Client, world: World
    ) -> None:
        owner_client.post(self.url(world))
        world.secret.refresh_from_db()
        pending = world.secret.next_value
        response = owner_client.post(self.url(world), follow=True)
        assert "is already being rotated" in response.content.decode()
        world.secret.refresh_from_db()
        assert world.secret.next_value is not None and pending is not None
        assert world.secret.next_value.reveal() == pending.reveal()
        assert SecretRotation.objects.filter(secret=world.secret).count() == 1

    def test_rotate_is_one_click_on_the_secret_page(
        self, owner_client: Client, world: World
    ) -> None:
        """The page's Rotate button posts the rotation itself: no confirmation page between."""
        detail = reverse("secret-detail", args=[world.project.uid, world.secret.pk])
        html = owner_client.get(detail).content.decode()
        form = re.search(
            rf'<form method="post" action="{re.escape(self.url(world))}"[^>]*>(.*?)</form>',
            html,
            re.S,
        )
        assert form is not None, "no form posting to the rotation"
        assert re.search(r'<button type="submit"[^>]*>Rotate</button>', form.group(1))
        assert not re.search(r"<input(?![^>]*csrfmiddlewaretoken)", form.group(1))
        # While it runs, the button gives way to what is running.
        owner_client.post(self.url(world))
        html = owner_client.get(detail).content.decode()
        assert f'action="{self.url(world)}"' not in html
        assert "Rotation 1 running" in html
        # Members see the rotation, never the button.
        member_page = world.client_for("member").get(detail).content.decode()
        assert f'action="{self.url(world)}"' not in member_page

    def test_the_live_part_carries_the_head_and_the_list_of_rotations(
        self, owner_client: Client, world: World
    ) -> None:
        """What the open page swaps in when the project changes: the rotation's progress, and
        out-of-band the Rotate button and the list, so "completed" shows without a reload."""
        owner_client.post(self.url(world))
        for _ in range(4):  # no receiver runs a workload: nothing to wait for
            rotation.advance(world.secret.pk)
        detail = reverse("secret-detail", args=[world.project.uid, world.secret.pk])
        part = owner_client.get(detail, HTTP_HX_REQUEST="true").content.decode()
        history = re.search(r'<section[^>]*id="rotation-history"[^>]*>(.*?)</section>', part, re.S)
        assert history is not None and 'hx-swap-oob="outerHTML"' in history.group(0)
        assert "Rotation 1:" in history.group(1) and "completed at" in history.group(1)
        head = re.search(r'<div[^>]*id="secret-head"[^>]*>', part)
        assert head is not None and 'hx-swap-oob="outerHTML"' in head.group(0)
        assert f'action="{self.url(world)}"' in part  # the Rotate button is back
        # The whole page carries no out-of-band marks: they are for the swap only.
        assert "hx-swap-oob" not in owner_client.get(detail).content.decode()

    def test_the_page_shows_progress_phase_by_phase(
        self, owner_client: Client, world: World
    ) -> None:
        owner_client.post(self.url(world))
        detail = reverse("secret-detail", args=[world.project.uid, world.secret.pk])
        html = owner_client.get(detail, HTTP_HX_REQUEST="true").content.decode()
        assert 'aria-current="step"' in html
        assert "1. Accept the new value" in html
        assert "Rotation 1 in progress" in html
        assert 'hx-trigger="project-changed from:body"' in html


class TestGraceWindow:
    """After every receiver sends the new value, the old one is still accepted for a while."""

    def to_grace(self, world: World, *, deployed: bool) -> SharedSecret:
        workload = {"kind": "Deployment", "name": "api", "secrets": "", "rolled_out": True}
        Service.objects.filter(pk=world.api.pk).update(workload=workload if deployed else {})
        rotation.start_rotation(world.secret, actor=None)
        assert rotation.advance(world.secret.pk) == SharedSecret.Phase.SEND_NEW
        assert rotation.advance(world.secret.pk) == SharedSecret.Phase.GRACE
        return SharedSecret.objects.get(pk=world.secret.pk)

    def detail(self, client: Client, world: World) -> str:
        url = reverse("secret-detail", args=[world.project.uid, world.secret.pk])
        return client.get(url).content.decode()

    def test_it_waits_while_a_receiver_runs_a_workload(self, world: World) -> None:
        secret = self.to_grace(world, deployed=True)
        assert secret.grace_until is not None and secret.grace_until > timezone.now()
        assert rotation.advance(world.secret.pk) is None  # still waiting

    def test_with_no_receiver_running_a_workload_nothing_waits(self, world: World) -> None:
        """Nobody could still be sending the old value: no grace window to wait out."""
        secret = self.to_grace(world, deployed=False)
        assert secret.grace_until is None
        assert rotation.advance(world.secret.pk) == SharedSecret.Phase.RETIRE_OLD

    def test_the_page_explains_the_wait_and_offers_owners_a_way_out(
        self, owner_client: Client, viewer_client: Client, world: World
    ) -> None:
        self.to_grace(world, deployed=True)
        html = self.detail(owner_client, world)
        assert "a job started before the rotation" in html
        assert "from now); then every service restarts without the old value" in html
        assert "End the grace window now" in html
        assert "refuses the old value at once" in html
        assert "End the grace window now" not in self.detail(viewer_client, world)

    def test_an_owner_ends_it_early_and_the_old_value_is_retired(
        self, owner_client: Client, world: World
    ) -> None:
        self.to_grace(world, deployed=True)
        url = reverse("secret-end-grace", args=[world.project.uid, world.secret.pk])
        response = owner_client.post(url, follow=True)
        assert "Ended the grace window" in response.content.decode()
        event = AuditEvent.objects.get(action=AuditEvent.Action.ROTATION_GRACE_ENDED)
        assert event.actor_label == "owner"
        assert rotation.advance(world.secret.pk) == SharedSecret.Phase.RETIRE_OLD
        # A second click finds nothing left to end.
        response = owner_client.post(url, follow=True)
        assert "has no grace window running any more" in response.content.decode()
        assert AuditEvent.objects.filter(action=AuditEvent.Action.ROTATION_GRACE_ENDED).count() == 1

    def test_viewers_cannot_end_it(self, viewer_client: Client, world: World) -> None:
        secret = self.to_grace(world, deployed=True)
        url = reverse("secret-end-grace", args=[world.project.uid, world.secret.pk])
        assert viewer_client.post(url).status_code == 403
        assert SharedSecret.objects.get(pk=secret.pk).grace_until == secret.grace_until

    def test_rotations_are_counted_as_people_count_them(
        self, owner_client: Client, world: World
    ) -> None:
        for _ in range(2):
            rotation.start_rotation(world.secret, actor=None)
            while rotation.advance(world.secret.pk) not in (None, "completed"):
                SharedSecret.objects.filter(pk=world.secret.pk).update(grace_until=None)
        html = self.detail(owner_client, world)
        assert "rotated 2 times" in html
        assert "Rotation 2:" in html and "Rotation 1:" in html
        assert "version" not in html.lower()


class TestTheReceiversCatchUp:
    """Outside a rotation, the receivers' table follows the cluster as it catches up."""

    def partial(self, client: Client, world: World) -> str:
        detail = reverse("secret-detail", args=[world.project.uid, world.secret.pk])
        return client.get(detail, HTTP_HX_REQUEST="true").content.decode()

    def runs(self, world: World, version: int | None, *, rolled_out: bool) -> None:
        secrets = "" if version is None else f"INTERNAL_API_SECRET={version}"
        Service.objects.filter(pk=world.api.pk).update(
            workload={
                "kind": "Deployment",
                "name": "api",
                "secrets": secrets,
                "rolled_out": rolled_out,
            }
        )

    def test_it_refreshes_whenever_the_project_changes(
        self, owner_client: Client, world: World
    ) -> None:
        html = self.partial(owner_client, world)
        assert html.lstrip().startswith('<section class="card" id="rotation"')
        assert 'hx-trigger="project-changed from:body"' in html

    @pytest.mark.parametrize(
        ("version", "rolled_out", "shown"),
        [(None, True, "restarting to receive it"), (1, False, "restarting onto the current value")],
    )
    def test_it_says_what_each_receiver_is_doing(
        self,
        owner_client: Client,
        world: World,
        version: int | None,
        rolled_out: bool,
        shown: str,
    ) -> None:
        self.runs(world, version, rolled_out=rolled_out)
        assert shown in self.partial(owner_client, world)

    def test_a_receiver_on_the_current_value_is_up_to_date(
        self, owner_client: Client, world: World
    ) -> None:
        self.runs(world, world.secret.version, rolled_out=True)
        html = self.partial(owner_client, world)
        assert "up to date" in html
        # Versions are ours, not the user's (a form's random CSRF token may spell anything).
        shown = re.sub(r'<input type="hidden" name="csrfmiddlewaretoken"[^>]*>', "", html)
        assert f"v{world.secret.version}" not in shown

    def test_the_page_and_its_partial_are_cached_apart(
        self, owner_client: Client, world: World
    ) -> None:
        detail = reverse("secret-detail", args=[world.project.uid, world.secret.pk])
        assert "HX-Request" in owner_client.get(detail)["Vary"]


def test_a_scheduled_rotation_starts_when_due(world: World) -> None:
    SharedSecret.objects.filter(pk=world.secret.pk).update(
        rotate_every_days=30, created_at=timezone.now() - timedelta(days=31)
    )
    assert rotate_due_secrets.apply().get() == 1
    world.secret.refresh_from_db()
    assert world.secret.rotating
    assert SecretRotation.objects.get(secret=world.secret).started_by_label == "the schedule"
    event = AuditEvent.objects.get(action=AuditEvent.Action.ROTATION_STARTED)
    assert (event.actor_label, event.details) == ("system", {"trigger": "schedule"})
    assert rotate_due_secrets.apply().get() == 0  # already rotating


def test_key_rotation_reencrypts_shared_secrets(world: World, settings: Any) -> None:
    from cryptography.fernet import Fernet

    rotation.start_rotation(world.secret, actor=None)
    world.secret.refresh_from_db()
    assert world.secret.value is not None and world.secret.next_value is not None
    values = (world.secret.value.reveal(), world.secret.next_value.reveal())
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, *settings.FIELD_ENCRYPTION_KEYS]
    call_command("reencrypt_secrets", stdout=io.StringIO())
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    secret = SharedSecret.objects.get(pk=world.secret.pk)
    assert secret.value is not None and secret.next_value is not None
    assert (secret.value.reveal(), secret.next_value.reveal()) == values


CANARY = "shared-canary-8c1f0e2d9b7a6c5d4e3f2a1b"


def test_the_canary_secret_appears_only_in_the_reveal(
    world: World, caplog: pytest.LogCaptureFixture, settings: Any, tmp_path: Path
) -> None:
    SharedSecret.objects.filter(pk=world.secret.pk).update(value=SecretText.seal(CANARY))
    SharedSecret.objects.filter(pk=world.other_secret.pk).update(value=SecretText.seal(CANARY))
    published: list[str] = []

    def capture(body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        published.append(repr(body) + repr(headers))

    before_task_publish.connect(capture)
    try:
        with caplog.at_level(logging.DEBUG):
            # The worker puts it in the cluster's Secret; it logs nothing of it.
            settings.MANIFESTS_DIR = tmp_path
            assert reconcile_project.apply(args=(world.project.pk,)).get() == "applied"
            seen_in = crawl(world, lambda body: CANARY in body)
    finally:
        before_task_publish.disconnect(capture)
    assert seen_in == [("secret-reveal", "POST", "owner", False)]
    assert CANARY not in caplog.text
    assert all(CANARY not in message for message in published)


def test_the_manifests_backend_keeps_the_secret_file_private(
    world: World, settings: Any, tmp_path: Path
) -> None:
    settings.MANIFESTS_DIR = tmp_path
    reconcile_project.apply(args=(world.project.pk,)).get()
    path = tmp_path / world.project.namespace / "01-secret-stackblaze-shared-secrets.yaml"
    assert path.exists()
    assert path.stat().st_mode & 0o077 == 0


def test_a_service_that_stops_receiving_loses_it_from_its_desired_workload(world: World) -> None:
    from networking.passes import desired_state_for

    desired = desired_state_for(world.project)
    assert desired.workloads["api"].annotation == "INTERNAL_API_SECRET=1"
    world.secret.services.remove(world.api)
    desired = desired_state_for(world.project)
    assert desired.workloads["api"].annotation is None
    assert desired.workloads["api"].env == ()
    assert Service.objects.get(pk=world.api.pk).secret_version("INTERNAL_API_SECRET") is None
