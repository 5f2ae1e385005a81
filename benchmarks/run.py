"""`make bench`: figures that must not grow with a project's size.

Runs against a throw-away test database (PostgreSQL when DATABASE_URL is set, else SQLite).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import (  # noqa: E402
    setup_databases,
    setup_test_environment,
    teardown_databases,
)
from django.urls import reverse  # noqa: E402

from networking.models import Membership, Organization, Project, Service  # noqa: E402

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


def bench_overview() -> bool:
    organization = Organization.objects.create(name="Bench", slug="bench")
    user = User.objects.create_user("bench", password="bench")
    Membership.objects.create(user=user, organization=organization, role="owner")
    client = Client()
    client.force_login(user)
    print("Project overview page")
    print(f"{'services':>10} {'SQL queries':>12} {'median render':>15}")
    query_counts = []
    for size in SIZES:
        project = Project.objects.create(organization=organization, name=f"p{size}")
        Service.objects.bulk_create(
            Service(
                project=project,
                display_name=f"service {i}",
                name=f"service-{i}",
                kind=Service.Kind.WEB,
                ports=[8080],
                cluster_ip=f"10.96.{i // 250}.{i % 250 + 1}",
            )
            for i in range(size)
        )
        url = reverse("project-overview", args=[project.uid])
        with count_queries() as queries:
            response = client.get(url)
        assert response.status_code == 200, response.status_code
        timings = []
        for _ in range(RENDERS):
            start = time.perf_counter()
            client.get(url)
            timings.append(time.perf_counter() - start)
        query_counts.append(len(queries))
        print(f"{size:>10} {len(queries):>12} {statistics.median(timings) * 1000:>12.1f} ms")
    constant = len(set(query_counts)) == 1
    print("queries constant across sizes:", "yes" if constant else "NO")
    return constant


def main() -> int:
    setup_test_environment()
    engine = connection.vendor
    print(f"database: {engine}\n")
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        ok = bench_overview()
    finally:
        teardown_databases(old_config, verbosity=0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
