"""Every project page stays live: one cheap poll answers "nothing new", and news updates only
what changed (a row, the badge), for whoever made the change: a teammate, the worker, support."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from networking import live, peering
from networking import passes as reconciler
from networking.cluster import lease
from networking.models import AuditEvent, PeeringRequest, Project, Service
from tests.conftest import World, closed_port, make_service
from tests.waiting import wait_until


def revision(project: Project) -> int:
    return Project.objects.get(pk=project.pk).revision


def poll(client: Client, project: Project, since: int | str) -> Any:
    return client.get(
        reverse("project-live", args=[project.uid]), {"since": since}, HTTP_HX_REQUEST="true"
    )


needs_redis = pytest.mark.skipif(
    not live.enabled(), reason="the poll's cache needs Redis (CI sets REDIS_URL)"
)


class TestThePoll:
    @needs_redis
    def test_nothing_new_is_answered_from_the_cache_without_the_database(
        self, owner_client: Client, world: World
    ) -> None:
        now = revision(world.project)
        poll(owner_client, world.project, now)  # the first, the whole way: fills the cache
        with CaptureQueriesContext(connection) as queries:
            response = poll(owner_client, world.project, now)
        assert response.status_code == 204
        assert response.content == b""
        assert queries.captured_queries == []

    @override_settings(
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    )
    def test_without_a_shared_cache_nothing_new_is_one_query_for_the_project(
        self, owner_client: Client, world: World
    ) -> None:
        now = revision(world.project)
        poll(owner_client, world.project, now)
        with CaptureQueriesContext(connection) as queries:
            response = poll(owner_client, world.project, now)
        assert response.status_code == 204
        project_queries = [q["sql"] for q in queries if "networking_project" in q["sql"]]
        assert len(project_queries) == 1

    @needs_redis
    def test_the_cache_answers_only_a_session_the_database_let_in(
        self, owner_client: Client, client_for: Callable[[str], Client], world: World
    ) -> None:
        now = revision(world.project)
        assert poll(owner_client, world.project, now).status_code == 204
        outsider = client_for("outsider")
        with CaptureQueriesContext(connection) as queries:
            assert poll(outsider, world.project, now).status_code == 404
        assert queries.captured_queries  # asked the database, which said no
        # Nor an old revision, nor another project, from the owner's entry.
        assert poll(owner_client, world.project, now - 1).status_code == 200
        assert poll(owner_client, world.other_project, 0).status_code == 404

    @needs_redis
    def test_a_read_from_before_a_change_cannot_hide_it(self, world: World) -> None:
        """A poll reads revision N, a change commits N+1, then the poll stores N: the change's
        mark wins, and the next poll asks the database."""
        read = revision(world.project)
        Project.touch([world.project.pk])
        live.seen("a-session", world.project.uid, world.project.pk, read)
        assert not live.unchanged("a-session", world.project.uid, read)
        # Once the database's answer is stored, the cache answers.
        cache.delete(f"live:revision:{world.project.pk}")
        live.seen("a-session", world.project.uid, world.project.pk, revision(world.project))
        assert live.unchanged("a-session", world.project.uid, revision(world.project))

    def test_with_the_cache_down_the_poll_still_answers(
        self, owner_client: Client, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The back-off this causes ends with the test (monkeypatch puts the time back).
        monkeypatch.setattr(live, "_failed_at", live._failed_at)
        down = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
                "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
            }
        }
        with override_settings(CACHES=down):
            now = revision(world.project)
            assert poll(owner_client, world.project, now).status_code == 204
            assert poll(owner_client, world.project, now).status_code == 204
            world.api.ports = [9000]
            world.api.save_changes(actor=None)
            assert poll(owner_client, world.project, now).status_code == 200

    def test_news_brings_the_badge_a_new_poll_and_the_event(
        self, owner_client: Client, world: World
    ) -> None:
        before = revision(world.project)
        world.api.ports = [9000]
        world.api.save_changes(actor=None)
        response = poll(owner_client, world.project, before)
        assert response.status_code == 200
        html = response.content.decode()
        assert 'id="sync-status"' in html and 'hx-swap-oob="outerHTML"' in html
        assert "Queued" in html
        assert f"since={revision(world.project)}" in html
        assert json.loads(response["HX-Trigger"]) == {
            "project-changed": {"revision": revision(world.project)}
        }

    def test_every_project_page_polls(self, owner_client: Client, world: World) -> None:
        uid = world.project.uid
        pages: list[tuple[str, list[Any]]] = [
            ("project-overview", [uid]),
            ("project-network", [uid]),
            ("service-detail", [uid, world.api.pk]),
            ("secret-list", [uid]),
            ("secret-detail", [uid, world.secret.pk]),
            ("project-peering", [uid]),
            ("project-sync", [uid]),
            ("audit-log", [uid]),
            ("project-settings", [uid]),
        ]
        for name, args in pages:
            html = owner_client.get(reverse(name, args=args)).content.decode()
            assert 'id="live"' in html, name
            assert 'hx-trigger="every 2s, page-visible from:document"' in html, name

    @pytest.mark.parametrize(
        ("name", "region"),
        [
            ("project-overview", "services-table"),
            ("project-network", "network"),
            ("secret-list", "secrets-table"),
            ("project-peering", "peerings"),
            ("project-sync", "sync-history"),
            ("audit-log", "audit-rows"),
        ],
    )
    def test_each_page_refreshes_its_own_part_on_news(
        self, owner_client: Client, world: World, name: str, region: str
    ) -> None:
        url = reverse(name, args=[world.project.uid])
        html = owner_client.get(url).content.decode()
        listener = re.search(rf'<[^>]*id="{region}"[^>]*>', html, re.S)
        assert listener is not None, region
        assert 'hx-trigger="project-changed from:body"' in listener.group(0)
        part = owner_client.get(url, HTTP_HX_REQUEST="true").content.decode()
        assert f'id="{region}"' in part
        assert "<html" not in part and 'id="live"' not in part

    def test_another_tenants_project_is_a_404(self, owner_client: Client, world: World) -> None:
        assert poll(owner_client, world.other_project, 0).status_code == 404
        assert poll(owner_client, world.other_project, "x").status_code == 404


class TestWhatMovesThePagesOn:
    """Each of these moves the revision, and an open page hears of it at its next poll, though
    the poll before was answered from the cache."""

    @pytest.fixture(autouse=True)
    def _page(self, owner_client: Client, world: World) -> None:
        self.client = owner_client
        self.project = world.project
        self.seed()

    def seed(self) -> None:
        """A page showing the current revision, whose polls the cache answers (no earlier
        step's mark left to send them to the database anyway)."""
        self.opened_at = revision(self.project)
        cache.delete(f"live:revision:{self.project.pk}")
        assert poll(self.client, self.project, self.opened_at).status_code == 204
        if live.enabled():
            with CaptureQueriesContext(connection) as queries:
                assert poll(self.client, self.project, self.opened_at).status_code == 204
            assert queries.captured_queries == []

    def heard(self) -> bool:
        """The page shown at ``opened_at`` hears news; then it shows the new revision."""
        response = poll(self.client, self.project, self.opened_at)
        self.seed()
        return bool(response.status_code == 200)

    def test_a_teammates_change(self, world: World) -> None:
        before = revision(world.project)
        make_service(world.project, "worker", Service.Kind.PRIVATE, [3000])
        world.project.record_change(
            actor=None, action=AuditEvent.Action.SERVICE_CREATED, target="worker"
        )
        assert revision(world.project) > before
        assert self.heard()

    def test_a_rename_of_the_project(self, world: World) -> None:
        before = revision(world.project)
        world.project.rename("Shop", actor=None)
        assert revision(world.project) > before
        assert self.heard()

    def test_the_worker_claiming_applying_and_releasing(
        self, world: World, manifests: Path
    ) -> None:
        before = revision(world.project)
        claimed = lease.claim(world.project.pk)
        assert claimed is not None
        applying = revision(world.project)
        assert applying > before
        assert self.heard()
        lease.release(world.project.pk, claimed.token)
        assert revision(world.project) > applying
        assert self.heard()
        before = revision(world.project)
        reconciler.reconcile(world.project.pk)
        assert revision(world.project) > before
        assert self.heard()

    @needs_redis
    @pytest.mark.django_db(transaction=True)
    def test_a_claim_marks_its_project_beside_the_pass(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Outside a transaction (as a worker claims), the claim's mark is not waited for on
        the pass's path: the open page hears of it a moment later, before the pass ends."""
        monkeypatch.setattr(live, "_failed_at", -live.BACK_OFF_SECONDS)  # no earlier outage
        claimed = lease.claim(world.project.pk)
        assert claimed is not None
        try:
            wait_until(
                lambda: poll(self.client, self.project, self.opened_at).status_code == 200,
                "the open page to hear of the claim",
                timeout=live.MIRROR_SECONDS / 3,
            )
        finally:
            lease.release(world.project.pk, claimed.token)

    def test_what_a_pass_moves_is_marked_once_it_ends(self, world: World) -> None:
        # A long pass outlives the mark its claim made; what it moves after is marked at its
        # end (``live.deferred``), in one round trip.
        with live.deferred():
            Project.touch([world.project.pk])
            Project.touch([world.project.pk])
        assert self.heard()

    def test_a_clusterip_recorded_stamps_its_row(self, world: World) -> None:
        before = revision(world.project)
        Project.touch_services(world.project.pk, Service.objects.filter(pk=world.api.pk))
        assert Service.objects.get(pk=world.api.pk).revision == revision(world.project) > before
        assert self.heard()
        assert Service.objects.get(pk=world.postgres.pk).revision <= before

    def test_a_peering_decision_moves_both_sides(self, world: World) -> None:
        owner = world.users["owner"]
        peering.accept(world.peering, actor=owner, project=world.project)
        ours, theirs = revision(world.project), revision(world.other_project)
        peering.approve(world.peering, staff=world.users["support"])
        assert revision(world.project) > ours
        assert revision(world.other_project) > theirs
        # And the worker connecting both sides.
        ours, theirs = revision(world.project), revision(world.other_project)
        peering.record_applied(world.project, {world.peering.pk})
        peering.record_applied(world.other_project, {world.peering.pk})
        assert PeeringRequest.objects.get(pk=world.peering.pk).status == "active"
        assert revision(world.project) > ours
        assert revision(world.other_project) > theirs
        assert self.heard()


class TestTheOverviewFollowsRowByRow:
    """On project-changed the table asks what changed since the revision it shows."""

    def table(self, client: Client, world: World, **params: Any) -> Any:
        return client.get(
            reverse("project-overview", args=[world.project.uid]),
            params,
            HTTP_HX_REQUEST="true",
        )

    def shown(self, html: str) -> tuple[str, str]:
        since = re.search(r'name="since" value="(\d+)"', html)
        shown = re.search(r'name="shown" value="([\d,]*)"', html)
        assert since and shown
        return since.group(1), shown.group(1)

    def test_the_table_listens_for_changes(self, owner_client: Client, world: World) -> None:
        html = owner_client.get(reverse("project-overview", args=[world.project.uid])).content
        assert b'hx-trigger="project-changed from:body"' in html
        assert b'hx-include="#services-live"' in html

    def test_a_changed_service_comes_back_alone(self, owner_client: Client, world: World) -> None:
        since, shown = self.shown(self.table(owner_client, world).content.decode())
        world.api.ports = [9000]
        world.api.save_changes(actor=None)
        html = self.table(owner_client, world, since=since, shown=shown).content.decode()
        assert f'<tr id="service-{world.api.pk}" hx-swap-oob="outerHTML">' in html
        assert "api.internal:9000" in html
        assert "Pending" in html
        assert f'id="service-{world.postgres.pk}"' not in html
        assert 'id="services-table"' not in html
        # Its new revision goes with it, so the next question starts from there.
        assert f'name="since" value="{revision(world.project)}"' in html

    def test_nothing_changed_sends_no_row(self, owner_client: Client, world: World) -> None:
        since, shown = self.shown(self.table(owner_client, world).content.decode())
        world.project.audit(actor=None, action=AuditEvent.Action.PROJECT_RENAMED, target="x")
        html = self.table(owner_client, world, since=since, shown=shown).content.decode()
        assert "<tr" not in html

    def test_a_new_service_brings_the_table(self, owner_client: Client, world: World) -> None:
        since, shown = self.shown(self.table(owner_client, world).content.decode())
        make_service(world.project, "a worker", Service.Kind.PRIVATE, [3000])
        html = self.table(owner_client, world, since=since, shown=shown).content.decode()
        assert 'id="services-table"' in html and 'hx-swap-oob="outerHTML"' in html
        assert "a-worker.internal:3000" in html

    def test_a_row_turns_applied_when_the_worker_applies_it(
        self, owner_client: Client, world: World, manifests: Path
    ) -> None:
        reconciler.reconcile(world.project.pk)
        world.api.ports = [9000]
        world.api.save_changes(actor=None)
        since, shown = self.shown(self.table(owner_client, world).content.decode())
        html = self.table(owner_client, world, since=since, shown=shown).content.decode()
        assert "<tr" not in html
        reconciler.reconcile(world.project.pk)
        html = self.table(owner_client, world, since=since, shown=shown).content.decode()
        assert f'<tr id="service-{world.api.pk}" hx-swap-oob="outerHTML">' in html
        assert "Applied" in html and "Pending" not in html
