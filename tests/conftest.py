from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from django.test.testcases import QuietWSGIRequestHandler
from django.utils import timezone

from api.models import ApiToken
from dashboard.celery import app as celery_app
from networking import rotation
from networking.crypto import SecretText
from networking.models import (
    Membership,
    Notification,
    Organization,
    PeeringRequest,
    Project,
    Service,
    SharedSecret,
)

# The real API server, Celery worker processes and the fixtures that start them; the browser.
pytest_plugins = ["tests.cluster_fixtures", "tests.browser"]

# The live server sends an answer's headers and body in two writes; with Nagle's algorithm on,
# the second waits for the client's delayed acknowledgement of the first, 40 ms on Linux, on
# every request of a kept-alive connection (most of a schemathesis run's time).
QuietWSGIRequestHandler.disable_nagle_algorithm = True

ROLES = ("anonymous", "outsider", "support", "viewer", "member", "owner")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for folder, marker in (
            ("cluster", pytest.mark.cluster),
            ("dataplane", pytest.mark.dataplane),
            ("e2e", pytest.mark.e2e),
        ):
            if f"tests/{folder}/" in str(item.path):
                item.add_marker(marker)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Give each operation's schemathesis test its own node ID.

    Schemathesis 4.32 makes one item per API operation without a callspec, and pytest 9.2
    builds a function's node ID from its original name and callspec only: every operation's
    item got the same ID (``…::test_every_answer_matches_the_document``), and pytest-xdist,
    which hands items out by ID, ran the first operation's test and no other."""
    from schemathesis.pytest.plugin import SchemathesisFunction

    if isinstance(item, SchemathesisFunction) and item.operation_label and not item.id.params:
        assert item.parent is not None
        item._id = item.parent.id.child(item.originalname).with_params(item.operation_label)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist, every data-plane test goes to the same process, one after another
    (one node per machine, started once); every other test goes wherever a process is free."""
    from xdist.scheduler import LoadScopeScheduling

    class DataPlaneInOneProcess(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "tests/dataplane/" if nodeid.startswith("tests/dataplane/") else nodeid

    return DataPlaneInOneProcess(config, log)


def pytest_report_header(config: pytest.Config) -> list[str]:
    database = settings.DATABASES["default"]
    engine = database["ENGINE"].rsplit(".", 1)[-1]
    lines = [f"database: {engine} ({database.get('HOST') or database['NAME']})"]
    if not os.environ.get("DATABASE_URL"):
        lines.append("DATABASE_URL is not set: running on SQLite. CI runs on PostgreSQL.")
    lines.append(f"redis: {settings.REDIS_URL or 'not set (local memory cache, in-memory broker)'}")
    return lines


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail the run at once if a configured service is unreachable: never skip silently."""
    if settings.REDIS_URL:
        import redis

        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
        except redis.RedisError as error:
            raise pytest.UsageError(
                f"REDIS_URL={settings.REDIS_URL} is unreachable: {error}"
            ) from None
    if os.environ.get("DATABASE_URL"):
        import psycopg

        database = settings.DATABASES["default"]
        try:
            psycopg.connect(
                host=database["HOST"],
                port=database["PORT"] or 5432,
                user=database["USER"],
                password=database["PASSWORD"],
                dbname="postgres",
                connect_timeout=3,
            ).close()
        except psycopg.Error as error:
            raise pytest.UsageError(f"DATABASE_URL is unreachable: {error}") from None


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Every test starts with an empty cache (sign-in counters live there), and with workers
    that remember no pass (a rolled-back test's project ids are taken again)."""
    from networking.cluster import reconcile

    reconcile.forget()
    yield
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        keys = list(client.scan_iter(match=f"{settings.CACHES['default']['KEY_PREFIX']}:*"))
        if keys:
            client.delete(*keys)
    else:
        cache.clear()


@dataclass
class World:
    """Two customer organizations, each with a project and services, and one user per role."""

    acme: Organization
    globex: Organization
    project: Project
    other_project: Project
    api: Service
    postgres: Service
    other_service: Service
    secret: SharedSecret
    other_secret: SharedSecret
    # Globex asks to peer with Acme's project (waiting for Acme); Globex peers two of its own.
    peering: PeeringRequest
    other_peering: PeeringRequest
    users: dict[str, User | None]

    def client_for(self, role: str) -> Client:
        client = Client()
        user = self.users[role]
        if user is not None:
            client.force_login(user)
        return client


def make_service(
    project: Project, display_name: str, kind: str, ports: list[int] | None = None
) -> Service:
    service = Service(
        project=project,
        display_name=display_name,
        kind=kind,
        ports=ports if ports is not None else Service.default_ports(kind),
    )
    service.full_clean(exclude=["name"])
    if service.is_database:
        service.generate_credentials()
    service.save()
    return service


def make_secret(project: Project, name: str, receivers: list[Service]) -> SharedSecret:
    secret = SharedSecret.objects.create(
        project=project, name=name, value=SecretText.seal(rotation.generate_value())
    )
    secret.services.set(receivers)
    return secret


@pytest.fixture
def world(db: Any) -> World:
    return build_world()


@pytest.fixture(scope="module")
def module_world(django_db_setup: Any, django_db_blocker: Any) -> Iterator[World]:
    """One world for a whole module, built once and rolled back at the module's end.

    Each test still runs in its own savepoint (the ``db`` fixture), so whatever one test
    changes is undone before the next: a module opts in by overriding ``world`` (and ``api_tokens``)
    with these. The access matrices do (about 1,300 cases, each of which would
    otherwise build the world again)."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield build_world()
        transaction.set_rollback(True)


@pytest.fixture(scope="module")
def module_api_tokens(module_world: World, django_db_blocker: Any) -> dict[str, str | None]:
    with django_db_blocker.unblock():
        return tokens_per_role(module_world)


def build_world() -> World:
    acme = Organization.objects.create(name="Acme", slug="acme", plan=Organization.Plan.ENTERPRISE)
    globex = Organization.objects.create(
        name="Globex", slug="globex", plan=Organization.Plan.ENTERPRISE
    )
    project = Project.objects.create(organization=acme, name="Storefront")
    other_project = Project.objects.create(organization=globex, name="Analytics")
    users: dict[str, User | None] = {"anonymous": None}
    for role in ("owner", "member", "viewer"):
        user = User.objects.create_user(role, email=f"{role}@acme.example", password="pw")
        Membership.objects.create(user=user, organization=acme, role=role)
        users[role] = user
    outsider = User.objects.create_user("outsider", password="pw")
    users["outsider"] = outsider
    users["support"] = User.objects.create_user(
        "support", email="support@stackblaze.example", password="pw", is_staff=True
    )
    globex_owner = User.objects.create_user(
        "globex-owner", email="owner@globex.example", password="pw"
    )
    Membership.objects.create(user=globex_owner, organization=globex, role=Membership.Role.OWNER)
    # The outsider has an organization of their own: "not a member here", not "no memberships".
    outsider_org = Organization.objects.create(name="Initech", slug="initech")
    Membership.objects.create(user=outsider, organization=outsider_org, role="owner")
    now = timezone.now()
    peering = PeeringRequest.objects.create(
        requester_project=other_project,
        target_project=project,
        requested_by=globex_owner,
        justification="Our analytics pipeline reads the storefront's events.",
        status=PeeringRequest.Status.PENDING_ACCEPTANCE,
        expires_at=now + timedelta(days=7),
    )
    other_peering = PeeringRequest.objects.create(
        requester_project=other_project,
        target_project=Project.objects.create(organization=globex, name="Billing"),
        requested_by=globex_owner,
        justification="Billing reads usage.",
        status=PeeringRequest.Status.PENDING_SUPPORT,
        expires_at=now + timedelta(days=7),
    )
    api = make_service(project, "api", Service.Kind.WEB)
    postgres = make_service(project, "postgres", Service.Kind.POSTGRESQL)
    other_service = make_service(other_project, "warehouse", Service.Kind.MYSQL)
    return World(
        acme=acme,
        globex=globex,
        project=project,
        other_project=other_project,
        api=api,
        postgres=postgres,
        other_service=other_service,
        secret=make_secret(project, "INTERNAL_API_SECRET", [api]),
        other_secret=make_secret(other_project, "INTERNAL_API_SECRET", [other_service]),
        peering=peering,
        other_peering=other_peering,
        users=users,
    )


def user(world: World, role: str) -> User:
    """The world's user of ``role`` (one who exists)."""
    found = world.users[role]
    assert found is not None
    return found


def globex_owner() -> User:
    return User.objects.get(username="globex-owner")


def make_notifications(world: World, count: int) -> list[Notification]:
    """``count`` approvals told to Acme, numbered in the order they were written."""
    return Notification.objects.bulk_create(
        [
            Notification(
                organization=world.acme,
                project=world.project,
                kind=Notification.Kind.PEERING_APPROVED,
                title=f"Peering approved: number {index}",
            )
            for index in range(count)
        ]
    )


def issue_token(user: User, organization: Organization | None, role: str, name: str) -> str:
    """A token already used once, so using it records nothing new (its first use is audited)."""
    token, raw = ApiToken.issue(user=user, organization=organization, name=name, role=role)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return raw


@pytest.fixture
def api_tokens(world: World) -> dict[str, str | None]:
    return tokens_per_role(world)


def tokens_per_role(world: World) -> dict[str, str | None]:
    """A token per role: Acme's roles at their own level, the outsider's in their own
    organization, support's without one (role ``support``); anonymous has none."""
    tokens: dict[str, str | None] = {"anonymous": None}
    for role in ("owner", "member", "viewer"):
        user = world.users[role]
        assert user is not None
        tokens[role] = issue_token(user, world.acme, role, f"{role}-token")
    outsider, support = world.users["outsider"], world.users["support"]
    assert outsider is not None and support is not None
    tokens["outsider"] = issue_token(
        outsider, Organization.objects.get(slug="initech"), "owner", "outsider-token"
    )
    tokens["support"] = issue_token(support, None, "support", "support-token")
    return tokens


def bearer(token: str | None) -> dict[str, str]:
    """Test-client ``headers`` that send ``token`` (none for anonymous)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture
def manifests(settings: Any, tmp_path: Path) -> Path:
    """The manifests backend, writing into this test's own folder."""
    settings.CLUSTER_BACKEND = "manifests"
    settings.MANIFESTS_DIR = tmp_path
    return tmp_path


@pytest.fixture
def owner_client(world: World) -> Client:
    return world.client_for("owner")


@pytest.fixture
def viewer_client(world: World) -> Client:
    return world.client_for("viewer")


@pytest.fixture
def client_for(world: World) -> Callable[[str], Client]:
    return world.client_for


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop what this run left in the broker and on disk."""
    if settings.REDIS_URL:
        import redis

        redis.Redis.from_url(settings.REDIS_URL).delete(settings.CELERY_TASK_DEFAULT_QUEUE)
    state_dir = Path(settings.STATE_DIR)
    if state_dir.name.startswith("stackblaze-test-") and not os.environ.get("KEEP_TEST_STATE"):
        shutil.rmtree(state_dir, ignore_errors=True)


def closed_port() -> int:
    """A local port nothing listens on: bound once by us, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def broker_down() -> Iterator[None]:
    """Point the Celery app at a Redis port nobody listens on, as in a Redis outage."""

    def reset_pools() -> None:
        # What Celery itself does after a fork: the next send opens a pool for the new URL.
        celery_app._pool = None  # type: ignore[attr-defined]
        celery_app.amqp._producer_pool = None  # type: ignore[attr-defined]

    original = celery_app.conf.broker_url
    celery_app.conf.update(broker_url=f"redis://127.0.0.1:{closed_port()}/0")
    reset_pools()
    try:
        yield
    finally:
        celery_app.conf.update(broker_url=original)
        reset_pools()
