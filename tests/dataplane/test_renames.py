"""A renamed service keeps answering on its old hostname while the old name lives, and stops
once it ends: shown from a pod of the project."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from networking.models import ServiceAlias
from tests.conftest import World
from tests.dataplane.conftest import Call, DataPlane, in_sync
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_old_hostname_answers_while_it_lives_and_stops_after_it_ends(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    world: World,
    api_client: Call,
    acme_token: str,
) -> None:
    project = storefront["project"]
    namespace = project.namespace
    renamed = api_client(
        acme_token,
        "PATCH",
        f"/projects/{project.uid}/services/{world.api.pk}",
        {"name": "gateway", "keep_old_name_for_seconds": 3600},
    )
    assert renamed.status_code == 200, renamed.content
    assert renamed.json()["hostname"] == "gateway.internal"
    wait_until(lambda: in_sync(project), "the rename applied", 60)
    # The platform's deploy system relabels the workload with the new name.
    dataplane.apps.delete_namespaced_deployment("api", namespace)
    dataplane.deploy(namespace, "gateway", ports=[8080])

    for hostname in ("gateway.internal", "api.internal"):
        answer = dataplane.until(namespace, "client", "get", f"http://{hostname}:8080/")
        assert '"service":"gateway"' in answer.data["body"], answer.output

    alias = ServiceAlias.objects.get(project=project, name="api")
    ended = world.client_for("owner").post(
        reverse("service-alias-end", args=[project.uid, world.api.pk, alias.pk])
    )
    assert ended.status_code == 302, ended.content
    assert not ServiceAlias.objects.filter(pk=alias.pk).exists()
    wait_until(lambda: in_sync(project), "the end applied", 60)
    gone = dataplane.until(namespace, "client", "resolve", "api.internal", succeeds=False)
    assert gone.data["not_found"], gone.output
    # The new name answers on (asked until it does: the enforcer re-syncs every pod's rules on
    # the deletions around it, and the test cluster's kube-router can refuse for a moment then).
    answer = dataplane.until(namespace, "client", "get", "http://gateway.internal:8080/")
    assert '"service":"gateway"' in answer.data["body"], answer.output
