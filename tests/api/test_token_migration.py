"""API tokens moved from the networking app to the api app without touching their table: a
token issued before the move still works after it."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from api.models import ApiToken

BEFORE = [("networking", "0019_connection_tests"), ("api", "0001_initial")]

pytestmark = pytest.mark.django_db(transaction=True)


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_a_token_issued_before_the_move_authenticates_after_it() -> None:
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    old = _migrate(BEFORE)
    user = old.get_model("auth", "User").objects.create(username="ci")
    organization = old.get_model("networking", "Organization").objects.create(
        name="Acme", slug="acme", plan="pro"
    )
    old.get_model("networking", "Membership").objects.create(
        user=user, organization=organization, role="owner"
    )
    raw = "sbk_" + "a" * 40
    old.get_model("networking", "ApiToken").objects.create(
        user=user,
        organization=organization,
        name="ci-deploy",
        role="member",
        prefix=raw[: ApiToken.PREFIX_LENGTH],
        digest=ApiToken.digest_of(raw),
    )
    try:
        _migrate(latest)
        token = ApiToken.authenticate(raw)
        assert (token.name, token.role, token.organization_id) == (
            "ci-deploy",
            "member",
            organization.pk,
        )
    finally:
        _migrate(latest)


def test_the_token_content_type_follows_the_model() -> None:
    from django.contrib.contenttypes.models import ContentType

    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    _migrate([("api", "0002_tokens_move_to_the_api")])
    ContentType.objects.filter(model="apitoken").delete()
    ContentType.objects.create(app_label="networking", model="apitoken")
    _migrate(latest)
    assert list(
        ContentType.objects.filter(model="apitoken").values_list("app_label", flat=True)
    ) == ["api"]
