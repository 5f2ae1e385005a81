"""A change's pass starts from what this worker's last pass of the project stored: it reads the
services that changed since, patches the desired state with them, and digests and compares
only those. What it applies and records must be exactly what a worker that remembers nothing
would: each step here checks the record against a desired state built whole, and the cluster
against the rows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import F

from networking import passes as reconciler
from networking.cluster import lease, liveness
from networking.cluster import reconcile as loop
from networking.cluster.desired import INGRESS_POLICY, build_desired_state
from networking.cluster.reconcile import digest_key
from networking.models import AppliedRecord, ApplyAttempt, Project, Service
from tests.cluster_fixtures import Cluster
from tests.conftest import World, make_secret
from tests.waiting import wait_until


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> list[lease.Claim]:
    """Every claim the passes make, as they got it."""
    seen: list[lease.Claim] = []
    real = lease.claim

    def spy(*args: Any, **kwargs: Any) -> lease.Claim | None:
        claimed = real(*args, **kwargs)
        if claimed is not None:
            seen.append(claimed)
        return claimed

    monkeypatch.setattr(lease, "claim", spy)
    return seen


def read_again(claimed: lease.Claim) -> list[str] | None:
    """The names of the services the claim read because they changed (None: it read all)."""
    return None if claimed.changed is None else sorted(row.name for row in claimed.changed)


def recorded_as_built_whole(project: Project) -> None:
    """The record holds what a pass that builds the desired state from every row records."""
    whole = reconciler.desired_state_for(Project.objects.get(pk=project.pk))
    stored = AppliedRecord.objects.get(project_id=project.pk).digests
    assert stored == whole.digests(digest_key())


def ports(cluster: Cluster, project: Project) -> dict[str, list[int]]:
    return {
        name: [port.port for port in service.spec.ports]
        for name, service in cluster.services(project.namespace).items()
    }


def add(project: Project, display_name: str, kind: str, ports: list[int]) -> Service:
    service = Service(project=project, display_name=display_name, kind=kind, ports=ports)
    service.full_clean(exclude=["name"])
    service.create(actor=None)
    return service


def rename(service: Service, display_name: str, **kwargs: Any) -> None:
    """As the edit page does: the new name derived from the display name, then saved."""
    service.display_name = display_name
    service.full_clean(exclude=["name"])
    service.save_changes(actor=None, **kwargs)


@pytest.fixture
def whole_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many desired states the passes built from every service (not patched)."""
    built: list[int] = []

    def spy(**kwargs: Any) -> Any:
        built.append(1)
        return build_desired_state(**kwargs)

    monkeypatch.setattr("networking.passes.build_desired_state", spy)
    return built


def test_each_change_reads_what_changed_and_records_what_a_whole_build_would(
    cluster: Cluster,
    world: World,
    watched: liveness.Signal,
    claims: list[lease.Claim],
    whole_builds: list[int],
) -> None:
    project = world.project
    workers = [add(project, f"w{index:02d}", Service.Kind.PRIVATE, [3000]) for index in range(12)]
    reconciler.reconcile(project.pk)
    assert read_again(claims[-1]) is None  # nothing known yet: every row
    recorded_as_built_whole(project)

    # New ports: that row alone, the desired state patched, and one Service written.
    workers[3].ports = [4000]
    workers[3].save_changes(actor=None)
    cluster.http.reset()
    builds = len(whole_builds)
    reconciler.reconcile(project.pk)
    assert len(whole_builds) == builds
    assert read_again(claims[-1]) == ["w03"]
    assert [call.method for call in cluster.http.calls] == ["PATCH"]
    assert ports(cluster, project)["w03"] == [4000]
    recorded_as_built_whole(project)

    # A rename: the old Service goes, the new one comes.
    rename(workers[4], "Queue")
    reconciler.reconcile(project.pk)
    assert read_again(claims[-1]) == ["queue"]
    assert "queue" in ports(cluster, project) and "w04" not in ports(cluster, project)
    recorded_as_built_whole(project)

    # A new public web service: its Service, and the ingress policy now names it.
    add(project, "Site", Service.Kind.WEB, [8080])
    reconciler.reconcile(project.pk)
    assert read_again(claims[-1]) == ["site"]
    # Its address, from the write (nothing read), is on its row.
    assigned = cluster.services(project.namespace)["site"].spec.cluster_ip
    assert Service.objects.get(project=project, name="site").cluster_ip == assigned
    ingress = cluster.policies(project.namespace)[INGRESS_POLICY]
    assert "site" in ingress.spec.pod_selector.match_expressions[0].values
    recorded_as_built_whole(project)

    # A rename that keeps the old name resolving (an alias: not only services changed).
    rename(workers[5], "Mailer", keep_old_name_for=timedelta(days=1))
    reconciler.reconcile(project.pk)
    assert {"mailer", "w05"} <= set(ports(cluster, project))
    recorded_as_built_whole(project)

    # A deletion: the project notes it (``services_removed_generation``), so all are read.
    workers[6].remove(actor=None)
    reconciler.reconcile(project.pk)
    assert read_again(claims[-1]) is None
    assert "w06" not in ports(cluster, project)
    recorded_as_built_whole(project)

    # A shared secret given to one more service.
    world.secret.change_receivers([world.api, workers[7]], None, actor=None)
    reconciler.reconcile(project.pk)
    recorded_as_built_whole(project)

    # Nothing changed: no row read, no call.
    cluster.http.reset()
    assert reconciler.reconcile(project.pk).changes == []
    assert read_again(claims[-1]) == []
    assert cluster.http.calls == []

    # And a pass that reads the whole namespace finds nothing to write.
    AppliedRecord.distrust([project.pk])
    cluster.http.reset()
    assert reconciler.reconcile(project.pk).changes == []
    assert cluster.http.writes == []


