"""Reference variables: a database's connection string (or a service's URL) wired into other
services, kept current, never copied by hand, never shown."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from networking import passes as reconciler
from networking import references
from networking.cluster.desired import SHARED_SECRETS
from networking.crypto import SecretText
from networking.models import AuditEvent, ReferenceVariable, Service, SharedSecret
from tests.conftest import World, make_secret, make_service

PASSWORD = "p@ss:w/rd?#"


def give(source: Service, *consumers: Service, variable: str = "") -> list[ReferenceVariable]:
    return references.add(source, consumers, variable, actor=None)


def secret_data(world: World) -> dict[str, str]:
    secret = reconciler.desired_state_for(world.project).objects[("Secret", SHARED_SECRETS)]
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


class TestNames:
    @pytest.mark.parametrize(
        ("kind", "variable"),
        [
            ("postgresql", "DATABASE_URL"),
            ("mysql", "MYSQL_URL"),
            ("redis", "REDIS_URL"),
            ("mongodb", "MONGODB_URL"),
            ("private", "BILLING_URL"),
        ],
    )
    def test_each_kind_gets_its_usual_name(self, world: World, kind: str, variable: str) -> None:
        source = make_service(world.project, "billing", kind, None if kind != "private" else [80])
        (given,) = give(source, world.api)
        assert given.variable == variable

    @pytest.mark.parametrize(
        ("name", "variable"),
        [
            ("kubernetes proxy", "SVC_KUBERNETES_PROXY_URL"),
            ("stackblaze-hooks", "SVC_STACKBLAZE_HOOKS_URL"),
        ],
    )
    def test_a_suggested_name_is_one_a_container_may_be_given(
        self, world: World, name: str, variable: str
    ) -> None:
        from networking import rotation

        source = make_service(world.project, name, Service.Kind.PRIVATE, [80])
        (given,) = give(source, world.api)
        assert given.variable == variable
        assert rotation.validate_variable_name(given.variable) == variable

    def test_a_second_database_gets_a_name_of_its_own(self, world: World) -> None:
        give(world.postgres, world.api)
        orders = make_service(world.project, "orders db", Service.Kind.POSTGRESQL)
        (second,) = give(orders, world.api)
        assert second.variable == "ORDERS_DB_URL"

    def test_a_name_the_consumer_already_gets_is_refused_with_the_reason(
        self, world: World
    ) -> None:
        # api receives INTERNAL_API_SECRET (the world's shared secret).
        with pytest.raises(ValidationError) as refused:
            give(world.postgres, world.api, variable="INTERNAL_API_SECRET_NEXT")
        assert "api already gets INTERNAL_API_SECRET_NEXT from the shared secret" in str(
            refused.value
        )
        give(world.postgres, world.api)
        other = make_service(world.project, "cache", Service.Kind.REDIS)
        with pytest.raises(ValidationError) as refused:
            give(other, world.api, variable="DATABASE_URL")
        assert "api already gets DATABASE_URL from the address of postgres" in str(refused.value)

    def test_a_shared_secret_may_not_shadow_a_reference_either(self, world: World) -> None:
        give(world.postgres, world.api, variable="PAYMENTS_TOKEN")
        secret = SharedSecret(
            project=world.project, name="PAYMENTS_TOKEN", value=SecretText.seal("x" * 32)
        )
        with pytest.raises(ValidationError) as refused:
            secret.create([world.api], actor=None)
        assert "api already gets PAYMENTS_TOKEN from the address of postgres" in str(refused.value)

    def test_bad_names_and_odd_choices_are_refused(self, world: World) -> None:
        for variable in ("database-url", "1URL", "PATH", "KUBERNETES_X"):
            with pytest.raises(ValidationError):
                give(world.postgres, world.api, variable=variable)
        with pytest.raises(ValidationError):
            give(world.postgres, world.postgres)
        with pytest.raises(ValidationError):
            give(world.postgres)
        assert not ReferenceVariable.objects.exists()


class TestWhatTheClusterGets:
    def test_the_secret_holds_the_percent_encoded_connection_string(self, world: World) -> None:
        Service.objects.filter(pk=world.postgres.pk).update(
            database_password=SecretText.seal(PASSWORD)
        )
        world.postgres.refresh_from_db()
        give(world.postgres, world.api)
        value = secret_data(world)["ref.api.DATABASE_URL"]
        assert value.startswith(f"postgresql://{world.postgres.database_user}:")
        assert quote(PASSWORD, safe="") in value
        assert value.endswith("@postgres.internal:5432/postgres")

    def test_the_consumer_takes_it_from_the_secret_and_restarts_when_it_changes(
        self, world: World
    ) -> None:
        give(world.postgres, world.api)
        spec = reconciler.desired_state_for(world.project).workloads["api"]
        assert {
            "name": "DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": SHARED_SECRETS, "key": "ref.api.DATABASE_URL"}},
        } in spec.env
        assert spec.references is not None and spec.references.startswith("DATABASE_URL=")
        # The same value: the same version, no restart.
        again = reconciler.desired_state_for(world.project).workloads["api"]
        assert again.references == spec.references
        # The database renamed: a new value, a new version (one restart).
        world.postgres.display_name = "Main DB"
        world.postgres.full_clean()
        world.postgres.save_changes(actor=None)
        renamed = reconciler.desired_state_for(world.project).workloads["api"]
        assert renamed.references != spec.references
        assert "@main-db.internal:5432/" in secret_data(world)["ref.api.DATABASE_URL"]

    def test_the_version_says_nothing_of_the_value(self, world: World) -> None:
        Service.objects.filter(pk=world.postgres.pk).update(
            database_password=SecretText.seal(PASSWORD)
        )
        give(world.postgres, world.api)
        spec = reconciler.desired_state_for(world.project).workloads["api"]
        assert spec.references is not None
        assert PASSWORD not in spec.references and quote(PASSWORD, safe="") not in spec.references

    def test_a_service_gives_its_internal_url(self, world: World) -> None:
        worker = make_service(world.project, "worker", Service.Kind.PRIVATE, [3000])
        give(world.api, worker)
        assert secret_data(world)["ref.worker.API_URL"] == "http://api.internal:8080"

    def test_removing_it_takes_the_variable_back(self, world: World) -> None:
        (given,) = give(world.postgres, world.api)
        assert references.remove(given, actor=None)
        assert not references.remove(given, actor=None)
        spec = reconciler.desired_state_for(world.project).workloads["api"]
        assert spec.references is None
        assert all(entry["name"] != "DATABASE_URL" for entry in spec.env)
        assert "ref.api.DATABASE_URL" not in secret_data(world)
        assert AuditEvent.objects.filter(action=AuditEvent.Action.REFERENCE_REMOVED).count() == 1

    def test_deleting_either_side_removes_it(self, world: World) -> None:
        give(world.postgres, world.api)
        world.api.remove(actor=None)
        assert not ReferenceVariable.objects.exists()


class TestThePages:
    def detail(self, client: Client, world: World, service: Service) -> str:
        url = reverse("service-detail", args=[world.project.uid, service.pk])
        return client.get(url).content.decode()

    def add_url(self, world: World) -> str:
        return reverse("service-reference-add", args=[world.project.uid, world.postgres.pk])

    def test_both_sides_show_the_link_and_neither_the_value(
        self, client_for: Any, world: World
    ) -> None:
        Service.objects.filter(pk=world.postgres.pk).update(
            database_password=SecretText.seal(PASSWORD)
        )
        give(world.postgres, world.api)
        owner = client_for("owner")
        source = self.detail(owner, world, world.postgres)
        assert "Its connection string is used by" in source
        assert ">api</a> as <code>DATABASE_URL</code>" in source
        consumer = self.detail(owner, world, world.api)
        assert "<code>DATABASE_URL</code>: the connection string of" in consumer
        for html in (source, consumer):
            assert PASSWORD not in html and quote(PASSWORD, safe="") not in html

    def test_a_member_wires_it_from_the_database_page(self, client_for: Any, world: World) -> None:
        response = client_for("member").post(
            self.add_url(world), {"consumers": [world.api.pk]}, follow=True
        )
        assert "address goes to api as DATABASE_URL" in response.content.decode()
        event = AuditEvent.objects.get(action=AuditEvent.Action.REFERENCE_ADDED)
        assert event.details == {"source": "postgres", "variable": "DATABASE_URL"}

    def test_a_refusal_is_shown_on_the_form(self, owner_client: Client, world: World) -> None:
        response = owner_client.post(
            self.add_url(world), {"consumers": [world.api.pk], "variable": "INTERNAL_API_SECRET"}
        )
        assert response.status_code == 200
        assert "api already gets INTERNAL_API_SECRET from the shared secret" in (
            response.content.decode()
        )
        assert not ReferenceVariable.objects.exists()
        # The rest of the page is still the service's own: who can reach it is unchanged.
        assert "No one: no policy admits any connection to it." not in response.content.decode()
        assert "Who can reach postgres" in response.content.decode()

    def test_viewers_see_it_and_change_nothing(self, client_for: Any, world: World) -> None:
        give(world.postgres, world.api)
        html = self.detail(client_for("viewer"), world, world.postgres)
        assert ">api</a> as <code>DATABASE_URL</code>" in html
        assert "Give it to them" not in html and ">Remove<" not in html
        response = client_for("viewer").post(self.add_url(world), {"consumers": [world.api.pk]})
        assert response.status_code == 403

    def test_another_tenants_service_cannot_be_chosen(
        self, owner_client: Client, world: World
    ) -> None:
        response = owner_client.post(self.add_url(world), {"consumers": [world.other_service.pk]})
        assert response.status_code == 200
        assert "not in this project" in response.content.decode()
        assert not ReferenceVariable.objects.exists()


def test_the_value_reaches_no_log_and_no_file_in_clear(
    world: World, manifests: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Service.objects.filter(pk=world.postgres.pk).update(database_password=SecretText.seal(PASSWORD))
    world.postgres.refresh_from_db()
    give(world.postgres, world.api)
    with caplog.at_level(logging.DEBUG):
        reconciler.reconcile(world.project.pk)
    for text in (caplog.text, *(path.read_text() for path in manifests.rglob("*.yaml"))):
        assert PASSWORD not in text and quote(PASSWORD, safe="") not in text


def test_make_secret_still_works_alongside(world: World) -> None:
    """A project with both shared secrets and references keeps one Secret holding both."""
    make_secret(world.project, "OTHER_TOKEN", [world.postgres])
    give(world.postgres, world.api)
    data = secret_data(world)
    assert {"INTERNAL_API_SECRET", "OTHER_TOKEN", "ref.api.DATABASE_URL"} <= set(data)
