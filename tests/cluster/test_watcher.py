"""The watcher against the real API server: drift noticed from watches, standing still free."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.db.models import F
from django.utils import timezone
from kubernetes.client.exceptions import ApiException

from networking import mtls
from networking import passes as reconciler
from networking.cluster import kube, lease, liveness
from networking.cluster.desired import SHARED_SECRETS, TLS_SECRET, namespace_object
from networking.cluster.informer import (
    TLS_SECRETS,
    WRITTEN_BY,
    ClusterCache,
    Informer,
    _Gone,
    watched_kinds,
)
from networking.cluster.watcher import Watcher
from networking.models import (
    AppliedRecord,
    Organization,
    Project,
    Service,
    WatcherHeartbeat,
)
from networking.tasks import resync_all_projects
from tests import deploy_system
from tests.cluster.workloads import secret_data
from tests.cluster_fixtures import Cluster
from tests.conftest import World, closed_port, make_service
from tests.waiting import wait_until
from tests.worker import WatcherProcess, WorkerProcess


def settled(watcher: Watcher, cluster: Cluster) -> None:
    """The watcher has every event of what was just applied (on a busy machine they may come
    in well after the pass) and holds nothing to look at again."""
    wait_until(lambda: cache_matches_server(watcher, cluster), "the cache to hold our writes")
    # A round begun after that has taken every event it was told of, and finished its looks.
    rounds = watcher.rounds
    wait_until(lambda: watcher.rounds > rounds + 1, "a round of the watcher's loop")
    wait_until(
        lambda: not watcher.dirty and not watcher.deferred and not watcher.suspected,
        "the watcher to have looked at everything it was told of",
    )


def in_sync(project: Project) -> bool:
    return Project.objects.get(pk=project.pk).in_sync


def change_a_port(cluster: Cluster, world: World, port: int) -> list[tuple[str, str]]:
    """Save a new port for ``api`` (its pass runs on commit: eager tasks); the API calls the
    pass made for the project, as (method, resource).

    Only calls on the project's namespace count: the watcher's thread may meanwhile look at
    namespaces left by earlier tests (orphans it deletes, eagerly, on the shared client).
    """
    cluster.http.reset()
    world.api.ports = [port]
    world.api.save_changes(actor=None)
    assert in_sync(world.project)
    namespace = f"/namespaces/{world.project.namespace}"
    return [
        (call.method, call.path.rsplit("/", 2)[-2])
        for call in cluster.http.calls
        if call.path.endswith(namespace) or f"{namespace}/" in call.path
    ]


def test_a_service_deleted_by_hand_comes_back_from_the_watch(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    reconciler.reconcile(world.project.pk)
    namespace = world.project.namespace
    cluster.core.delete_namespaced_service("api", namespace, _preload_content=False)
    # No resync runs here: only the watch can bring it back.
    wait_until(lambda: "api" in cluster.services(namespace), "the Service to be restored")


def test_a_policy_edited_by_hand_is_put_back(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    reconciler.reconcile(world.project.pk)
    namespace = world.project.namespace
    cluster.networking.patch_namespaced_network_policy(
        "project-isolation",
        namespace,
        {"spec": {"ingress": [{}]}},  # admit everyone
    )

    def restored() -> bool:
        policy = cluster.policies(namespace)["project-isolation"]
        return bool(policy.spec.ingress[0]._from)

    wait_until(restored, "the isolation policy to be restored")


def test_drift_is_kept_on_the_project_until_a_full_pass_repairs_it(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    reconciler.reconcile(world.project.pk)
    namespace = world.project.namespace
    # A pass of another worker is under way: the repair the watcher asks for waits on it, so
    # what the watcher saw stays visible meanwhile.
    held = lease.claim(world.project.pk)
    assert held is not None
    cluster.networking.patch_namespaced_network_policy(
        "project-isolation", namespace, {"spec": {"ingress": [{}]}}
    )
    wait_until(lambda: Project.objects.get(pk=world.project.pk).drift, "the drift to be kept")
    project = Project.objects.get(pk=world.project.pk)
    assert project.drift_objects == {("NetworkPolicy", "project-isolation")}
    assert project.drift == [
        {
            "kind": "NetworkPolicy",
            "name": "project-isolation",
            "text": "NetworkPolicy project-isolation differs",
        }
    ]
    lease.release(world.project.pk, held.token)

    # This pass, or the one the watcher asked for (whichever claims the project first; the
    # other finds it busy), reads the whole namespace, repairs it and clears the drift.
    reconciler.reconcile(world.project.pk)
    wait_until(
        lambda: Project.objects.get(pk=world.project.pk).drift == [], "the drift to be cleared"
    )
    assert cluster.policies(namespace)["project-isolation"].spec.ingress[0]._from


def test_a_clusterip_assigned_meanwhile_is_recorded(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    reconciler.reconcile(world.project.pk)
    Service.objects.filter(pk=world.api.pk).update(cluster_ip=None)  # as if never read back
    cluster.core.patch_namespaced_service(
        "api",
        world.project.namespace,
        {"metadata": {"annotations": {"touched": "1"}}},
        _preload_content=False,
    )
    wait_until(
        lambda: Service.objects.get(pk=world.api.pk).cluster_ip is not None,
        "the ClusterIP to be recorded",
    )


def test_a_hand_edit_of_one_service_is_judged_by_looking_at_that_service_alone(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    for index in range(20):
        make_service(world.project, f"extra {index}", Service.Kind.PRIVATE, [3000])
    reconciler.reconcile(world.project.pk)
    namespace = world.project.namespace
    settled(watcher, cluster)
    watcher.looks.clear()
    cluster.core.patch_namespaced_service(
        "api", namespace, {"spec": {"selector": {"app": "someone-elses"}}}
    )

    def restored() -> bool:
        return dict(cluster.services(namespace)["api"].spec.selector) == {
            django_settings.WORKLOAD_LABEL: "api"
        }

    wait_until(restored, "the Service's selector to be restored")
    looks = [scope for looked_in, scope in watcher.looks if looked_in == namespace]
    # The edit, the check a second later, our repair: each a look at api alone, not at the
    # other 23 services of the project.
    assert looks
    assert set(looks) == {frozenset({"api"})}


def cache_matches_server(watcher: Watcher, cluster: Cluster) -> bool:
    """Every watched object the API server lists now, at the same version in the cache."""
    for watched in watched_kinds(django_settings.WORKLOAD_LABEL):
        only = {"field_selector": watched.field_selector} if watched.field_selector else {}
        listed = kube.list_method(cluster.core.api_client, watched.api, watched.method)(
            label_selector=watched.selector, _preload_content=False, **only
        )
        informer = watcher.cache.informers[watched.name]
        for item in json.loads(listed.data)["items"]:
            metadata = item["metadata"]
            held = informer.get(metadata.get("namespace", ""), metadata["name"])
            if held is None or held["metadata"]["resourceVersion"] != metadata["resourceVersion"]:
                return False
    return True


def test_our_own_writes_do_not_queue_another_pass(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    reconciler.reconcile(world.project.pk)
    checks = watcher.checks
    wait_until(lambda: watcher.checks > checks, "the watcher to look at our writes")
    # Every event of our writes has arrived: the cache holds what the API server holds now.
    wait_until(lambda: cache_matches_server(watcher, cluster), "the cache to hold our writes")
    assert watcher.check(world.project.namespace) == []
    assert Project.objects.get(pk=world.project.pk).reconcile_queued_at is None


def test_an_event_of_our_own_write_costs_no_look(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    """A change's pass writes one Service; its event is ours alone (no other field manager), so
    the watcher does not look at the project again. Someone else's write of one label is
    looked at (and, being no difference, repairs nothing)."""
    reconciler.reconcile(world.project.pk)
    namespace = world.project.namespace
    settled(watcher, cluster)

    def looks() -> int:
        return sum(1 for looked_in, _ in watcher.looks if looked_in == namespace)

    watcher.looks.clear()
    skipped = watcher.skipped
    world.api.ports = [8081]
    world.api.save_changes(actor=None)
    wait_until(lambda: watcher.skipped > skipped, "the event of our write")
    settled(watcher, cluster)
    assert looks() == 0

    cluster.core.patch_namespaced_service(
        "api",
        world.project.namespace,
        {"metadata": {"annotations": {"example.com/owner": "someone"}}},
        field_manager="someone-else",
        _preload_content=False,
    )
    wait_until(lambda: looks() > 0, "a look at someone else's write")
    settled(watcher, cluster)
    assert Project.objects.get(pk=world.project.pk).drift == []


def test_while_the_watcher_watches_a_change_is_written_without_reading(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    reconciler.reconcile(world.project.pk)
    settled(watcher, cluster)
    wait_until(liveness.watching, "the watcher to say it watches")
    assert change_a_port(cluster, world, 8081) == [("PATCH", "services")]
    assert cluster.services(world.project.namespace)["api"].spec.ports[0].port == 8081


def test_a_workload_deployed_after_the_pass_gets_its_secret_from_the_watch(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    """The pass that gave ``api`` the secret trusted its record; the watch sees the new
    Deployment without the secret's variables, distrusts the record, and a full pass adds them."""
    reconciler.reconcile(world.project.pk)
    wait_until(liveness.watching, "the watcher to say it watches")
    namespace = world.project.namespace
    cluster.apps.create_namespaced_deployment(
        namespace,
        deploy_system.deployment(namespace, "api"),  # type: ignore[arg-type]
        field_manager=deploy_system.FIELD_MANAGER,
        _preload_content=False,
    )

    def received() -> bool:
        response: Any = cluster.apps.read_namespaced_deployment(
            "api", namespace, _preload_content=False
        )
        template = json.loads(response.data)["spec"]["template"]
        env = {entry["name"] for entry in template["spec"]["containers"][0].get("env") or []}
        return "INTERNAL_API_SECRET" in env

    wait_until(received, "the new Deployment to receive the secret")


