"""VPC peering: the request rules, the state machine, who may move it, and the emails."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from networking import peering
from networking.models import (
    AuditEvent,
    Membership,
    Organization,
    PeeringNotification,
    PeeringRequest,
    Project,
)
from networking.tasks import (
    expire_peering_requests,
    send_peering_notification,
    send_pending_notifications,
)
from tests.conftest import World, globex_owner, user

Status = PeeringRequest.Status


def fresh(request: PeeringRequest) -> PeeringRequest:
    return PeeringRequest.objects.get(pk=request.pk)


@pytest.fixture
def hobby_project(world: World) -> Project:
    organization = Organization.objects.get(slug="initech")
    return Project.objects.create(organization=organization, name="Side project")


class TestRequest:
    def request(self, world: World, target: str, justification: str = "We need it.") -> Any:
        return peering.request_peering(
            world.project, target, justification, actor=user(world, "owner")
        )

    def test_within_one_organization_it_goes_straight_to_support(self, world: World) -> None:
        second = Project.objects.create(organization=world.acme, name="Search")
        created = self.request(world, second.uid)
        assert created.status == Status.PENDING_SUPPORT
        assert created.history[0]["by"] == "owner"

    def test_across_organizations_the_other_side_accepts_first(
        self, world: World, hobby_project: Project
    ) -> None:
        globex_project = Project.objects.create(organization=world.globex, name="Search")
        created = self.request(world, f"  {globex_project.uid.upper()} ")
        assert created.status == Status.PENDING_ACCEPTANCE

    @pytest.mark.parametrize(
        ("target", "message"),
        [
            ("self", "can’t be peered with itself"),
            ("nosuchproject", "No Enterprise project has the ID"),
            ("hobby", "No Enterprise project has the ID"),
            ("pending", "already pending"),
        ],
    )
    def test_it_refuses_with_a_reason(
        self, world: World, hobby_project: Project, target: str, message: str
    ) -> None:
        uid = {
            "self": world.project.uid,
            "nosuchproject": "zzzzzzzzzzzz",
            "hobby": hobby_project.uid,
            "pending": world.other_project.uid,  # world.peering is pending for this pair
        }[target]
        with pytest.raises(peering.PeeringRefused, match=message):
            self.request(world, uid)

    def test_an_unknown_id_and_another_plans_project_get_the_same_answer(
        self, world: World, hobby_project: Project
    ) -> None:
        """Otherwise any Enterprise owner could find out which IDs exist, and on what plan."""
        answers = []
        for uid in ("zzzzzzzzzzzz", hobby_project.uid):
            with pytest.raises(peering.PeeringRefused) as refused:
                self.request(world, uid)
            answers.append(str(refused.value).replace(uid, "<id>"))
        assert answers[0] == answers[1]

    def test_a_member_of_the_other_plans_organization_is_told_its_plan(
        self, world: World, hobby_project: Project
    ) -> None:
        """Who belongs to Initech already sees its projects and plan: tell them what to do."""
        Membership.objects.create(
            user=user(world, "owner"), organization=hobby_project.organization, role="member"
        )
        with pytest.raises(peering.PeeringRefused) as refused:
            self.request(world, hobby_project.uid)
        assert str(refused.value) == (
            "Side project belongs to Initech, which is on the Hobby plan: VPC peering needs "
            "both projects on the Enterprise plan. Once an owner of Initech has upgraded it "
            "to Enterprise, request again."
        )
        assert refused.value.code == "forbidden"

    def test_a_stranger_is_told_both_causes_and_what_to_do_about_each(
        self, world: World, hobby_project: Project
    ) -> None:
        with pytest.raises(peering.PeeringRefused) as refused:
            self.request(world, hobby_project.uid)
        message = str(refused.value)
        assert "Check the ID with the other team" in message
        assert "not on the Enterprise plan" in message and "ask its owner to upgrade" in message
        assert "Initech" not in message and "Side project" not in message

    def test_an_active_pair_is_refused(self, world: World) -> None:
        PeeringRequest.objects.filter(pk=world.peering.pk).update(status=Status.ACTIVE)
        with pytest.raises(peering.PeeringRefused, match="already peered"):
            self.request(world, world.other_project.uid)

    def test_other_plans_are_told_it_needs_enterprise(self, world: World) -> None:
        Organization.objects.filter(pk=world.acme.pk).update(plan=Organization.Plan.PRO)
        world.project.organization.refresh_from_db()
        with pytest.raises(peering.PeeringRefused, match="part of the Enterprise plan"):
            self.request(world, world.other_project.uid)

    def test_a_justification_is_required(self, world: World) -> None:
        second = Project.objects.create(organization=world.acme, name="Search")
        with pytest.raises(peering.PeeringRefused, match="Say why"):
            self.request(world, second.uid, justification="  ")

    def test_an_expired_request_does_not_block_a_new_one(self, world: World) -> None:
        PeeringRequest.objects.filter(pk=world.peering.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
        created = self.request(world, world.other_project.uid)
        assert created.status == Status.PENDING_ACCEPTANCE
        assert fresh(world.peering).status == Status.EXPIRED


def walk_to(world: World, status: str) -> PeeringRequest:
    """Move world.peering (Globex asks Acme) along the happy path up to ``status``."""
    request = world.peering
    owner = user(world, "owner")
    if status == Status.PENDING_ACCEPTANCE:
        return request
    peering.accept(request, actor=owner, project=world.project)
    if status == Status.PENDING_SUPPORT:
        return fresh(request)
    peering.approve(request, staff=user(world, "support"))
    if status == Status.APPROVED:
        return fresh(request)
    request = fresh(request)
    peering.record_applied(world.project, {request.pk})
    peering.record_applied(world.other_project, {request.pk})
    if status == Status.ACTIVE:
        return fresh(request)
    peering.revoke(request, actor=owner, project=world.project)
    if status == Status.REVOKING:
        return fresh(request)
    peering.record_applied(world.project, set())
    peering.record_applied(world.other_project, set())
    return fresh(request)


def test_the_whole_life_of_a_peering(world: World) -> None:
    final = walk_to(world, Status.REVOKED)
    assert [step["status"] for step in final.history] == [
        Status.PENDING_SUPPORT,
        Status.APPROVED,
        Status.ACTIVE,
        Status.REVOKING,
        Status.REVOKED,
    ]
    assert [step["by"] for step in final.history] == [
        "owner",
        "support",
        "system",
        "owner",
        "system",
    ]
    for project in (world.project, world.other_project):
        actions = set(AuditEvent.objects.filter(project=project).values_list("action", flat=True))
        assert {
            AuditEvent.Action.PEERING_ACCEPTED,
            AuditEvent.Action.PEERING_APPROVED,
            AuditEvent.Action.PEERING_ACTIVE,
            AuditEvent.Action.PEERING_REVOKED,
            AuditEvent.Action.PEERING_DISCONNECTED,
        } <= actions


def test_it_is_active_only_once_both_namespaces_hold_their_policy(world: World) -> None:
    request = walk_to(world, Status.APPROVED)
    peering.record_applied(world.project, {request.pk})
    assert fresh(request).status == Status.APPROVED
    peering.record_applied(world.other_project, {request.pk})
    assert fresh(request).status == Status.ACTIVE


ACTIONS = ["accept", "cancel", "approve", "reject", "revoke"]
ALLOWED: dict[str, set[str]] = {
    Status.PENDING_ACCEPTANCE: {"accept", "cancel"},
    Status.PENDING_SUPPORT: {"cancel", "approve", "reject"},
    Status.APPROVED: {"revoke"},
    Status.ACTIVE: {"revoke"},
    Status.REVOKING: set(),
    Status.REVOKED: set(),
}


def attempt(world: World, request: PeeringRequest, action: str) -> None:
    owner, staff = user(world, "owner"), user(world, "support")
    if action == "accept":
        peering.accept(request, actor=owner, project=world.project)
    elif action == "cancel":
        peering.cancel(request, actor=owner, project=world.project)
    elif action == "approve":
        peering.approve(request, staff=staff)
    elif action == "reject":
        peering.reject(request, staff=staff, reason="Not a valid use.")
    else:
        peering.revoke(request, actor=owner, project=world.project)


@pytest.mark.parametrize("status", list(ALLOWED))
@pytest.mark.parametrize("action", ACTIONS)
def test_every_transition_is_allowed_or_refused(world: World, status: str, action: str) -> None:
    request = walk_to(world, status)
    assert request.status == status
    if action in ALLOWED[status]:
        attempt(world, request, action)
        assert fresh(request).status != status
    else:
        with pytest.raises(peering.PeeringRefused):
            attempt(world, request, action)
        assert fresh(request).status == status


@pytest.mark.parametrize("final", [Status.CANCELLED, Status.REJECTED, Status.EXPIRED])
@pytest.mark.parametrize("action", ACTIONS)
def test_nothing_moves_a_closed_request(world: World, final: str, action: str) -> None:
    request = walk_to(world, Status.PENDING_SUPPORT)
    if final == Status.CANCELLED:
        peering.cancel(request, actor=user(world, "owner"), project=world.project)
    elif final == Status.REJECTED:
        peering.reject(request, staff=user(world, "support"), reason="No.")
    else:
        PeeringRequest.objects.filter(pk=request.pk).update(
            expires_at=timezone.now() - timedelta(minutes=1)
        )
        assert expire_peering_requests.apply().get() == 1
    with pytest.raises(peering.PeeringRefused):
        attempt(world, fresh(request), action)
    assert fresh(request).status == final


def test_approving_a_request_past_its_expiry_expires_it(world: World) -> None:
    request = walk_to(world, Status.PENDING_SUPPORT)
    PeeringRequest.objects.filter(pk=request.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    with pytest.raises(peering.PeeringRefused, match="expired"):
        peering.approve(fresh(request), staff=user(world, "support"))
    assert fresh(request).status == Status.EXPIRED


def test_the_requesting_side_cannot_accept_its_own_request(world: World) -> None:
    with pytest.raises(peering.PeeringRefused, match="Only the other organization"):
        peering.accept(world.peering, actor=globex_owner(), project=world.other_project)


def test_staff_who_belong_to_either_organization_cannot_decide(world: World) -> None:
    request = walk_to(world, Status.PENDING_SUPPORT)
    support = user(world, "support")
    Membership.objects.create(user=support, organization=world.globex, role="viewer")
    with pytest.raises(peering.PeeringRefused, match="You belong to Globex"):
        peering.approve(request, staff=support)
    assert fresh(request).status == Status.PENDING_SUPPORT


def test_a_non_staff_user_cannot_decide(world: World) -> None:
    request = walk_to(world, Status.PENDING_SUPPORT)
    with pytest.raises(peering.PeeringRefused, match="Only support staff"):
        peering.approve(request, staff=user(world, "owner"))


def test_a_rejection_needs_a_reason_the_customer_sees(world: World, owner_client: Client) -> None:
    request = walk_to(world, Status.PENDING_SUPPORT)
    with pytest.raises(peering.PeeringRefused, match="reason"):
        peering.reject(request, staff=user(world, "support"), reason=" ")
    peering.reject(request, staff=user(world, "support"), reason="Use the public API instead.")
    page = owner_client.get(reverse("project-peering", args=[world.project.uid]))
    assert "Use the public API instead." in page.content.decode()


class TestEmails:
    def test_each_decision_mails_both_owners_and_support(self, world: World) -> None:
        request = walk_to(world, Status.APPROVED)
        mail.outbox.clear()
        notification = request.notifications.get(event="approved")
        assert send_peering_notification.apply(args=(notification.pk,)).get() == 2
        customers, staff = mail.outbox
        assert sorted(customers.to) == ["owner@acme.example", "owner@globex.example"]
        assert staff.to == ["support@stackblaze.example"]
        assert "Peering approved" in customers.subject
        assert "moved there by support" in customers.body

    def test_transitions_enqueue_a_notification(
        self, world: World, django_capture_on_commit_callbacks: Any
    ) -> None:
        with django_capture_on_commit_callbacks() as callbacks:
            peering.accept(world.peering, actor=user(world, "owner"), project=world.project)
        # One message sent (the live pages' cache mark is no message).
        assert len([c for c in callbacks if c.__module__ != "networking.live"]) == 1

    def test_a_notification_delivered_twice_is_sent_once(self, world: World) -> None:
        request = walk_to(world, Status.APPROVED)
        notification = request.notifications.get(event="approved")
        mail.outbox.clear()
        assert send_peering_notification.apply(args=(notification.pk,)).get() == 2
        assert send_peering_notification.apply(args=(notification.pk,)).get() == 0
        assert len(mail.outbox) == 2

    def test_what_no_task_sent_is_sent_by_beat_once(self, world: World) -> None:
        # As after a broker outage: the rows are there, their tasks never ran.
        walk_to(world, Status.APPROVED)
        events = sorted(world.peering.notifications.values_list("event", flat=True))
        assert events == ["accepted", "approved"]
        PeeringNotification.objects.update(created_at=timezone.now() - timedelta(minutes=5))
        mail.outbox.clear()
        assert send_pending_notifications.apply().get() == 4  # owners and support, twice
        assert send_pending_notifications.apply().get() == 0
        assert not PeeringNotification.objects.filter(sent_at__isnull=True).exists()

    def test_a_failed_send_is_tried_again_later(self, world: World, settings: Any) -> None:
        request = walk_to(world, Status.APPROVED)
        notification = request.notifications.get(event="approved")
        settings.MAILERS = {
            "default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                        "OPTIONS": {"host": "127.0.0.1", "port": 1, "timeout": 2}}
        }  # fmt: skip
        with pytest.raises(ConnectionRefusedError):
            send_peering_notification.apply(args=(notification.pk,), throw=True)
        notification.refresh_from_db()
        assert notification.sent_at is None


class TestPages:
    def test_an_owner_requests_through_the_form(self, world: World, owner_client: Client) -> None:
        second = Project.objects.create(organization=world.acme, name="Search")
        response = owner_client.post(
            reverse("peering-request", args=[world.project.uid]),
            {"target": second.uid, "justification": "Search indexes the storefront."},
            follow=True,
        )
        assert "Waiting for support" in response.content.decode()
        assert PeeringRequest.objects.filter(target_project=second).exists()

    def test_a_refusal_is_shown_on_the_form(self, world: World, owner_client: Client) -> None:
        response = owner_client.post(
            reverse("peering-request", args=[world.project.uid]),
            {"target": world.project.uid, "justification": "x"},
        )
        assert response.status_code == 200
        assert "can’t be peered with itself" in response.content.decode()

    def test_what_an_action_said_is_in_the_part_that_refreshes(
        self, world: World, owner_client: Client
    ) -> None:
        """ "Requested. Waiting for support." describes the request as it stood: once support
        decides, the page's refresh must take it away, not leave it beside "Rejected"."""
        second = Project.objects.create(organization=world.acme, name="Search")
        response = owner_client.post(
            reverse("peering-request", args=[world.project.uid]),
            {"target": second.uid, "justification": "Search indexes the storefront."},
            follow=True,
        )
        html = response.content.decode()
        said = "Requested. Waiting for support."
        assert html.count(said) == 1
        assert html.index('<div id="peerings"') < html.index(said)
        assert html.index(said) < html.index('<h2 id="requests-title">')
        request = PeeringRequest.objects.get(target_project=second)
        peering.reject(request, staff=user(world, "support"), reason="Use the public URL.")
        url = reverse("project-peering", args=[world.project.uid])
        refreshed = owner_client.get(url, HTTP_HX_REQUEST="true").content.decode()
        assert "Rejected" in refreshed and said not in refreshed
        # A reload shows it no more either: it was said once.
        assert said not in owner_client.get(url).content.decode()

    def test_a_project_of_the_users_other_organization_is_refused_with_its_plan(
        self, world: World, owner_client: Client, hobby_project: Project
    ) -> None:
        Membership.objects.create(
            user=user(world, "owner"), organization=hobby_project.organization, role="owner"
        )
        response = owner_client.post(
            reverse("peering-request", args=[world.project.uid]),
            {"target": hobby_project.uid, "justification": "x"},
        )
        assert response.status_code == 200
        assert "which is on the Hobby plan" in response.content.decode()

    def test_other_plans_see_what_it_does_and_that_it_needs_enterprise(
        self, world: World, client_for: Any
    ) -> None:
        Organization.objects.filter(pk=world.acme.pk).update(plan=Organization.Plan.HOBBY)
        html = (
            client_for("owner")
            .get(reverse("project-peering", args=[world.project.uid]))
            .content.decode()
        )
        assert "VPC peering needs the Enterprise plan" in html
        assert "Request peering</button>" not in html

    def test_both_sides_see_every_state_and_who_moved_it(
        self, world: World, owner_client: Client
    ) -> None:
        walk_to(world, Status.ACTIVE)
        for client, project in (
            (owner_client, world.project),
            (world.client_for("anonymous"), world.other_project),
        ):
            if project == world.other_project:
                client.force_login(globex_owner())
            html = client.get(reverse("project-peering", args=[project.uid])).content.decode()
            assert "Active" in html
            assert "Approved, being connected · by support" in html
            assert "Waiting for support · by owner" in html

    def test_an_active_peering_lists_the_peers_services(
        self, world: World, owner_client: Client
    ) -> None:
        walk_to(world, Status.ACTIVE)
        html = owner_client.get(
            reverse("project-peering", args=[world.project.uid])
        ).content.decode()
        assert f"warehouse.{world.other_project.namespace}.svc.cluster.local:3306" in html

    def test_support_sees_the_queue_with_both_sides(self, world: World) -> None:
        walk_to(world, Status.PENDING_SUPPORT)
        html = world.client_for("support").get(reverse("support-queue")).content.decode()
        assert "Storefront ↔" in html or "Analytics ↔ Storefront" in html
        assert "Our analytics pipeline reads the storefront" in html
        assert "Enterprise" in html
        assert ">Approve<" in html

    def test_revoking_says_what_stops_working_before_it_acts(
        self, world: World, owner_client: Client
    ) -> None:
        walk_to(world, Status.ACTIVE)
        url = reverse("peering-revoke", args=[world.project.uid, world.peering.pk])
        page = owner_client.get(url).content.decode()
        assert "Revoke the peering with Analytics?" in page
        assert "can no longer reach the services of" in page
        assert "<code>api</code>" in page  # this project's services, by name
        # A POST without the confirmation's own field only shows the confirmation again.
        assert owner_client.post(url).status_code == 200
        assert PeeringRequest.objects.get(pk=world.peering.pk).status == Status.ACTIVE
        response = owner_client.post(url, {"confirm": "revoke"})
        assert response.status_code == 302
        assert PeeringRequest.objects.get(pk=world.peering.pk).status == Status.REVOKING

    def test_support_lands_on_the_queue_when_signing_in(self, world: World) -> None:
        response = Client().post(
            reverse("login"), {"username": "support", "password": "pw"}, follow=True
        )
        assert response.redirect_chain[-1][0] == reverse("support-queue")
        assert "Peering requests waiting for support" in response.content.decode()
        # Everyone else lands on their projects.
        owner = Client().post(
            reverse("login"), {"username": "owner", "password": "pw"}, follow=True
        )
        assert owner.redirect_chain[-1][0] == reverse("project-list")

    def test_the_queue_shows_each_requests_age_oldest_first(self, world: World) -> None:
        walk_to(world, Status.PENDING_SUPPORT)
        third = Project.objects.create(organization=world.acme, name="Search")
        newer = peering.request_peering(world.project, third.uid, "search needs it", actor=None)
        PeeringRequest.objects.filter(pk=world.peering.pk).update(
            created_at=timezone.now() - timedelta(days=3)
        )
        html = world.client_for("support").get(reverse("support-queue")).content.decode()
        assert "Waiting 3\xa0days" in html
        assert html.index(f'id="peering-{world.peering.pk}"') < html.index(
            f'id="peering-{newer.pk}"'
        )

    def test_a_request_just_made_waits_less_than_a_minute_not_0_minutes(self, world: World) -> None:
        walk_to(world, Status.PENDING_SUPPORT)
        html = world.client_for("support").get(reverse("support-queue")).content.decode()
        assert "Waiting less than a minute" in html
        assert "0\xa0minutes" not in html and "0 minutes" not in html

    def test_support_approves_and_rejects_from_the_queue(self, world: World) -> None:
        request = walk_to(world, Status.PENDING_SUPPORT)
        client = world.client_for("support")
        response = client.post(reverse("support-reject", args=[request.pk]), {"reason": ""})
        assert fresh(request).status == Status.PENDING_SUPPORT
        response = client.post(reverse("support-approve", args=[request.pk]), follow=True)
        assert "Approved" in response.content.decode()
        assert fresh(request).status == Status.APPROVED
        # A second approval is refused with a message, not an error page.
        response = client.post(reverse("support-approve", args=[request.pk]), follow=True)
        assert response.status_code == 200
        assert "it can’t be approved" in response.content.decode()

    def test_a_peering_of_other_projects_is_404_in_this_project(
        self, world: World, owner_client: Client
    ) -> None:
        url = reverse("peering-cancel", args=[world.project.uid, world.other_peering.pk])
        assert owner_client.post(url).status_code == 404
        assert fresh(world.other_peering).status == Status.PENDING_SUPPORT


