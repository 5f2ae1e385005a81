"""The notifications list in the header: each event tells the right people, once; each person
sees what their membership lets them see today; the count is live and costs little."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from networking import live, peering, rotation, teams
from networking.models import (
    ApplyAttempt,
    Membership,
    Notification,
    NotificationRead,
    Organization,
    PeeringRequest,
    Project,
    SharedSecret,
)
from networking.tasks import forget_old_notifications, reconcile_project
from tests.conftest import World, bearer, globex_owner, issue_token, make_notifications, user

Status = PeeringRequest.Status

needs_redis = pytest.mark.skipif(
    not live.enabled(), reason="the poll's cache needs Redis (CI sets REDIS_URL)"
)


def client_of(person: User) -> Client:
    client = Client()
    client.force_login(person)
    return client


def titles(client: Client, **query: Any) -> list[str]:
    """The notifications the page lists, as a person reads them ("Unread: " marks unread)."""
    response = client.get(reverse("notification-list"), query)
    assert response.status_code == 200
    found = re.findall(r'<button type="submit" class="notice-title">(.*?)</button>', response.text)
    return [html.unescape(re.sub(r"<[^>]+>", "", title)) for title in found]


def poll(client: Client, since: str | None = None) -> Any:
    query = {"since": since} if since is not None else {}
    return client.get(reverse("notifications-live"), query, HTTP_HX_REQUEST="true")


def badge(client: Client) -> str:
    """What the header's count shows ("" when there is nothing unread)."""
    response = poll(client)
    assert response.status_code == 200
    found = re.search(r'<span id="inbox-count"[^>]*?( hidden)?>(.*?)<span', response.text)
    assert found is not None
    return "" if found.group(1) else found.group(2)


def since_of(response: Any) -> str:
    found = re.search(r"\?since=([0-9a-z-]+)", response.text)
    assert found is not None
    return found.group(1)


@pytest.fixture
def reports(world: World) -> Project:
    """A second Globex project, free to ask Acme's Storefront to peer (the world's Analytics
    already has a request pending with it)."""
    return Project.objects.create(organization=world.globex, name="Reports")


def request_from_globex(world: World, reports: Project) -> PeeringRequest:
    return peering.request_peering(
        reports, world.project.uid, "Reports reads the storefront's orders.", actor=globex_owner()
    )


def open_notification(client: Client, title_part: str) -> Any:
    notification = Notification.objects.get(title__contains=title_part)
    return client.post(reverse("notification-open"), {"notification": notification.pk})


