"""A pass's reads and writes around its apply: what the dashboard shows after it, and how few
statements it takes (``networking.cluster.statements``: one statement each on PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from django.db import connection
from django.test.utils import CaptureQueriesContext

from networking import passes as reconciler
from networking.cluster import lease
from networking.cluster import reconcile as loop
from networking.cluster.backends import ApplyResult
from networking.models import AppliedRecord, ApplyAttempt, Project, Service
from tests.conftest import World


def change_ports(service: Service, port: int) -> None:
    """As the service's edit page saves it."""
    service.refresh_from_db()
    service.ports = [port]
    service.save_changes(actor=None)


def test_a_changes_pass_writes_in_four_statements(world: World, manifests: Path) -> None:
    reconciler.reconcile(world.project.pk)
    change_ports(world.api, 8081)
    before = Project.objects.get(pk=world.project.pk)
    record_before = AppliedRecord.objects.get(project=world.project).version
    revision_before = Service.objects.get(pk=world.api.pk).revision

    with CaptureQueriesContext(connection) as captured:
        outcome = reconciler.reconcile(world.project.pk)

    assert outcome.status == "applied"
    statements = [query["sql"].strip() for query in captured.captured_queries]
    # (What a pass reads depends on the project: its secrets, its workloads.)
    writes = [sql for sql in statements if not sql.startswith("SELECT")]
    if connection.vendor == "postgresql":
        # The claim (the lease, and the pass's first reads), "in sync" with the services'
        # rows, the record with the history, and the release, which also says whether a
        # change came meanwhile. No transaction of several round trips.
        assert len(writes) == 4, "\n".join(writes)
        assert writes[0].startswith("UPDATE") and "RETURNING" in writes[0]
        assert writes[1].startswith("WITH applied AS")
        assert writes[2].startswith("WITH stored AS")
        assert "reconcile_lease_token" in writes[3] and "RETURNING" in writes[3]
        assert not any(sql.startswith("SELECT 1 AS") for sql in statements)
    # What the dashboard shows after it, whichever way it was written.
    project = Project.objects.get(pk=world.project.pk)
    assert project.applied_generation == project.generation == before.generation
    assert project.sync_state == Project.SyncState.IN_SYNC
    assert project.revision > before.revision
    api = Service.objects.get(pk=world.api.pk)
    assert api.revision > revision_before  # its row is drawn again, now "applied"
    untouched = Service.objects.get(pk=world.postgres.pk)
    assert untouched.revision <= before.revision
    attempt = ApplyAttempt.objects.filter(project=world.project).order_by("-id").first()
    assert attempt is not None
    assert (attempt.generation, attempt.result) == (project.generation, "applied")
    assert attempt.changes == ["updated Service api"]
    assert AppliedRecord.objects.get(project=world.project).version == record_before + 1
    assert project.reconcile_lease_token == ""


def test_the_history_keeps_the_newest_attempts(world: World, manifests: Path) -> None:
    keep = ApplyAttempt.KEEP_PER_PROJECT
    reconciler.reconcile(world.project.pk)
    for index in range(keep + 2):
        change_ports(world.api, 9000 + index)
        assert reconciler.reconcile(world.project.pk).status == "applied"
    generations = list(
        ApplyAttempt.objects.filter(project=world.project)
        .order_by("generation")
        .values_list("generation", flat=True)
    )
    newest = Project.objects.get(pk=world.project.pk).generation
    assert generations == list(range(newest - keep + 1, newest + 1))
    # Another project's history is its own.
    reconciler.reconcile(world.other_project.pk)
    assert ApplyAttempt.objects.filter(project=world.other_project).count() == 1
    assert ApplyAttempt.objects.filter(project=world.project).count() == keep


def test_a_pass_of_an_older_generation_never_moves_in_sync_back(
    world: World, manifests: Path
) -> None:
    reconciler.reconcile(world.project.pk)
    change_ports(world.api, 8082)
    reconciler.reconcile(world.project.pk)
    newest = Project.objects.get(pk=world.project.pk)
    stamps = dict(world.project.services.values_list("pk", "revision"))
    # Slow passes that claimed the project before the newest one say "in sync" only now: one
    # of an older generation, one of the same (which would restamp the changed api's row).
    for generation in (newest.generation - 1, newest.generation):
        slow = Project.objects.get(pk=world.project.pk)
        slow.applied_generation = generation - 1
        loop._write_applied(slow, generation, ApplyResult(), failure_ended=False)
    after = Project.objects.get(pk=world.project.pk)
    assert after.applied_generation == newest.generation
    assert after.applied_at == newest.applied_at
    # No service's row is restamped as if that older generation had just been applied.
    assert dict(world.project.services.values_list("pk", "revision")) == stamps
    assert after.verified_at is not None and newest.verified_at is not None
    assert after.verified_at > newest.verified_at  # it did look: the pages are told
    assert after.revision > newest.revision


def test_releasing_the_lease_says_whether_a_change_came_meanwhile(
    world: World, manifests: Path
) -> None:
    claimed = lease.claim(world.project.pk)
    assert claimed is not None
    change_ports(world.api, 8083)  # committed while the lease is held
    generation = lease.release(world.project.pk, claimed.token)
    assert generation == Project.objects.get(pk=world.project.pk).generation
    assert generation > claimed.project.generation
    # No longer ours: nothing to say, and nobody's lease is touched.
    assert lease.release(world.project.pk, claimed.token) is None