def test_a_secret_edited_or_deleted_by_hand_is_put_back_from_the_watch(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    """The Secret's watch carries metadata only: a hand edit shows as another field manager
    owning its data, and a full pass puts it back, within seconds, not at the next resync."""
    reconciler.reconcile(world.project.pk)
    namespace = world.project.namespace
    secrets = watcher.cache.informers["Secret"]
    wait_until(lambda: secrets.get(namespace, SHARED_SECRETS) is not None, "the Secret's event")
    cached = secrets.get(namespace, SHARED_SECRETS)
    assert cached is not None and "data" not in cached  # no value ever reaches the watcher
    assert cached[WRITTEN_BY] == []
    applied = secret_data(cluster, namespace)
    key = sorted(applied)[0]

    cluster.core.patch_namespaced_secret(
        SHARED_SECRETS,
        namespace,
        {"data": {key: base64.b64encode(b"edited by hand").decode()}},
        field_manager="kubectl-edit",
        _preload_content=False,
    )
    wait_until(lambda: secret_data(cluster, namespace) == applied, "the value put back")
    # Put back, it is ours alone again: the watcher sees nothing more to do.
    wait_until(
        lambda: (
            (current := secrets.get(namespace, SHARED_SECRETS)) is not None
            and current[WRITTEN_BY] == []
        ),
        "the Secret's data to be ours alone",
    )
    settled(watcher, cluster)
    assert watcher.check(namespace) == []

    cluster.core.delete_namespaced_secret(SHARED_SECRETS, namespace, _preload_content=False)

    def restored() -> bool:
        try:
            return secret_data(cluster, namespace) == applied
        except ApiException as error:
            if error.status != 404:
                raise
            return False

    wait_until(restored, "the Secret restored")


def test_mutual_tls_files_deleted_by_hand_are_put_back_from_their_own_watch(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    """Mutual TLS's Secret has a watch of its own (a watch names one Secret): deleted by hand,
    it is put back within seconds, not at the next verify hours later, before a restarted pod
    waits for files that are gone."""
    mtls.enable(world.project, actor=None)
    reconciler.reconcile(world.project.pk)
    namespace = world.project.namespace
    files = watcher.cache.informers[TLS_SECRETS]
    wait_until(lambda: files.get(namespace, TLS_SECRET) is not None, "the TLS Secret's event")
    cached = files.get(namespace, TLS_SECRET)
    assert cached is not None and "data" not in cached  # no key ever reaches the watcher

    def keys() -> set[str]:
        try:
            secret = cluster.core.read_namespaced_secret(TLS_SECRET, namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return set()
        return set(secret.data or {})

    applied = keys()
    assert {"ca.pem", "api.cert.pem", "api.key.pem", "api.accept.txt"} <= applied
    settled(watcher, cluster)
    assert watcher.check(namespace) == []
    cluster.core.delete_namespaced_secret(TLS_SECRET, namespace, _preload_content=False)
    wait_until(lambda: keys() == applied, "the TLS Secret restored")


def test_our_own_values_written_by_someone_else_start_one_pass_not_a_loop(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    """Someone applies our Secret with our very values under their own field manager (a
    restore, say): they now share the data's ownership, and a pass that changes nothing cannot
    take it back. The watcher reports it once; the full pass finds it matching; looking again
    at the same version starts nothing more."""
    reconciler.reconcile(world.project.pk)
    namespace = world.project.namespace
    secrets = watcher.cache.informers["Secret"]
    wait_until(lambda: secrets.get(namespace, SHARED_SECRETS) is not None, "the Secret's event")
    live: Any = cluster.core.read_namespaced_secret(SHARED_SECRETS, namespace)
    cluster.core.patch_namespaced_secret(
        SHARED_SECRETS,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SHARED_SECRETS, "namespace": namespace},
            "data": dict(live.data),
        },
        field_manager="a-restore",
        force=True,
        _content_type="application/apply-patch+yaml",
        _preload_content=False,
    )
    wait_until(
        lambda: (
            (cached := secrets.get(namespace, SHARED_SECRETS)) is not None
            and cached[WRITTEN_BY] == ["a-restore"]
        ),
        "the shared ownership to be seen",
    )
    wait_until(
        lambda: watcher.secret_edits.get((namespace, SHARED_SECRETS)), "the edit to be reported"
    )
    settled(watcher, cluster)
    verified = Project.objects.get(pk=world.project.pk).verified_at

    checks = watcher.checks
    watcher.mark([namespace])  # look at everything again: the same version of the Secret
    wait_until(lambda: watcher.checks > checks, "another look")
    settled(watcher, cluster)
    project = Project.objects.get(pk=world.project.pk)
    assert project.verified_at == verified  # no further full pass
    assert project.drift == []


def test_a_change_on_its_way_is_not_taken_for_drift(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    reconciler.reconcile(world.project.pk)
    namespace = world.project.namespace
    # A change committed and its message queued; its pass has not run yet.
    Service.objects.filter(pk=world.api.pk).update(ports=[9000])
    Project.objects.filter(pk=world.project.pk).update(
        generation=F("generation") + 1, reconcile_queued_at=timezone.now()
    )
    assert watcher.check(namespace) == []
    assert AppliedRecord.objects.get(project=world.project).digests is not None

    # The message was lost (no pass is coming): now the difference is drift, and it is repaired.
    Project.objects.filter(pk=world.project.pk).update(reconcile_queued_at=None)
    assert watcher.check(namespace) == ["Service api differs"]
    wait_until(lambda: in_sync(world.project), "the change to be applied")
    assert cluster.services(namespace)["api"].spec.ports[0].port == 9000


def test_with_no_watcher_watching_every_pass_reads_the_cluster(
    cluster: Cluster, world: World, watched: liveness.Signal
) -> None:
    reconciler.reconcile(world.project.pk)
    assert liveness.watching()
    watched.close()  # the watcher stopped (killed, say)
    assert not liveness.watching()
    namespace = world.project.namespace
    cluster.core.delete_namespaced_service("api", namespace, _preload_content=False)
    # Nobody would have told the record: the next pass reads, and restores what it finds gone.
    assert reconciler.reconcile(world.project.pk).changes == ["created Service api"]


def counted(cluster: Cluster, run: Callable[[], Any]) -> tuple[int, int]:
    """API requests (from this process) and SQL writes made while ``run`` runs."""
    writes: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            writes.append(sql)
        return execute(sql, params, many, context)

    cluster.http.reset()
    with connection.execute_wrapper(record):
        run()
    return len(cluster.http.calls), len(writes)


def add_projects(count: int) -> list[Project]:
    organization = Organization.objects.create(name=f"Scale {count}", slug=f"scale-{count}")
    projects = []
    for index in range(count):
        project = Project.objects.create(organization=organization, name=f"p{index}")
        for service in range(5):
            make_service(project, f"svc {service}", Service.Kind.PRIVATE, [3000])
        reconciler.reconcile(project.pk)
        projects.append(project)
    return projects


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="on SQLite (make run) a heartbeat row says it, which starvation delays",
)
def test_a_starved_watcher_keeps_passes_cheap_and_a_dead_one_does_not(
    cluster: Cluster, world: World, worker_env: dict[str, str], eager_tasks: None, tmp_path: Path
) -> None:
    """The watcher's process gets no CPU at all (SIGSTOP: a saturated machine at its worst)
    for longer than any heartbeat would last. Its watches are still open and will resume from
    their resource version, missing nothing: a change's pass still trusts its record and writes
    the one object that changed, reading nothing. Killed, it stops vouching at once."""
    reconciler.reconcile(world.project.pk)
    watcher = WatcherProcess(worker_env, tmp_path / "watcher.log")
    watcher.start()
    assert watcher.process is not None
    try:
        wait_until(liveness.watching, "the watcher to say it watches")
        watcher.process.send_signal(signal.SIGSTOP)
        try:
            # Starved for twice as long as a heartbeat row is trusted (on SQLite).
            time.sleep(2 * WatcherHeartbeat.STALE_AFTER.total_seconds())
            assert change_a_port(cluster, world, 8081) == [("PATCH", "services")]
        finally:
            watcher.process.send_signal(signal.SIGCONT)

        watcher.kill()
        wait_until(lambda: not liveness.watching(), "the dead watcher's lock to be let go")
        # Nobody vouches for the record: the pass reads the cluster.
        assert ("GET", "namespaces") in change_a_port(cluster, world, 8082)
    finally:
        watcher.stop()


def test_a_watch_that_cannot_open_lets_no_pass_trust_its_record(
    cluster: Cluster, world: World, transactional_db: Any, tmp_path: Path
) -> None:
    """A watcher whose watches fail (the API server unreachable, say) does not say it is
    watching, however long it runs; once they open, it does."""
    kubeconfig = json.loads(Path(django_settings.KUBECONFIG).read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{closed_port()}"
    unreachable = tmp_path / "unreachable.kubeconfig"
    unreachable.write_text(json.dumps(kubeconfig))
    broken = kube._api_client.__wrapped__(str(unreachable), django_settings.KUBE_CONTEXT)
    own_client = kube._api_client.__wrapped__(
        django_settings.KUBECONFIG, django_settings.KUBE_CONTEXT
    )
    cache = ClusterCache(own_client, django_settings.WORKLOAD_LABEL, watch_seconds=30)
    # One kind's informer cannot reach the server: every other watch is open.
    services = cache.informers["Service"]
    cache.informers["Service"] = Informer(
        broken, watched_kinds(django_settings.WORKLOAD_LABEL)[1], cache._changed, watch_seconds=30
    )
    watcher = Watcher(reconciler.watch_view, cache)
    try:
        for informer in cache.informers.values():
            informer.start()
        for kind, informer in cache.informers.items():
            if kind != "Service":
                wait_until(informer.watching.is_set, f"the {kind} watch to open")
        watcher.looked_at_all = True
        watcher.beat()
        assert not watcher.signal.held
        assert not liveness.watching()

        cache.informers["Service"].stop()
        cache.informers["Service"] = services
        services.start()
        wait_until(services.watching.is_set, "the Service watch to open")
        watcher.beat()
        assert liveness.watching()
    finally:
        watcher.signal.close()
        for informer in cache.informers.values():
            informer.stop()


def test_a_resync_costs_the_same_for_one_project_and_a_hundred(
    cluster: Cluster, transactional_db: Any, eager_tasks: None, settings: Any
) -> None:
    settings.RESYNC_VERIFY_PROJECTS = 2
    add_projects(1)
    one = counted(cluster, resync_all_projects)
    add_projects(99)
    hundred = counted(cluster, resync_all_projects)
    # The same budget of full re-reads whatever the number of projects, nothing else.
    per_pass = one  # one project: its single full re-read
    assert hundred[0] <= 2 * per_pass[0]
    assert hundred[1] <= 2 * per_pass[1]
    settings.RESYNC_VERIFY_PROJECTS = 0
    assert counted(cluster, resync_all_projects) == (0, 0)


def test_a_lost_message_is_found_by_the_resync(
    cluster: Cluster, world: World, transactional_db: Any, eager_tasks: None, settings: Any
) -> None:
    settings.RESYNC_VERIFY_PROJECTS = 0
    reconciler.reconcile(world.project.pk)
    Project.objects.filter(pk=world.project.pk).update(generation=world.project.generation + 5)
    resync_all_projects()
    assert in_sync(world.project)


def test_an_expired_watch_lists_again(cluster: Cluster) -> None:
    seen: list[tuple[str, str, str]] = []
    informer = Informer(
        kube.api_client(),
        watched_kinds(django_settings.WORKLOAD_LABEL)[0],
        lambda *a: seen.append(a),
    )
    with pytest.raises(_Gone):
        informer._event({"type": "ERROR", "object": {"code": 410, "message": "too old"}})
    informer._list()
    assert informer.synced.is_set()
    assert informer.lists == 1


def test_the_watcher_and_workers_survive_a_kill(
    cluster: Cluster,
    world: World,
    worker_env: dict[str, str],
    start_worker: Callable[[], WorkerProcess],
    tmp_path: Path,
) -> None:
    """kill -9 the watcher, or either of two workers: every drift is still repaired."""
    namespace = world.project.namespace
    first, second = start_worker(), start_worker()
    watcher = WatcherProcess(worker_env, tmp_path / "watcher.log")
    watcher.start()
    try:
        world.project.request_reconcile()
        wait_until(lambda: in_sync(world.project), "the project to be applied")

        watcher.kill()
        watcher.start()  # it lists everything again and compares every project
        cluster.core.delete_namespaced_service("api", namespace, _preload_content=False)
        wait_until(lambda: "api" in cluster.services(namespace), "restored after the restart")

        first.kill()
        cluster.core.delete_namespaced_service("postgres", namespace, _preload_content=False)
        wait_until(lambda: "postgres" in cluster.services(namespace), "restored by the other")

        second.kill()
        third = start_worker()
        cluster.networking.delete_namespaced_network_policy(
            "project-isolation", namespace, _preload_content=False
        )
        wait_until(
            lambda: "project-isolation" in cluster.policies(namespace), "restored by a new worker"
        )
        assert third.process is not None and third.process.poll() is None
    finally:
        watcher.stop()


def test_a_namespace_of_ours_without_a_project_is_deleted(
    cluster: Cluster, world: World, watcher: Watcher
) -> None:
    # Left behind by a project deleted while nothing was watching (or by another database).
    orphan = namespace_object("prj-abcdefghjkmn", "abcdefghjkmn")
    cluster.core.create_namespace(orphan, _preload_content=False)  # type: ignore[arg-type]

    def gone() -> bool:
        namespace = cluster.namespace("prj-abcdefghjkmn")
        return namespace is None or namespace.status.phase == "Terminating"

    wait_until(gone, "the orphaned namespace to be deleted")
    # A project's own namespace is left alone.
    reconciler.reconcile(world.project.pk)
    watcher.check(world.project.namespace)
    assert cluster.namespace(world.project.namespace).status.phase == "Active"