@pytest.mark.parametrize("inline", [lease.INLINE_SERVICES, 0], ids=["small", "large"])
def test_a_worker_back_after_another_passed_reads_the_digests_it_changes_not_its_own(
    cluster: Cluster,
    world: World,
    watched: liveness.Signal,
    claims: list[lease.Claim],
    inline: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker A passes; worker B (knowing nothing) changes api's ports and passes; A, back,
    patches its services with the rows changed since, but must compare with the record's
    digests, not its own (where api still has its old ports), or putting the ports back would
    look like no change to it. A small project's digests come with the claim; a large one's
    are read, only those written since."""
    monkeypatch.setattr(lease, "INLINE_SERVICES", inline)
    project, api = world.project, world.api
    reconciler.reconcile(project.pk)
    worker_a = dict(loop._memory)

    loop.forget()  # worker B
    api.ports = [9000]
    api.save_changes(actor=None)
    reconciler.reconcile(project.pk)
    assert ports(cluster, project)["api"] == [9000]

    loop._memory.clear()
    loop._memory.update(worker_a)  # worker A again
    api.ports = [8080]
    api.save_changes(actor=None)
    cluster.http.reset()
    reconciler.reconcile(project.pk)
    assert read_again(claims[-1]) == ["api"]
    record = claims[-1].record
    assert record is not None
    assert (record.known() is None) == (inline == 0)
    assert [call.method for call in cluster.http.calls] == ["PATCH"]
    assert ports(cluster, project)["api"] == [8080]
    recorded_as_built_whole(project)


def test_once_another_worker_recorded_a_cluster_ip_a_worker_reads_every_row_again(
    cluster: Cluster, world: World, claims: list[lease.Claim]
) -> None:
    """The ClusterIP is the part of a service's row only passes write, without moving its
    ``changed_generation``: a worker works from the rows as they are, not as it last read
    them. (No watcher here: every pass reads the cluster, and puts back what it finds gone.)"""
    project = world.project
    reconciler.reconcile(project.pk)
    worker_a = dict(loop._memory)
    before = Service.objects.get(pk=world.postgres.pk).cluster_ip

    loop.forget()  # worker B puts back a Service deleted by hand: a new address
    cluster.core.delete_namespaced_service("postgres", project.namespace)
    reconciler.reconcile(project.pk)
    now = Service.objects.get(pk=world.postgres.pk).cluster_ip
    assert now is not None and now != before

    loop._memory.clear()
    loop._memory.update(worker_a)
    world.api.ports = [8081]
    world.api.save_changes(actor=None)
    reconciler.reconcile(project.pk)
    assert read_again(claims[-1]) == ["api"]
    assert {row.name: row.cluster_ip for row in claims[-1].services}["postgres"] == now
    assert ports(cluster, project)["api"] == [8081]
    recorded_as_built_whole(project)


@pytest.fixture
def concurrent(transactional_db: Any) -> Iterator[list[threading.Thread]]:
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(30)


def test_a_change_committed_while_the_claim_waits_for_the_row_gets_its_own_pass(
    cluster: Cluster,
    world: World,
    watched: liveness.Signal,
    concurrent: list[threading.Thread],
) -> None:
    """The claim's UPDATE waits for a transaction holding the project's row (a change being
    saved). Once it commits, the row the claim returns has the new generation, but what the
    statement read of the services is from before: the pass applies what it read, calls that
    its generation, and the next pass applies the change."""
    project = world.project
    reconciler.reconcile(project.pk)
    changing, commit = threading.Event(), threading.Event()

    def save_new_ports() -> None:
        try:
            with transaction.atomic():
                api = Service.objects.get(pk=world.api.pk)
                api.ports = [9090]
                api.save_changes(actor=None)  # holds the project's row until the commit
                changing.set()
                assert commit.wait(30)
        finally:
            connection.close()

    def reconcile() -> None:
        try:
            reconciler.reconcile(project.pk)
        finally:
            connection.close()

    concurrent.append(threading.Thread(target=save_new_ports))
    concurrent[-1].start()
    assert changing.wait(30)
    concurrent.append(threading.Thread(target=reconcile))
    concurrent[-1].start()

    def claim_waits_for_the_row() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE %%reconcile_lease_until%%'"
            )
            (waiting,) = cursor.fetchone()
        return bool(waiting)

    wait_until(claim_waits_for_the_row, "the claim to wait for the project's row")
    commit.set()
    for thread in concurrent:
        thread.join(30)
    stored = Project.objects.get(pk=project.pk)
    assert stored.applied_generation == stored.generation
    assert ports(cluster, project)["api"] == [9090]
    recorded_as_built_whole(project)


def test_a_worker_that_knows_an_older_version_than_the_record_remembers_compares_everything(
    cluster: Cluster,
    world: World,
    watched: liveness.Signal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record remembers its last few writes: one from before those may have changed any
    object, so a worker that knows only an older version compares them all."""
    monkeypatch.setattr(lease, "WRITTEN_KEPT", 3)
    project = world.project
    worker = add(project, "Worker", Service.Kind.PRIVATE, [3000])
    reconciler.reconcile(project.pk)
    worker_a = dict(loop._memory)

    loop.forget()  # worker B: the worker's ports, then four more writes of api's
    worker.ports = [4001]
    worker.save_changes(actor=None)
    reconciler.reconcile(project.pk)
    for port in (8081, 8082, 8083, 8084):
        world.api.ports = [port]
        world.api.save_changes(actor=None)
        reconciler.reconcile(project.pk)
    assert ports(cluster, project)["worker"] == [4001]

    loop._memory.clear()
    loop._memory.update(worker_a)  # A knew the worker on 3000, as it is to be again
    worker.ports = [3000]
    worker.save_changes(actor=None)
    reconciler.reconcile(project.pk)
    assert ports(cluster, project)["worker"] == [3000]
    recorded_as_built_whole(project)


def test_a_patched_workload_lists_its_secrets_as_a_whole_build_does(
    cluster: Cluster, world: World, watched: liveness.Signal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The builder orders a workload's secrets by name; the rows may come in another order (a
    database's collation sorts ``DB_URL`` and ``DBX`` either way)."""
    make_secret(world.project, "DBX", [world.api])
    make_secret(world.project, "DB_URL", [world.api])
    real = reconciler._shared_secrets
    monkeypatch.setattr(reconciler, "_shared_secrets", lambda project: real(project)[::-1])
    reconciler.reconcile(world.project.pk)
    world.api.ports = [8081]
    world.api.save_changes(actor=None)
    reconciler.reconcile(world.project.pk)
    recorded_as_built_whole(world.project)


def test_a_record_that_moves_on_under_a_pass_is_read_again_and_the_pass_still_in_the_history(
    cluster: Cluster, world: World, watched: liveness.Signal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is written meanwhile (the watcher distrusts it; a pass that outlived its
    lease): this pass stores no record, the next reads everything, and what this one applied
    is in the project's history."""
    project = world.project
    reconciler.reconcile(project.pk)
    real = loop._record_services

    def distrusted_first(*args: Any) -> Any:
        AppliedRecord.objects.filter(project_id=project.pk).update(version=F("version") + 1)
        return real(*args)

    monkeypatch.setattr(loop, "_record_services", distrusted_first)
    add(project, "Cache", Service.Kind.REDIS, [6379])
    assert reconciler.reconcile(project.pk).changes == ["created Service cache"]
    generation = Project.objects.get(pk=project.pk).generation
    assert ApplyAttempt.objects.filter(project=project, generation=generation).exists()
    monkeypatch.setattr(loop, "_record_services", real)
    assert AppliedRecord.objects.get(project_id=project.pk).digests is None
    cluster.http.reset()
    reconciler.reconcile(project.pk)
    assert cluster.http.reads  # the namespace read again
    recorded_as_built_whole(project)


def test_a_service_deleted_while_a_pass_reads_the_addresses_is_still_removed(
    cluster: Cluster,
    world: World,
    watched: liveness.Signal,
    claims: list[lease.Claim],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another worker recorded a ClusterIP, so the claim reads the rows' addresses again, in a
    statement of its own; a service deleted in between is the next pass's to remove."""
    project = world.project
    victim = add(project, "Victim", Service.Kind.PRIVATE, [3000])
    reconciler.reconcile(project.pk)
    worker_a = dict(loop._memory)
    loop.forget()  # worker B records a new service's address
    add(project, "Cache", Service.Kind.REDIS, [6379])
    reconciler.reconcile(project.pk)
    loop._memory.clear()
    loop._memory.update(worker_a)

    real = lease._all_service_rows
    deleted: list[bool] = []

    def delete_first(project_id: int) -> Any:
        if not deleted:
            deleted.append(victim.remove(actor=None))
        return real(project_id)

    monkeypatch.setattr(lease, "_all_service_rows", delete_first)
    world.api.ports = [8081]
    world.api.save_changes(actor=None)
    reconciler.reconcile(project.pk)
    assert deleted == [True]
    assert "victim" not in ports(cluster, project)
    stored = Project.objects.get(pk=project.pk)
    assert stored.applied_generation == stored.generation
    recorded_as_built_whole(project)


def service_rows_read() -> int:
    """Rows of the services' table, and entries of its indexes, read so far in this
    transaction (PostgreSQL's own count, per transaction)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_stat_get_xact_tuples_returned(%(table)s::regclass) + "
            "coalesce(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0) "
            "FROM pg_index WHERE indrelid = %(table)s::regclass",
            {"table": Service._meta.db_table},
        )
        (read,) = cursor.fetchone()
    return int(read)


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_change_to_one_service_of_many_reads_that_row_not_every_row(
    cluster: Cluster, world: World, watched: liveness.Signal, claims: list[lease.Claim]
) -> None:
    """The pass reads the changed row and a few index entries, not the other services, not
    even to count them: a deletion is told by the project's ``services_removed_generation``,
    however the row was deleted."""
    project = Project.objects.create(organization=world.acme, name="Large")
    Service.objects.bulk_create(
        Service(project=project, name=f"s{index}", display_name=f"s{index}", ports=[3000])
        for index in range(300)
    )
    reconciler.reconcile(project.pk)  # the first pass reads them all, and remembers
    api = Service.objects.get(project=project, name="s0")
    api.ports = [8081]
    api.save_changes(actor=None)
    before = service_rows_read()
    assert reconciler.reconcile(project.pk).changes == ["updated Service s0"]
    read = service_rows_read() - before
    assert read < 20, f"{read} rows and index entries read for one service's change"
    assert read_again(claims[-1]) == ["s0"]

    # Deleted by a query of its own, not by the dashboard: still seen, every row read, and
    # the Service pruned.
    Service.objects.filter(project=project, name="s7").delete()
    api.ports = [8082]
    api.save_changes(actor=None)
    outcome = reconciler.reconcile(project.pk)
    assert read_again(claims[-1]) is None
    assert sorted(outcome.changes) == ["deleted Service s7", "updated Service s0"]
    assert "s7" not in ports(cluster, project)
    recorded_as_built_whole(project)