class TestThePageCatchesUp:
    """The peerings refresh themselves while the worker connects or disconnects both sides."""

    def partial(self, world: World, client: Client) -> str:
        url = reverse("project-peering", args=[world.project.uid])
        return client.get(url, HTTP_HX_REQUEST="true").content.decode()

    def test_it_serves_only_the_peerings_to_htmx(self, world: World, owner_client: Client) -> None:
        walk_to(world, Status.APPROVED)
        html = self.partial(world, owner_client)
        assert html.lstrip().startswith('<div id="peerings"')
        assert "Approved, being connected" in html
        assert "<html" not in html
        # The request form is not swapped, so a refresh never wipes what the user is typing.
        assert "Request peering" not in html
        # Revoking asks first, on a page of its own.
        assert "Revoke peering…" in html

    def test_forms_in_the_swapped_part_carry_their_csrf_token(
        self, world: World, owner_client: Client
    ) -> None:
        html = self.partial(world, owner_client)  # world.peering awaits this side: Accept
        assert ">Accept<" in html
        assert 'name="csrfmiddlewaretoken"' in html

    @pytest.mark.parametrize("status", [Status.APPROVED, Status.ACTIVE, Status.REVOKING])
    def test_it_refreshes_whenever_the_project_changes(
        self, world: World, owner_client: Client, status: str
    ) -> None:
        """The page's poll (pages/test_live.py) fires project-changed; the list follows it, and
        the request form stays out of it."""
        walk_to(world, status)
        assert 'hx-trigger="project-changed from:body"' in self.partial(world, owner_client)
        page = owner_client.get(reverse("project-peering", args=[world.project.uid]))
        html = page.content.decode()
        assert 'hx-trigger="project-changed from:body"' in html
        assert "Request peering</button>" in html

    def test_the_other_sides_pass_moves_this_page_on(self, world: World) -> None:
        request = walk_to(world, Status.APPROVED)
        peering.record_applied(world.project, {request.pk})  # this side is done, not the other
        assert fresh(request).status == Status.APPROVED
        before = Project.objects.get(pk=world.project.pk).revision
        peering.record_applied(world.other_project, {request.pk})
        assert fresh(request).status == Status.ACTIVE
        assert Project.objects.get(pk=world.project.pk).revision > before

    def test_the_refresh_that_stops_polling_shows_the_peers_services(
        self, world: World, owner_client: Client
    ) -> None:
        walk_to(world, Status.ACTIVE)
        html = self.partial(world, owner_client)
        assert ">Active<" in html
        assert f"warehouse.{world.other_project.namespace}.svc.cluster.local:3306" in html

    def test_the_page_and_its_partial_are_cached_apart(
        self, world: World, owner_client: Client
    ) -> None:
        response = owner_client.get(reverse("project-peering", args=[world.project.uid]))
        assert "HX-Request" in response["Vary"]
