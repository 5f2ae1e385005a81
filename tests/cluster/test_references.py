"""Reference variables against the real API server: the consumer's Deployment gets the
variable from the project's Secret, and exactly one new revision per change."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from networking import references
from networking.cluster.desired import REFERENCES_ANNOTATION, SHARED_SECRETS
from networking.crypto import SecretText
from networking.models import ReferenceVariable, Service
from tests.cluster.workloads import (
    deploy,
    deployment,
    secret_data,
    settle,
    template_annotations,
)
from tests.cluster_fixtures import Cluster
from tests.conftest import World
from tests.waiting import wait_until

PASSWORD = "p@ss:w/rd?#"


def revisions(cluster: Cluster, namespace: str, name: str) -> dict[str, str | None]:
    """Revision -> the references annotation of that revision's pod template."""
    return template_annotations(cluster, namespace, name, REFERENCES_ANNOTATION)


def env(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    container = deployment(cluster, namespace, name)["spec"]["template"]["spec"]["containers"][0]
    return {entry["name"]: entry for entry in container.get("env", [])}


def latest_revision(cluster: Cluster, namespace: str, name: str, expected: int) -> int:
    """The Deployment's newest revision, once the controller has reached ``expected`` (it
    numbers each template change; a template seen before gets its old ReplicaSet back, under
    the new number)."""
    deadline = time.monotonic() + 60
    while max(map(int, revisions(cluster, namespace, name)), default=0) < expected:
        assert time.monotonic() < deadline, revisions(cluster, namespace, name)
        time.sleep(0.2)
    # No further one comes for this spec: the controller has acted on the Deployment's latest
    # generation, so every ReplicaSet that spec makes exists.
    wait_until(lambda: observed(cluster, namespace, name), f"{name}'s controller to catch up")
    return max(map(int, revisions(cluster, namespace, name)))


def observed(cluster: Cluster, namespace: str, name: str) -> bool:
    found = deployment(cluster, namespace, name)
    return bool(found["status"].get("observedGeneration", 0) >= found["metadata"]["generation"])


def test_the_consumer_gets_the_connection_string_and_one_revision_per_change(
    cluster: Cluster, world: World
) -> None:
    Service.objects.filter(pk=world.postgres.pk).update(database_password=SecretText.seal(PASSWORD))
    world.postgres.refresh_from_db()
    world.secret.services.clear()  # only the reference concerns api here
    namespace = world.project.namespace
    settle(world.project)
    deploy(cluster, namespace, "api")
    settle(world.project)
    assert latest_revision(cluster, namespace, "api", 1) == 1

    (given,) = references.add(world.postgres, [world.api], "", actor=None)
    settle(world.project)
    # The variable comes from the Secret, which holds the percent-encoded connection string.
    assert env(cluster, namespace, "api")["DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": SHARED_SECRETS, "key": "ref.api.DATABASE_URL"}
    }
    value = secret_data(cluster, namespace)["ref.api.DATABASE_URL"]
    assert quote(PASSWORD, safe="") in value
    assert value.endswith("@postgres.internal:5432/postgres")
    # The deploy system's own variable is untouched.
    assert env(cluster, namespace, "api")["PORT"] == {"name": "PORT", "value": "8080"}
    assert latest_revision(cluster, namespace, "api", 2) == 2  # one rollout

    # Nothing changed: nothing rolls.
    settle(world.project)
    assert latest_revision(cluster, namespace, "api", 2) == 2

    # The database renamed: its address changes, api rolls once more.
    world.postgres.display_name = "Main DB"
    world.postgres.full_clean()
    world.postgres.save_changes(actor=None)
    settle(world.project)
    assert latest_revision(cluster, namespace, "api", 3) == 3
    assert "@main-db.internal:5432/" in secret_data(cluster, namespace)["ref.api.DATABASE_URL"]

    # Removed: the variable goes, and api rolls once without it.
    given = ReferenceVariable.objects.get(pk=given.pk)
    assert references.remove(given, actor=None)
    settle(world.project)
    assert "DATABASE_URL" not in env(cluster, namespace, "api")
    assert latest_revision(cluster, namespace, "api", 4) == 4
    assert "ref.api.DATABASE_URL" not in secret_data(cluster, namespace)
