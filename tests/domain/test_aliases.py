"""Renames that break nobody: the old hostname keeps resolving for a while, reserved, visible."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from networking import passes as reconciler
from networking.cluster.desired import ALIAS_OF_LABEL
from networking.models import ALIAS_EXTENSION, AuditEvent, Project, Service, ServiceAlias
from networking.tasks import expire_service_aliases
from tests.conftest import World, make_service


def rename(service: Service, display_name: str, keep: timedelta = timedelta(hours=24)) -> None:
    service.display_name = display_name
    service.full_clean()
    service.save_changes(actor=None, keep_old_name_for=keep)


def generation(project: Project) -> int:
    return Project.objects.get(pk=project.pk).generation


class TestTheOldHostname:
    def test_a_rename_keeps_it_resolving_for_a_day_by_default(
        self, owner_client: Client, world: World
    ) -> None:
        url = reverse("service-edit", args=[world.project.uid, world.api.pk])
        response = owner_client.post(url, {"display_name": "Gateway", "ports": "8080"}, follow=True)
        alias = ServiceAlias.objects.get(service=world.api)
        assert alias.name == "api"
        left = alias.expires_at - timezone.now()
        assert timedelta(hours=23, minutes=59) < left <= timedelta(hours=24)
        assert "api.internal keeps resolving until" in response.content.decode()

    def test_the_cluster_keeps_a_second_service_under_the_old_name(self, world: World) -> None:
        rename(world.api, "Gateway")
        desired = reconciler.desired_state_for(world.project)
        new, old = desired.objects[("Service", "gateway")], desired.objects[("Service", "api")]
        assert (
            old["spec"]["selector"]
            == new["spec"]["selector"]
            == {"stackblaze.cloud/service": "gateway"}
        )
        assert old["spec"]["ports"] == new["spec"]["ports"]
        assert old["metadata"]["labels"][ALIAS_OF_LABEL] == "gateway"
        # Policies select pods, not Services: an alias admits nothing new.
        policies = {k: v for k, v in desired.objects.items() if k[0] == "NetworkPolicy"}
        before = reconciler.desired_state_for(world.project, aliases={})
        assert policies == {k: v for k, v in before.objects.items() if k[0] == "NetworkPolicy"}

    def test_a_rename_can_keep_nothing(self, world: World) -> None:
        rename(world.api, "Gateway", keep=timedelta(0))
        assert not ServiceAlias.objects.exists()
        assert ("Service", "api") not in reconciler.desired_state_for(world.project).objects

    def test_the_name_stays_reserved(self, world: World) -> None:
        rename(world.api, "Gateway")
        with pytest.raises(ValidationError) as refused:
            make_service(world.project, "api", Service.Kind.PRIVATE, [3000])
        assert "api.internal still resolves to “Gateway”" in str(refused.value)
        assert "end that old hostname first" in str(refused.value)
        with pytest.raises(ValidationError):
            rename(world.postgres, "API")

    def test_renaming_back_simply_ends_that_alias(self, world: World) -> None:
        rename(world.api, "Gateway")
        rename(world.api, "api")
        assert not ServiceAlias.objects.filter(name="api").exists()
        # ... and keeps the name it leaves, as any rename does.
        assert ServiceAlias.objects.filter(name="gateway", service=world.api).exists()
        event = AuditEvent.objects.filter(action=AuditEvent.Action.SERVICE_RENAMED).first()
        assert event is not None and event.details["alias_ended"] == "api"

    def test_renaming_twice_keeps_both_old_names_for_their_own_periods(self, world: World) -> None:
        rename(world.api, "Gateway", keep=timedelta(hours=1))
        rename(world.api, "Edge", keep=timedelta(days=7))
        kept = dict(ServiceAlias.objects.values_list("name", "expires_at"))
        assert set(kept) == {"api", "gateway"}
        assert kept["gateway"] - kept["api"] > timedelta(days=6)
        desired = reconciler.desired_state_for(world.project)
        for name in ("api", "gateway"):
            assert desired.objects[("Service", name)]["spec"]["selector"] == {
                "stackblaze.cloud/service": "edge"
            }

    def test_deleting_the_service_deletes_its_old_names(self, world: World) -> None:
        rename(world.api, "Gateway")
        world.api.remove(actor=None)
        assert not ServiceAlias.objects.exists()
        assert ("Service", "api") not in reconciler.desired_state_for(world.project).objects


class TestExpiry:
    def test_at_its_time_it_stops_resolving_and_the_log_says_so(self, world: World) -> None:
        rename(world.api, "Gateway")
        before = generation(world.project)
        assert expire_service_aliases.apply().get() == 0  # not yet
        assert ServiceAlias.objects.count() == 1
        # The clock moved on a day and a minute (not waited for).
        assert ServiceAlias.expire_due(timezone.now() + timedelta(hours=24, minutes=1)) == 1
        assert not ServiceAlias.objects.exists()
        assert generation(world.project) == before + 1  # the worker removes its Service
        event = AuditEvent.objects.get(action=AuditEvent.Action.ALIAS_EXPIRED)
        assert (event.actor_label, event.target) == ("system", "api.internal")
        assert ("Service", "api") not in reconciler.desired_state_for(world.project).objects
        # And the name is free again.
        make_service(world.project, "api", Service.Kind.PRIVATE, [3000])

    def test_an_extension_made_while_the_expiry_runs_keeps_it(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        rename(world.api, "Gateway")
        later = timezone.now() + timedelta(hours=24, minutes=1)
        locked = ServiceAlias._locked

        def extended_meanwhile(alias: ServiceAlias) -> ServiceAlias | None:
            # Between the expiry finding it due and locking it, someone kept it a day longer.
            ServiceAlias.objects.filter(pk=alias.pk).update(expires_at=later + ALIAS_EXTENSION)
            return locked(alias)

        monkeypatch.setattr(ServiceAlias, "_locked", extended_meanwhile)
        assert ServiceAlias.expire_due(later) == 0
        assert ServiceAlias.objects.get().expires_at == later + ALIAS_EXTENSION
        assert not AuditEvent.objects.filter(action=AuditEvent.Action.ALIAS_EXPIRED).exists()


class TestThePages:
    def detail(self, client: Client, world: World) -> str:
        return client.get(
            reverse("service-detail", args=[world.project.uid, world.api.pk])
        ).content.decode()

    def test_the_service_page_says_until_when_and_offers_a_way_out(
        self, client_for: Any, world: World
    ) -> None:
        rename(world.api, "Gateway")
        owner = self.detail(client_for("owner"), world)
        assert "<code>api.internal</code> still resolves to this service until" in owner
        assert "Keep it a day longer" in owner and "Stop it now" in owner
        member = self.detail(client_for("member"), world)
        assert "Keep it a day longer" in member and "Stop it now" not in member
        viewer = self.detail(client_for("viewer"), world)
        assert "still resolves" in viewer
        assert "Keep it a day longer" not in viewer

    def test_the_overview_says_it_too(self, owner_client: Client, world: World) -> None:
        rename(world.api, "Gateway")
        html = owner_client.get(reverse("project-overview", args=[world.project.uid])).content
        assert b"<code>api.internal</code> still resolves until" in html

    def test_the_edit_form_explains_before_saving(self, owner_client: Client, world: World) -> None:
        url = reverse("service-edit", args=[world.project.uid, world.api.pk])
        html = owner_client.get(url).content.decode()
        assert "If you rename it, keep the old hostname resolving for" in html
        assert '<option value="86400" selected>24 hours</option>' in html
        preview = owner_client.get(
            reverse("service-name-preview", args=[world.project.uid]),
            {"display_name": "Gateway", "service": str(world.api.pk)},
        ).content.decode()
        assert "keeps resolving only for the time chosen below" in preview

    def test_extending_moves_its_end_once_per_click_seen(
        self, client_for: Any, world: World
    ) -> None:
        rename(world.api, "Gateway")
        alias = ServiceAlias.objects.get()
        url = reverse("service-alias-extend", args=[world.project.uid, world.api.pk, alias.pk])
        seen = {"seen": alias.expires_at.isoformat()}
        client_for("member").post(url, seen)
        client_for("member").post(url, seen)  # the same page, clicked again
        extended = ServiceAlias.objects.get().expires_at
        assert extended == alias.expires_at + ALIAS_EXTENSION
        assert AuditEvent.objects.filter(action=AuditEvent.Action.ALIAS_EXTENDED).count() == 1
        assert client_for("viewer").post(url, seen).status_code == 403

    def test_extending_one_that_ended_meanwhile_says_it_is_gone(
        self, client_for: Any, world: World
    ) -> None:
        rename(world.api, "Gateway")
        alias = ServiceAlias.objects.get()
        url = reverse("service-alias-extend", args=[world.project.uid, world.api.pk, alias.pk])
        ended_at = alias.expires_at
        locked = ServiceAlias._locked

        def ended_meanwhile(found: ServiceAlias) -> ServiceAlias | None:
            ServiceAlias.objects.filter(pk=found.pk).delete()  # an owner, a moment earlier
            return locked(found)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ServiceAlias, "_locked", ended_meanwhile)
            response = client_for("member").post(url, {"seen": ended_at.isoformat()}, follow=True)
        assert "api.internal no longer resolves: it was ended or expired meanwhile" in (
            response.content.decode()
        )

    def test_an_owner_ends_it_now(self, client_for: Any, world: World) -> None:
        rename(world.api, "Gateway")
        alias = ServiceAlias.objects.get()
        url = reverse("service-alias-end", args=[world.project.uid, world.api.pk, alias.pk])
        assert client_for("member").post(url).status_code == 403
        response = client_for("owner").post(url, follow=True)
        assert "api.internal stops resolving" in response.content.decode()
        assert not ServiceAlias.objects.exists()
        assert AuditEvent.objects.filter(action=AuditEvent.Action.ALIAS_ENDED).count() == 1

    def test_malformed_input_is_no_error(self, owner_client: Client, world: World) -> None:
        rename(world.api, "Gateway")
        alias = ServiceAlias.objects.get()
        url = reverse("service-alias-extend", args=[world.project.uid, world.api.pk, alias.pk])
        for seen in ("", "x", "2026-13-45T99:99", "\x00"):
            assert owner_client.post(url, {"seen": seen}).status_code == 302
        assert ServiceAlias.objects.get().expires_at == alias.expires_at


def test_the_manifests_follow_the_old_name(world: World, manifests: Path) -> None:
    reconciler.reconcile(world.project.pk)
    rename(world.api, "Gateway")
    reconciler.reconcile(world.project.pk)
    folder = manifests / world.project.namespace
    assert (folder / "02-service-api.yaml").exists()
    assert (folder / "02-service-gateway.yaml").exists()
    ServiceAlias.expire_due(timezone.now() + timedelta(days=2))
    reconciler.reconcile(world.project.pk)
    assert not (folder / "02-service-api.yaml").exists()