class TestPeeringEvents:
    def test_a_request_tells_the_other_organizations_owners_that_it_waits_for_them(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        request_from_globex(world, reports)
        expected = "Unread: Globex asks to peer Reports with Storefront"
        assert titles(client_for("owner")) == [expected]
        # Only owners can accept: nobody else is told it needs them.
        for role in ("member", "viewer", "outsider", "support"):
            assert titles(client_for(role)) == [], role
        # The requester's side asked: it is not news to them.
        assert titles(client_of(globex_owner())) == []
        page = client_for("owner").get(reverse("notification-list")).text
        assert "Reports reads the storefront" in page  # their reason
        assert "Acme / Storefront" in page

    def test_acceptance_tells_support_and_ends_the_wait_for_acceptance(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        request = request_from_globex(world, reports)
        peering.accept(request, actor=user(world, "owner"), project=world.project)
        assert titles(client_for("support")) == [
            "Unread: Peering request waiting for your decision: Reports ↔ Storefront"
        ]
        owner_page = client_for("owner").get(reverse("notification-list")).text
        assert "Resolved" in owner_page
        # Customers never see support's queue items.
        for role in ("owner", "member", "viewer", "outsider"):
            assert not any("your decision" in t for t in titles(client_for(role))), role

    def test_a_request_within_one_organization_goes_to_support_only(
        self, world: World, client_for: Any
    ) -> None:
        Project.objects.create(organization=world.acme, name="Warehouse")
        target = Project.objects.get(name="Warehouse")
        peering.request_peering(world.project, target.uid, "Jobs.", actor=user(world, "owner"))
        assert titles(client_for("support")) == [
            "Unread: Peering request waiting for your decision: Storefront ↔ Warehouse"
        ]
        assert titles(client_for("owner")) == []

    def test_approval_and_activation_tell_both_organizations_every_role(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        request = request_from_globex(world, reports)
        peering.accept(request, actor=user(world, "owner"), project=world.project)
        peering.approve(request, staff=user(world, "support"))
        for client in (client_for("viewer"), client_of(globex_owner())):
            assert "Unread: Peering approved: Reports ↔ Storefront" in titles(client)
        assert "Resolved" in client_for("support").get(reverse("notification-list")).text
        peering.record_applied(world.project, {request.pk})
        peering.record_applied(reports, {request.pk})
        assert PeeringRequest.objects.get(pk=request.pk).status == Status.ACTIVE
        for client in (client_for("member"), client_of(globex_owner())):
            assert titles(client)[0] == "Unread: Peering active: Reports ↔ Storefront"
        assert titles(client_for("outsider")) == []

    def test_a_rejection_carries_supports_reason(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        request = request_from_globex(world, reports)
        peering.accept(request, actor=user(world, "owner"), project=world.project)
        peering.reject(request, staff=user(world, "support"), reason="Use the public URL.")
        assert titles(client_of(globex_owner()))[0] == (
            "Unread: Peering rejected: Reports ↔ Storefront"
        )
        assert "Use the public URL." in client_for("viewer").get(reverse("notification-list")).text

    def test_a_revocation_tells_both_sides_but_is_no_news_to_who_revoked(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        request = request_from_globex(world, reports)
        peering.accept(request, actor=user(world, "owner"), project=world.project)
        peering.approve(request, staff=user(world, "support"))
        peering.revoke(request, actor=user(world, "owner"), project=world.project)
        revoked = "Peering revoked: Reports ↔ Storefront"
        assert titles(client_for("owner"))[0] == revoked  # read: they did it
        assert titles(client_for("member"))[0] == f"Unread: {revoked}"
        assert titles(client_of(globex_owner()))[0] == f"Unread: {revoked}"

    def test_each_links_to_the_page_where_to_act(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        request_from_globex(world, reports)
        response = open_notification(client_for("owner"), "asks to peer")
        assert response.status_code == 302
        assert response["Location"] == reverse("project-peering", args=[world.project.uid])


class TestSyncFailure:
    def break_the_backend(self, manifests: Path, settings: Any) -> None:
        blocker = manifests / "not-a-folder"
        blocker.write_text("")
        settings.MANIFESTS_DIR = blocker  # a permanent error: no retry is scheduled

    def test_a_failed_sync_is_told_once_per_episode(
        self, world: World, manifests: Path, settings: Any, client_for: Any
    ) -> None:
        self.break_the_backend(manifests, settings)
        for _ in range(3):  # failing again, on beat's resync or the Retry button: no news
            assert reconcile_project.apply(args=(world.project.pk,)).get() == "failed"
            world.project.retry_sync()
        failed = "Unread: Storefront could not be synced to the cluster"
        assert titles(client_for("member")) == [failed]
        assert (
            "Could not write manifests"
            in client_for("owner").get(reverse("notification-list")).text
        )
        # Those who can press Retry are told; a viewer cannot.
        assert titles(client_for("viewer")) == []
        assert titles(client_of(globex_owner())) == []
        response = open_notification(client_for("member"), "could not be synced")
        assert response["Location"] == reverse("project-sync", args=[world.project.uid])

        # It recovers: the notification says so, and the next failure is a new episode.
        settings.MANIFESTS_DIR = manifests
        assert reconcile_project.apply(args=(world.project.pk,)).get() == "applied"
        assert "Resolved" in client_for("member").get(reverse("notification-list")).text
        self.break_the_backend(manifests, settings)
        Project.objects.filter(pk=world.project.pk).update(generation=world.project.generation + 1)
        assert reconcile_project.apply(args=(world.project.pk,)).get() == "failed"
        assert titles(client_for("owner")) == [failed, failed]  # the new one, and the old
        assert Notification.objects.filter(kind=Notification.Kind.SYNC_FAILED).count() == 2

    def test_a_failure_that_will_be_retried_is_not_news_yet(
        self, world: World, manifests: Path
    ) -> None:
        from networking.cluster.errors import ClusterError
        from networking.cluster.reconcile import ReconcileFailed, record_failure

        failure = ReconcileFailed(
            ClusterError("The cluster is busy."),
            generation=world.project.generation,
            changes=[],
            started_at=timezone.now().timestamp(),
        )
        record_failure(world.project.pk, failure, retry_in=5.0)
        assert not Notification.objects.exists()
        record_failure(world.project.pk, failure, retry_in=None)
        assert Notification.objects.get().kind == Notification.Kind.SYNC_FAILED

    def test_a_failure_healed_meanwhile_is_history_not_news(
        self, world: World, manifests: Path
    ) -> None:
        """A pass that started after the failing one and applied its generation already
        healed it (its lease ended before the failure was written): the failure goes to the
        history only. A later pass of an older generation heals nothing."""
        from networking.cluster.errors import ClusterError
        from networking.cluster.reconcile import ReconcileFailed, record_failure

        generation = world.project.generation
        started = (timezone.now() - timedelta(seconds=5)).timestamp()
        Project.objects.filter(pk=world.project.pk).update(
            applied_generation=generation, applied_at=timezone.now()
        )
        busy = ClusterError("The cluster is busy.")
        failure = ReconcileFailed(busy, generation=generation, changes=[], started_at=started)
        record_failure(world.project.pk, failure, retry_in=None)
        assert Project.objects.get(pk=world.project.pk).sync_error == ""
        assert not Notification.objects.exists()
        attempts = ApplyAttempt.objects.filter(project=world.project)
        assert list(attempts.values_list("result", flat=True)) == [ApplyAttempt.Result.FAILED]

        newer = ReconcileFailed(busy, generation=generation + 1, changes=[], started_at=started)
        record_failure(world.project.pk, newer, retry_in=None)
        assert Project.objects.get(pk=world.project.pk).sync_error == "The cluster is busy."
        assert Notification.objects.get().kind == Notification.Kind.SYNC_FAILED


class TestRotationStuck:
    def rotating(self, world: World, *, started_ago: timedelta) -> SharedSecret:
        rotation.start_rotation(world.secret, actor=user(world, "owner"))
        SharedSecret.objects.filter(pk=world.secret.pk).update(
            phase_started_at=timezone.now() - started_ago
        )
        return SharedSecret.objects.prefetch_related("services").get(pk=world.secret.pk)

    def test_a_rotation_waiting_on_a_workload_past_the_threshold_is_told_once(
        self, world: World, settings: Any, client_for: Any
    ) -> None:
        settings.ROTATION_STUCK_AFTER_SECONDS = 600
        secret = self.rotating(world, started_ago=timedelta(minutes=5))
        rotation.advance_ready([secret], {"api"})
        assert titles(client_for("owner")) == []  # waiting, but not for long yet
        secret = self.rotating_for(world, timedelta(minutes=11))
        for _ in range(3):  # every pass while it waits: told once
            rotation.advance_ready([secret], {"api"})
        stuck = "Unread: Rotation of INTERNAL_API_SECRET is waiting for api"
        assert titles(client_for("member")) == [stuck]
        assert titles(client_for("viewer")) == []
        response = open_notification(client_for("owner"), "Rotation of")
        assert response["Location"] == reverse(
            "secret-detail", args=[world.project.uid, world.secret.pk]
        )
        # The workload rolls out: the rotation moves on and the notification says it is over.
        rotation.advance_ready([secret], set())
        assert "Resolved" in client_for("member").get(reverse("notification-list")).text

    def rotating_for(self, world: World, started_ago: timedelta) -> SharedSecret:
        SharedSecret.objects.filter(pk=world.secret.pk).update(
            phase_started_at=timezone.now() - started_ago
        )
        return SharedSecret.objects.prefetch_related("services").get(pk=world.secret.pk)


class TestWhoSeesWhat:
    def test_a_removed_member_sees_nothing_of_the_organization_any_more(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        request = request_from_globex(world, reports)
        peering.accept(request, actor=user(world, "owner"), project=world.project)
        peering.approve(request, staff=user(world, "support"))
        member = client_for("member")
        assert titles(member) != []
        assert badge(member) == "1"
        membership = Membership.objects.get(user=user(world, "member"), organization=world.acme)
        teams.remove(world.acme, membership.pk, actor=user(world, "owner"))
        assert titles(member) == []
        assert badge(member) == ""
        notification = Notification.objects.get(
            kind=Notification.Kind.PEERING_APPROVED, organization=world.acme
        )
        response = member.post(reverse("notification-open"), {"notification": notification.pk})
        assert response.status_code == 404

    def test_someone_who_joins_later_sees_the_organizations_notifications(
        self, world: World, reports: Project
    ) -> None:
        request = request_from_globex(world, reports)
        peering.accept(request, actor=user(world, "owner"), project=world.project)
        peering.approve(request, staff=user(world, "support"))
        newcomer = User.objects.create_user("newcomer", password="pw")
        assert titles(client_of(newcomer)) == []
        Membership.objects.create(user=newcomer, organization=world.acme, role="viewer")
        assert titles(client_of(newcomer)) == ["Unread: Peering approved: Reports ↔ Storefront"]

    def test_another_organizations_notification_cannot_be_opened(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        request_from_globex(world, reports)
        for role in ("outsider", "member", "viewer", "support"):
            response = open_notification(client_for(role), "asks to peer")
            assert response.status_code == 404, role

    def test_the_api_lists_a_tokens_organization_only(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        request = request_from_globex(world, reports)
        peering.accept(request, actor=user(world, "owner"), project=world.project)
        peering.approve(request, staff=user(world, "support"))
        owner = globex_owner()
        Membership.objects.create(user=owner, organization=world.acme, role="viewer")
        initech = Organization.objects.get(slug="initech")
        Membership.objects.create(user=owner, organization=initech, role="owner")
        token = issue_token(owner, initech, "owner", "initech-only")
        listed = Client().get("/api/v1/notifications", headers=bearer(token))
        assert listed.status_code == 200
        assert listed.json()["items"] == []
        token = issue_token(owner, world.globex, "owner", "globex-only")
        items = Client().get("/api/v1/notifications", headers=bearer(token)).json()["items"]
        assert [(item["organization"], item["project_name"]) for item in items] == [
            ("globex", "Reports")
        ]
        assert items[0]["url"] == reverse("project-peering", args=[reports.uid])
        assert items[0]["unread"] is True
        support = issue_token(user(world, "support"), None, "support", "support")
        answer = Client().get("/api/v1/notifications", headers=bearer(support)).json()
        assert [item["kind"] for item in answer["items"]] == ["peering_pending_support"]


class TestReading:
    def test_the_api_lists_only_the_unread_ones_when_asked_however_old(self, world: World) -> None:
        """``unread=true`` filters on the server: one unread under pages of read ones is
        found in one request (the CLI's ``--unread``)."""
        waiting = make_notifications(world, 1)[0]
        read = make_notifications(world, 60)
        owner = user(world, "owner")
        NotificationRead.objects.bulk_create(
            NotificationRead(user=owner, notification=notification) for notification in read
        )
        token = issue_token(owner, world.acme, "owner", "unread-only")
        answer = (
            Client()
            .get("/api/v1/notifications", {"unread": "true", "limit": "5"}, headers=bearer(token))
            .json()
        )
        assert [item["title"] for item in answer["items"]] == [waiting.title]
        assert answer["next_before"] is None and answer["unread_count"] == 1
        everything = (
            Client().get("/api/v1/notifications", {"limit": 5}, headers=bearer(token)).json()
        )
        assert waiting.title not in [item["title"] for item in everything["items"]]

    def test_the_header_counts_whats_unread_and_opening_one_reads_it(
        self, world: World, client_for: Any
    ) -> None:
        make_notifications(world, 3)
        owner, member = client_for("owner"), client_for("member")
        assert badge(owner) == "3"
        response = open_notification(owner, "number 1")
        assert response.status_code == 302
        assert badge(owner) == "2"
        assert "Peering approved: number 1" in titles(owner)
        assert "Unread: Peering approved: number 1" not in titles(owner)
        assert badge(member) == "3"  # read state is each person's own

    def test_mark_all_as_read_reads_what_the_page_showed_not_what_came_after(
        self, world: World, client_for: Any
    ) -> None:
        shown = make_notifications(world, 2)
        owner = client_for("owner")
        page = owner.get(reverse("notification-list")).text
        assert "Mark all as read" in page
        # An older page offers no "all": it never showed the newest.
        older = owner.get(reverse("notification-list"), {"before": shown[-1].pk}).text
        assert "Peering approved: number 0" in older and "Mark all as read" not in older
        up_to = re.search(r'name="up_to" value="(\d+)"', page)
        assert up_to is not None and int(up_to.group(1)) == shown[-1].pk  # what the page showed
        arrived_later = make_notifications(world, 1)[0]
        response = owner.post(reverse("notifications-mark-read"), {"up_to": up_to.group(1)})
        assert response.status_code == 302
        assert titles(owner) == [
            f"Unread: {arrived_later.title}",
            "Peering approved: number 1",
            "Peering approved: number 0",
        ]
        assert badge(owner) == "1"
        # A post without the page's marker (tampered, or garbled) marks nothing.
        for garbled in ({}, {"up_to": "all"}, {"up_to": "9" * 40}, {"up_to": "1\x00"}):
            response = owner.post(reverse("notifications-mark-read"), garbled, follow=True)
            assert "Nothing was marked as read" in response.text
        assert badge(owner) == "1"
        owner.post(reverse("notifications-mark-read"), {"up_to": arrived_later.pk})
        assert badge(owner) == ""
        assert "Mark all as read" not in owner.get(reverse("notification-list")).text

    def test_an_empty_list_says_what_will_show_up_here(self, client_for: Any) -> None:
        page = client_for("viewer").get(reverse("notification-list")).text
        assert "Nothing needs you right now." in page
        assert "Mark all as read" not in page

    def test_every_page_has_the_notifications_link_and_its_live_count(
        self, world: World, client_for: Any
    ) -> None:
        page = client_for("viewer").get(reverse("project-list")).text
        assert f'href="{reverse("notification-list")}"' in page
        assert f'hx-get="{reverse("notifications-live")}"' in page
        assert 'hx-trigger="load, every 5s' in page

    def test_many_notifications_cost_a_bounded_number_of_queries(
        self, world: World, client_for: Any, django_assert_max_num_queries: Any
    ) -> None:
        make_notifications(world, 600)
        owner = client_for("owner")
        with django_assert_max_num_queries(9):
            response = owner.get(reverse("notification-list"))
        assert response.text.count('class="notice-title"') == 25
        assert "100 or more unread" in response.text
        with django_assert_max_num_queries(7):
            assert badge(owner) == "99+"
        older = re.search(r'href="([^"]*\?before=\d+)"', response.text)
        assert older is not None
        second = owner.get(html.unescape(older.group(1))).text
        assert second.count('class="notice-title"') == 25
        assert "number 574" in second and "number 575" not in second


class TestRetention:
    def test_beat_forgets_what_is_older_than_the_retention_but_not_what_goes_on(
        self, world: World, client_for: Any, settings: Any
    ) -> None:
        settings.NOTIFICATION_RETENTION_DAYS = 90
        long_ago = timezone.now() - timedelta(days=91)
        old, _recent, _ongoing = Notification.objects.bulk_create(
            Notification(
                organization=world.acme,
                project=world.project,
                kind=kind,
                title=title,
                episode=episode,
                created_at=created_at,
            )
            for kind, title, episode, created_at in (
                (Notification.Kind.PEERING_APPROVED, "Peering approved long ago", "", long_ago),
                (Notification.Kind.PEERING_ACTIVE, "Peering active this week", "", timezone.now()),
                (
                    Notification.Kind.SYNC_FAILED,
                    "Storefront failing since spring",
                    "sync-x",
                    long_ago,
                ),
            )
        )
        owner = client_for("owner")
        open_notification(owner, "Peering approved long ago")  # a read mark goes with it

        assert forget_old_notifications.apply().get() == 1

        assert titles(owner) == [
            "Unread: Storefront failing since spring",
            "Unread: Peering active this week",
        ]
        assert not Notification.objects.filter(pk=old.pk).exists()


class TestTheLivePoll:
    @needs_redis
    def test_nothing_new_is_answered_from_the_cache_without_the_database(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        owner = client_for("owner")
        since = since_of(poll(owner))
        with CaptureQueriesContext(connection) as queries:
            response = poll(owner, since)
        assert response.status_code == 204
        assert queries.captured_queries == []
        # A request arrives for Acme's owners: the next poll brings the count.
        request_from_globex(world, reports)
        response = poll(owner, since)
        assert response.status_code == 200
        assert re.search(r'<span id="inbox-count"[^>]*hx-swap-oob[^>]*>1<', response.text)
        newer = since_of(response)
        assert poll(owner, newer).status_code == 204
        # Reading it (in another tab) is news to this tab too.
        open_notification(owner, "asks to peer")
        assert poll(owner, newer).status_code == 200

    @needs_redis
    def test_a_removed_member_s_open_page_hears_of_it_at_once(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        """Taken out of the organization, their open page's count stops showing its unread
        notifications at the next poll, not once the cached scope lapses."""
        request = request_from_globex(world, reports)
        peering.accept(request, actor=user(world, "owner"), project=world.project)
        peering.approve(request, staff=user(world, "support"))
        member = client_for("member")
        since = since_of(poll(member))
        assert poll(member, since).status_code == 204
        membership = Membership.objects.get(user=user(world, "member"), organization=world.acme)
        teams.remove(world.acme, membership.pk, actor=user(world, "owner"))
        response = poll(member, since)
        assert response.status_code == 200
        assert badge(member) == ""

    @needs_redis
    def test_news_for_someone_else_stays_no_news(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        viewer = client_for("viewer")
        since = since_of(poll(viewer))
        request_from_globex(world, reports)  # for Acme's owners only
        # The organization's token moved, so the database is asked, and says: still none.
        response = poll(viewer, since)
        assert re.search(r'<span id="inbox-count"[^>]*hx-swap-oob[^>]* hidden>', response.text)
        assert poll(viewer, since_of(response)).status_code == 204

    @override_settings(
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    )
    def test_without_a_shared_cache_the_database_answers(
        self, world: World, reports: Project, client_for: Any
    ) -> None:
        owner = client_for("owner")
        since = since_of(poll(owner))
        assert poll(owner, since).status_code == 204
        request_from_globex(world, reports)
        assert poll(owner, since).status_code == 200

    def test_a_page_left_open_after_signing_out_stops_polling(self) -> None:
        assert poll(Client()).status_code == 286  # htmx's "stop polling"
        response = Client().get(reverse("notifications-live"))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
