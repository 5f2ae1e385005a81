"""`make bench`: figures that must not grow with a project's size, or with the number of projects.

Runs against a throw-away test database (PostgreSQL when DATABASE_URL is set, else SQLite).
The control loop at scale (resync periods, commit to in sync) is in benchmarks/control_loop.py.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import F  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import (  # noqa: E402
    setup_databases,
    setup_test_environment,
    teardown_databases,
)
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

from benchmarks import control_loop, open_tabs  # noqa: E402
from benchmarks.observe import APP_USER, grant_app_user  # noqa: E402
from networking.crypto import SecretText  # noqa: E402
from networking.models import (  # noqa: E402
    AppliedRecord,
    Membership,
    Organization,
    Project,
    Service,
    SharedSecret,
)
from tests.kubeapi import ClusterUnavailable, TestAPIServer, require_binaries  # noqa: E402
from tests.kubehttp import HttpRecorder  # noqa: E402

SIZES = (10, 100, 1000)
RENDERS = 15


@contextmanager
def count_queries() -> Iterator[list[str]]:
    """Every SQL statement run inside the block (a request resets Django's own query log)."""
    statements: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield statements


OVERVIEW_SIZES = (10, 100, 1000, 10_000)
# Issue 11's goals for the overview at 10,000 services.
OVERVIEW_TARGET_RATIO = 1.2
OVERVIEW_TARGET_BYTES = 300_000


def median_render(client: Client, url: str) -> float:
    client.get(url)  # warm: templates, connections
    timings = []
    for _ in range(RENDERS):
        start = time.perf_counter()
        response = client.get(url)
        timings.append(time.perf_counter() - start)
        assert response.status_code in (200, 204), (url, response.status_code)
    return statistics.median(timings)


SIZE_PAGE_SIZES = (10_000, 100_000)
SIZE_TARGET_RATIO = 1.2


def _filled_project(organization: Organization, size: int) -> Project:
    """A project of ``size`` web services with their ClusterIPs, made once per size."""
    project = Project.objects.filter(organization=organization, name=f"p{size}").first()
    if project is None:
        project = Project.objects.create(organization=organization, name=f"p{size}")
        Service.objects.bulk_create(
            (
                Service(
                    project=project,
                    display_name=f"service {i}",
                    name=f"service-{i}",
                    kind=Service.Kind.WEB,
                    ports=[8080],
                    cluster_ip=f"10.96.{i // 250 % 256}.{i % 250 + 1}",
                )
                for i in range(size)
            ),
            batch_size=5000,
        )
    if connection.vendor == "postgresql":
        # As autovacuum would soon after a bulk insert: the planner must know the table grew.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE networking_service")
    return project


def bench_overview() -> bool:
    """The overview a page at a time, beside Django admin's changelist of the same rows."""
    organization = Organization.objects.create(name="Bench", slug="bench")
    user = User.objects.create_user("bench", password="bench", is_staff=True, is_superuser=True)
    Membership.objects.create(user=user, organization=organization, role="owner")
    client = Client()
    client.force_login(user)
    print("Project overview page (one page of 50, in the same run as Django admin's changelist)")
    print(
        f"{'services':>10} {'SQL queries':>12} {'overview':>10} {'page size':>10} "
        f"{'admin changelist':>17} {'ratio':>6}"
    )
    query_counts = []
    ok = True
    last: tuple[Project, float, int, float] | None = None
    for size in OVERVIEW_SIZES:
        project = _filled_project(organization, size)
        url = reverse("project-overview", args=[project.uid])
        with count_queries() as queries:
            response = client.get(url)
        assert response.status_code == 200, response.status_code
        page_bytes = len(response.content)
        rendered = median_render(client, url)
        admin = median_render(
            client, f"/bench-admin/networking/service/?project__id__exact={project.pk}"
        )
        query_counts.append(len(queries))
        print(
            f"{size:>10,} {len(queries):>12} {rendered * 1000:>7.1f} ms "
            f"{page_bytes / 1000:>7.1f} kB {admin * 1000:>14.1f} ms {rendered / admin:>5.2f}x"
        )
        last = (project, rendered, page_bytes, admin)
    constant = len(set(query_counts)) == 1
    print("queries constant across sizes:", "yes" if constant else "NO")
    assert last is not None
    project, rendered, page_bytes, admin = last
    ratio = rendered / admin
    met = ratio <= OVERVIEW_TARGET_RATIO and page_bytes < OVERVIEW_TARGET_BYTES
    print(
        f"at {OVERVIEW_SIZES[-1]:,} services: {ratio:.2f}x the admin changelist "
        f"(goal ≤ {OVERVIEW_TARGET_RATIO}x), {page_bytes / 1000:.0f} kB (goal < "
        f"{OVERVIEW_TARGET_BYTES / 1000:.0f} kB): {'met' if met else 'NOT met'}"
    )
    ok = ok and constant and met
    bench_live(client, project)
    return bench_project_size(client, organization) and ok


def bench_project_size(client: Client, organization: Organization) -> bool:
    """Pages and API calls that show one service, or offer a choice of services, beside the
    Django admin's pages of the same rows, at 10,000 and 100,000 services in one project."""
    print(
        "\nOne service, and choices of services, in a large project (beside Django admin, same run)"
    )
    print(
        f"{'services':>10} {'page':<26} {'SQL':>4} {'time':>9} {'size':>9} "
        f"{'admin equivalent':<22} {'admin':>9} {'ratio':>6}"
    )
    ok = True
    for size in SIZE_PAGE_SIZES:
        project = _filled_project(organization, size)
        service = project.services.order_by("pk").first()
        assert service is not None
        secret = SharedSecret.objects.create(
            project=project, name=f"BENCH_{size}", value=SecretText.seal("x" * 32)
        )
        secret.services.set(project.services.order_by("pk")[:3])
        change_form = f"/bench-admin/networking/service/{service.pk}/change/"
        changelist = f"/bench-admin/networking/service/?project__id__exact={project.pk}"
        rows = (
            (
                "service page",
                reverse("service-detail", args=[project.uid, service.pk]),
                "change form",
                change_form,
            ),
            (
                "new secret (receivers)",
                reverse("secret-create", args=[project.uid]),
                "change form",
                change_form,
            ),
            (
                "secret receivers",
                reverse("secret-edit", args=[project.uid, secret.pk]),
                "change form",
                change_form,
            ),
            (
                "API: list of services",
                f"/api/v1/projects/{project.uid}/services?limit=50",
                "changelist (50)",
                changelist,
            ),
            (
                "API: one service",
                f"/api/v1/projects/{project.uid}/services/{service.pk}",
                "change form",
                change_form,
            ),
        )
        for label, url, admin_label, admin_url in rows:
            with count_queries() as queries:
                response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            took = median_render(client, url)
            admin = median_render(client, admin_url)
            ratio = took / admin
            met = ratio <= SIZE_TARGET_RATIO
            ok = ok and met
            print(
                f"{size:>10,} {label:<26} {len(queries):>4} {took * 1000:>6.1f} ms "
                f"{len(response.content) / 1000:>6.1f} kB {admin_label:<22} "
                f"{admin * 1000:>6.1f} ms {ratio:>5.2f}x{'' if met else '  NOT met'}"
            )
    print(f"goal: each within {SIZE_TARGET_RATIO}x its admin page: {'met' if ok else 'NOT met'}")
    return ok


def bench_live(client: Client, project: Project) -> None:
    """What an open overview costs: the poll with nothing new, and news of one changed row."""
    live = reverse("project-live", args=[project.uid])
    revision = Project.objects.get(pk=project.pk).revision
    quiet = f"{live}?since={revision}"
    with count_queries() as queries:
        assert client.get(quiet).status_code == 204
    nothing_new = median_render(client, quiet)
    overview = reverse("project-overview", args=[project.uid])
    table = client.get(overview, HTTP_HX_REQUEST="true").content
    shown = ",".join(
        str(pk) for pk in project.services.order_by("name").values_list("pk", flat=True)[:50]
    )
    service = project.services.order_by("name").first()
    assert service is not None
    Project.touch_services(project.pk, Service.objects.filter(pk=service.pk))
    since = {"since": str(revision), "shown": shown}
    rows = client.get(overview, since, HTTP_HX_REQUEST="true").content
    print(
        f"Live, with {project.services.count():,} services: a poll with nothing new "
        f"{nothing_new * 1000:.1f} ms, {len(queries)} SQL queries (the session and the user, "
        f"then the project), an empty 204; one changed row comes back as {len(rows):,} bytes, "
        f"against {len(table):,} for the whole table"
    )


@contextmanager
def watching() -> Iterator[Callable[[], None]]:
    """A watcher in this process, on a client of its own (its watches are not counted).

    Yields a function that waits until the watcher has looked at everything it was told of
    and says it is watching: here it shares the process with the passes it watches, so after a
    thousand-service pass it may still be catching up on that pass's events.
    """
    import threading

    from networking import passes
    from networking.cluster import kube, liveness
    from networking.cluster.informer import ClusterCache
    from networking.cluster.watcher import Watcher

    own_client = kube._api_client.__wrapped__(settings.KUBECONFIG, settings.KUBE_CONTEXT)
    watcher = Watcher(
        passes.watch_view, ClusterCache(own_client, settings.WORKLOAD_LABEL, watch_seconds=60)
    )
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not liveness.watching():
        if time.monotonic() > deadline:
            raise RuntimeError("the watcher did not start watching within 60 s")
        time.sleep(0.1)

    def settled() -> None:
        deadline = time.monotonic() + 120
        while watcher.dirty or watcher.deferred or watcher.suspected or not liveness.watching():
            if time.monotonic() > deadline:
                raise RuntimeError("the watcher did not settle within 120 s")
            time.sleep(0.1)

    try:
        yield settled
    finally:
        watcher.stop()
        thread.join(10)


def bench_reconcile(server: TestAPIServer) -> bool:
    """Kubernetes API calls per reconcile pass, counted at the client's HTTP layer."""
    settings.CLUSTER_BACKEND = "kubernetes"
    settings.KUBECONFIG = str(server.kubeconfig_for(APP_USER))
    with watching() as settled:
        return reconcile_calls(settled)


def reconcile_calls(settled: Callable[[], None]) -> bool:
    from networking.cluster import kube
    from networking.passes import reconcile

    kube._api_client.cache_clear()
    recorder = HttpRecorder(kube.api_client().rest_client.pool_manager)
    kube.api_client().rest_client.pool_manager = recorder  # type: ignore[assignment]
    organization = Organization.objects.create(name="Reconcile", slug="reconcile")
    print("\nKubernetes API calls per reconcile pass")
    print(
        f"{'services':>10} {'first pass':>16} {'no change':>16} {'re-read':>16} {'one rename':>16}"
    )
    ok = True
    no_change_reads = set()
    for size in SIZES:
        project = Project.objects.create(organization=organization, name=f"r{size}")
        Service.objects.bulk_create(
            Service(
                project=project, display_name=f"s{i}", name=f"s{i}", kind="private", ports=[3000]
            )
            for i in range(size)
        )
        figures = []
        for step in ("first", "no change", "re-read", "rename"):
            if step != "first":
                settled()  # as in production, where the watcher has its own process
            if step == "re-read":
                # As the watcher or the resync asks: the record of the last pass distrusted.
                AppliedRecord.distrust([project.pk])
            if step == "rename":
                # As a saved change leaves it: the generation bumped, the row stamped with it,
                # and its pass queued.
                Project.objects.filter(pk=project.pk).update(
                    generation=F("generation") + 1, reconcile_queued_at=timezone.now()
                )
                Service.objects.filter(project=project, name="s0").update(
                    name="renamed",
                    display_name="renamed",
                    changed_generation=Project.objects.get(pk=project.pk).generation,
                )
            recorder.reset()
            reconcile(project.pk, take_queued=step == "rename")
            figures.append((len(recorder.reads), len(recorder.writes)))
        (_, _), (calls, writes), (reads, re_read_writes), (rename_reads, rename_writes) = figures
        no_change_reads.add(reads)
        ok = ok and calls == writes == re_read_writes == rename_reads == 0 and rename_writes == 2
        print(f"{size:>10} " + " ".join(f"{r:>4} R {w:>5} W   " for r, w in figures))
    constant = len(no_change_reads) == 1
    print(
        "no change: no call; re-read: zero writes; rename: writes only:",
        "yes" if ok else "NO",
        "| re-read reads constant across sizes:",
        "yes" if constant else "NO",
    )
    kube._api_client.cache_clear()
    return ok and constant


SECTIONS = ("pages", "tabs", "cluster")


def sections() -> set[str]:
    """``BENCH_ONLY``: the sections to run (pages, tabs, cluster), separated by commas."""
    raw = os.environ.get("BENCH_ONLY", "")
    chosen = {part.strip() for part in raw.split(",") if part.strip()} or set(SECTIONS)
    if chosen - set(SECTIONS):
        raise SystemExit(f"BENCH_ONLY={raw!r}: choose among {', '.join(SECTIONS)}.")
    return chosen


def main() -> int:
    chosen = sections()
    setup_test_environment()
    print(f"database: {connection.vendor}\n")
    old_config = setup_databases(verbosity=0, interactive=False)
    ok = True
    try:
        if "pages" in chosen:
            ok = bench_overview() and ok
        if "tabs" in chosen:
            ok = open_tabs.main() and ok
        if "cluster" not in chosen:
            return 0 if ok else 1
        try:
            bin_dir = require_binaries()
        except ClusterUnavailable as error:
            print(f"\nReconcile figures skipped: no test API server ({error.reason})")
        else:
            # With the controller manager, as the cluster tests run it: Deployments get their
            # ReplicaSets, and its background requests are part of what the figures subtract.
            with TestAPIServer(
                bin_dir, controller_manager=True, users=[APP_USER], audit_users=[APP_USER]
            ) as server:
                grant_app_user(server)
                ok = control_loop.main(server) and ok
                ok = bench_reconcile(server) and ok
    finally:
        teardown_databases(old_config, verbosity=0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
