"""Twenty identical clicks at once, on every mutating endpoint, against a live threaded server.

Each case releases its requests together (a barrier) at a real multi-threaded server on the
test database, then checks what a user would notice: no 5xx, and one effect per real change
(one row, one audit event, one generation bump), the losers getting the message a single late
request would get. ``test_every_mutating_url_has_a_race`` fails when a POST URL has no case.
"""

from __future__ import annotations

import http.client
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from api.models import ApiToken
from networking import mtls, rotation
from networking.models import (
    ALIAS_EXTENSION,
    AuditEvent,
    CertificateAuthority,
    ConnectionTest,
    InboxState,
    Membership,
    NotificationRead,
    Organization,
    PeeringRequest,
    Project,
    ReferenceVariable,
    SecretRotation,
    Service,
    ServiceAlias,
    SharedSecret,
)
from tests.access.test_access_matrix import MATRIX
from tests.conftest import World, make_notifications, make_service

N = 20
Action = AuditEvent.Action

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks and concurrent writers need PostgreSQL (CI sets DATABASE_URL)",
)


@dataclass
class Click:
    role: str
    url: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Answer:
    status: int
    location: str
    body: str


class Browsers:
    """One signed-in cookie jar per role, usable from many threads at once."""

    def __init__(self, world: World, base_url: str) -> None:
        self.base = urlsplit(base_url)
        self.csrf = secrets.token_hex(16)  # 32 characters: a valid unmasked CSRF secret
        self.sessions: dict[str, str] = {}
        users = {**world.users, "globex-owner": User.objects.get(username="globex-owner")}
        for role, user in users.items():
            if user is not None:
                client = Client()
                client.force_login(user)
                self.sessions[role] = client.cookies["sessionid"].value

    def post(self, click: Click) -> Answer:
        cookies = [f"csrftoken={self.csrf}"]
        if click.role in self.sessions:
            cookies.append(f"sessionid={self.sessions[click.role]}")
        connection = http.client.HTTPConnection(
            self.base.hostname or "localhost", self.base.port, timeout=60
        )
        try:
            connection.request(
                "POST",
                click.url,
                body=urlencode(click.data, doseq=True),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Cookie": "; ".join(cookies),
                    "X-CSRFToken": self.csrf,
                },
            )
            response = connection.getresponse()
            return Answer(
                response.status,
                response.getheader("Location", ""),
                response.read().decode(errors="replace"),
            )
        finally:
            connection.close()

    def all_at_once(self, clicks: list[Click]) -> list[Answer]:
        barrier = threading.Barrier(len(clicks))
        answers: list[Answer | BaseException | None] = [None] * len(clicks)

        def run(index: int) -> None:
            try:
                barrier.wait(timeout=60)
                answers[index] = self.post(clicks[index])
            except BaseException as error:  # reported below, with the click that raised
                answers[index] = error

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clicks))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        done: list[Answer] = []
        for click, answer in zip(clicks, answers, strict=True):
            assert isinstance(answer, Answer), f"{click.url}: {answer!r}"
            done.append(answer)
        return done


def audit_count(action: str, **filters: Any) -> int:
    return AuditEvent.objects.filter(action=action, **filters).count()


def generation(project: Project) -> int:
    return Project.objects.values_list("generation", flat=True).get(pk=project.pk)


def once(world: World, action: str) -> Callable[[], None]:
    """Snapshot now; the returned check asserts one event and one generation bump since."""
    events, before = audit_count(action), generation(world.project)

    def check() -> None:
        assert audit_count(action) - events == 1
        assert generation(world.project) - before == 1

    return check


def active_peering(world: World) -> PeeringRequest:
    partner = Project.objects.create(organization=world.globex, name="Partner")
    return PeeringRequest.objects.create(
        requester_project=world.project,
        target_project=partner,
        requested_by=world.users["owner"],
        justification="Reads the catalogue.",
        status=PeeringRequest.Status.ACTIVE,
        requester_side_applied=True,
        target_side_applied=True,
        expires_at=timezone.now() + timedelta(days=7),
    )


# Each race: (the clicks, a check run after them). Everyone clicks the same thing, N times.
Race = tuple[list[Click], Callable[[list[Answer]], None]]


def race_login(world: World) -> Race:
    url = reverse("login")
    clicks = [Click("anonymous", url, {"username": "member", "password": "pw"})] * N

    def check(answers: list[Answer]) -> None:
        assert {answer.status for answer in answers} == {302}

    return clicks, check


def race_logout(world: World) -> Race:
    def check(answers: list[Answer]) -> None:
        assert {answer.status for answer in answers} == {302}

    return [Click("member", reverse("logout"))] * N, check


def race_project_create(world: World) -> Race:
    url = reverse("project-create", args=[world.acme.slug])
    before = audit_count(Action.PROJECT_CREATED)

    def check(answers: list[Answer]) -> None:
        assert Project.objects.filter(organization=world.acme, name="Payments").count() == 1
        assert audit_count(Action.PROJECT_CREATED) - before == 1
        assert sum(answer.status == 302 for answer in answers) == 1
        losers = [answer for answer in answers if answer.status != 302]
        assert all("already has a project named" in answer.body for answer in losers)

    return [Click("owner", url, {"name": "Payments"})] * N, check


def race_project_settings(world: World) -> Race:
    url = reverse("project-settings", args=[world.project.uid])
    before = audit_count(Action.PROJECT_RENAMED)

    def check(answers: list[Answer]) -> None:
        assert audit_count(Action.PROJECT_RENAMED) - before == 1
        assert Project.objects.get(pk=world.project.pk).name == "Storefront EU"

    return [Click("owner", url, {"name": "Storefront EU"})] * N, check


def race_project_sync_retry(world: World) -> Race:
    url = reverse("project-sync-retry", args=[world.project.uid])
    before = generation(world.project)

    def check(answers: list[Answer]) -> None:
        assert {answer.status for answer in answers} == {302}
        assert generation(world.project) == before  # a retry changes nothing desired

    return [Click("member", url)] * N, check


def race_service_create(world: World) -> Race:
    url = reverse("service-create", args=[world.project.uid])
    check_once = once(world, Action.SERVICE_CREATED)

    def check(answers: list[Answer]) -> None:
        check_once()
        assert Service.objects.filter(project=world.project, name="background-worker").count() == 1
        losers = [answer for answer in answers if answer.status != 302]
        assert len(losers) == N - 1
        assert all("background-worker.internal" in answer.body for answer in losers)

    data = {"display_name": "Background Worker", "kind": "private", "ports": "3000"}
    return [Click("member", url, data)] * N, check


def race_service_edit(world: World) -> Race:
    url = reverse("service-edit", args=[world.project.uid, world.api.pk])
    check_once = once(world, Action.SERVICE_RENAMED)

    def check(answers: list[Answer]) -> None:
        check_once()
        assert Service.objects.get(pk=world.api.pk).name == "gateway"

    return [Click("member", url, {"display_name": "Gateway", "ports": "8080"})] * N, check


def race_service_reference_add(world: World) -> Race:
    url = reverse("service-reference-add", args=[world.project.uid, world.postgres.pk])
    check_once = once(world, Action.REFERENCE_ADDED)

    def check(answers: list[Answer]) -> None:
        check_once()
        given = ReferenceVariable.objects.get(source=world.postgres, consumer=world.api)
        assert given.variable == "DATABASE_URL"
        assert sum(answer.status == 302 for answer in answers) == 1
        losers = [answer for answer in answers if answer.status != 302]
        assert all(
            "already receives the address of postgres" in answer.body
            or "just done by another request" in answer.body
            for answer in losers
        )

    return [Click("member", url, {"consumers": [world.api.pk]})] * N, check


def race_service_reference_remove(world: World) -> Race:
    reference = ReferenceVariable.objects.create(
        project=world.project, source=world.postgres, consumer=world.api, variable="DATABASE_URL"
    )
    url = reverse(
        "service-reference-remove", args=[world.project.uid, world.postgres.pk, reference.pk]
    )
    check_once = once(world, Action.REFERENCE_REMOVED)

    def check(answers: list[Answer]) -> None:
        check_once()
        assert not ReferenceVariable.objects.exists()
        assert {answer.status for answer in answers} <= {302, 404}

    return [Click("member", url)] * N, check


def renamed_with_an_old_hostname(world: World) -> ServiceAlias:
    """api renamed to gateway, api.internal kept resolving for a day."""
    world.api.display_name = "Gateway"
    world.api.full_clean()
    world.api.save_changes(actor=None, keep_old_name_for=timedelta(days=1))
    return ServiceAlias.objects.get(service=world.api, name="api")


def race_service_alias_extend(world: World) -> Race:
    alias = renamed_with_an_old_hostname(world)
    url = reverse("service-alias-extend", args=[world.project.uid, world.api.pk, alias.pk])

    def check(answers: list[Answer]) -> None:
        assert audit_count(Action.ALIAS_EXTENDED) == 1
        extended = ServiceAlias.objects.get(pk=alias.pk).expires_at
        assert extended - alias.expires_at == ALIAS_EXTENSION
        assert {answer.status for answer in answers} == {302}

    return [Click("member", url, {"seen": alias.expires_at.isoformat()})] * N, check


def race_service_alias_end(world: World) -> Race:
    alias = renamed_with_an_old_hostname(world)
    url = reverse("service-alias-end", args=[world.project.uid, world.api.pk, alias.pk])
    check_once = once(world, Action.ALIAS_ENDED)

    def check(answers: list[Answer]) -> None:
        check_once()
        assert not ServiceAlias.objects.filter(pk=alias.pk).exists()
        assert {answer.status for answer in answers} <= {302, 404}

    return [Click("owner", url)] * N, check


def test_an_old_hostname_stays_reserved_while_others_race_for_it(
    world: World, browsers: Browsers
) -> None:
    """A rename that keeps api.internal, at the same moment as nineteen creates of "api":
    whichever comes first, no second service ends up answering to api.internal."""
    edit = reverse("service-edit", args=[world.project.uid, world.api.pk])
    create = reverse("service-create", args=[world.project.uid])
    clicks = [Click("member", edit, {"display_name": "Gateway", "ports": "8080"})] + [
        Click("member", create, {"display_name": "api", "kind": "private", "ports": "3000"})
    ] * (N - 1)
    answers = browsers.all_at_once(clicks)
    assert_no_server_error(clicks, answers)
    holders = list(Service.objects.filter(project=world.project, name="api"))
    alias = ServiceAlias.objects.filter(project=world.project, name="api").first()
    if alias is not None:  # the rename went first: the old name is reserved for a day
        assert holders == []
        assert alias.service_id == world.api.pk
        refused = [answer for answer in answers[1:] if answer.status != 302]
        assert len(refused) == N - 1
    else:  # a create went first: the rename was refused, api is still api
        assert [service.pk for service in holders] == [world.api.pk]


def race_service_delete(world: World) -> Race:
    url = reverse("service-delete", args=[world.project.uid, world.postgres.pk])
    check_once = once(world, Action.SERVICE_DELETED)

    def check(answers: list[Answer]) -> None:
        check_once()
        assert not Service.objects.filter(pk=world.postgres.pk).exists()
        assert {answer.status for answer in answers} <= {302, 404}

    return [Click("member", url)] * N, check


def race_project_delete(world: World) -> Race:
    url = reverse("project-delete", args=[world.project.uid])
    events = audit_count(Action.PROJECT_DELETED)

    def check(answers: list[Answer]) -> None:
        assert audit_count(Action.PROJECT_DELETED) - events == 1
        assert not Project.objects.filter(pk=world.project.pk).exists()
        # The first deletes; the late ones find no project (a 404 page), never an error.
        assert {answer.status for answer in answers} <= {302, 404}

    return [Click("owner", url, {"confirm_name": world.project.name})] * N, check


def race_team_invite(world: World) -> Race:
    newcomer = User.objects.create_user("newcomer", email="new@acme.example", password="pw")
    url = reverse("org-team-invite", args=[world.acme.slug])

    def check(answers: list[Answer]) -> None:
        assert Membership.objects.filter(user=newcomer, organization=world.acme).count() == 1
        assert audit_count(Action.MEMBER_ADDED) == 1
        assert {answer.status for answer in answers} == {302}

    return [Click("owner", url, {"who": "newcomer", "role": "member"})] * N, check


def race_team_role(world: World) -> Race:
    viewer = Membership.objects.get(organization=world.acme, user__username="viewer")
    url = reverse("org-team-role", args=[world.acme.slug, viewer.pk])

    def check(answers: list[Answer]) -> None:
        assert Membership.objects.get(pk=viewer.pk).role == "member"
        assert audit_count(Action.MEMBER_ROLE_CHANGED) == 1

    return [Click("owner", url, {"role": "member"})] * N, check


def race_team_remove(world: World) -> Race:
    viewer = Membership.objects.get(organization=world.acme, user__username="viewer")
    url = reverse("org-team-remove", args=[world.acme.slug, viewer.pk])

    def check(answers: list[Answer]) -> None:
        assert not Membership.objects.filter(pk=viewer.pk).exists()
        assert audit_count(Action.MEMBER_REMOVED) == 1

    return [Click("owner", url)] * N, check


def race_token_create(world: World) -> Race:
    url = reverse("org-token-create", args=[world.acme.slug])

    def check(answers: list[Answer]) -> None:
        assert ApiToken.objects.filter(organization=world.acme, name="ci-deploy").count() == 1
        assert audit_count(Action.TOKEN_CREATED) == 1
        shown = [answer for answer in answers if "Copy it now" in answer.body]
        assert len(shown) == 1
        losers = [answer for answer in answers if answer not in shown]
        assert all("already have a token named" in answer.body for answer in losers)

    data = {"name": "ci-deploy", "role": "member"}
    return [Click("member", url, data)] * N, check


def race_token_revoke(world: World) -> Race:
    token, _ = ApiToken.issue(
        user=world.users["member"], organization=world.acme, name="ci", role="member"
    )
    url = reverse("org-token-revoke", args=[world.acme.slug, token.pk])

    def check(answers: list[Answer]) -> None:
        assert audit_count(Action.TOKEN_REVOKED) == 1
        assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
        assert {answer.status for answer in answers} == {302}

    return [Click("owner", url)] * N, check


def race_service_reveal(world: World) -> Race:
    url = reverse("service-reveal", args=[world.project.uid, world.postgres.pk])
    before = audit_count(Action.CREDENTIALS_REVEALED)

    def check(answers: list[Answer]) -> None:
        # Every reveal is one: each is shown and audited.
        assert {answer.status for answer in answers} == {200}
        assert audit_count(Action.CREDENTIALS_REVEALED) - before == N

    return [Click("member", url)] * N, check


def race_service_connection_test(world: World) -> Race:
    url = reverse("service-connection-test", args=[world.project.uid, world.api.pk])
    before = audit_count(Action.CONNECTION_TESTED)

    def check(answers: list[Answer]) -> None:
        # One test runs (a test changes nothing: no generation bump); every click is taken
        # to it, a redirect to its result.
        assert audit_count(Action.CONNECTION_TESTED) - before == 1
        assert ConnectionTest.objects.filter(service=world.api).count() == 1
        assert {answer.status for answer in answers} == {302}

    return [Click("member", url)] * N, check


def race_secret_create(world: World) -> Race:
    url = reverse("secret-create", args=[world.project.uid])
    check_once = once(world, Action.SECRET_CREATED)

    def check(answers: list[Answer]) -> None:
        check_once()
        assert SharedSecret.objects.filter(project=world.project, name="WEBHOOK_KEY").count() == 1
        losers = [answer for answer in answers if answer.status != 302]
        assert len(losers) == N - 1
        assert all("already has a secret named WEBHOOK_KEY" in answer.body for answer in losers)

    data = {"name": "WEBHOOK_KEY", "services": [world.api.pk]}
    return [Click("owner", url, data)] * N, check


def race_secret_edit(world: World) -> Race:
    url = reverse("secret-edit", args=[world.project.uid, world.secret.pk])
    check_once = once(world, Action.SECRET_UPDATED)

    def check(answers: list[Answer]) -> None:
        check_once()
        names = set(world.secret.services.values_list("name", flat=True))
        assert names == {"api", "postgres"}

    data = {"services": [world.api.pk, world.postgres.pk]}
    return [Click("owner", url, data)] * N, check


def race_secret_reveal(world: World) -> Race:
    url = reverse("secret-reveal", args=[world.project.uid, world.secret.pk])

    def check(answers: list[Answer]) -> None:
        assert {answer.status for answer in answers} == {200}
        assert audit_count(Action.SECRET_REVEALED) == N

    return [Click("owner", url)] * N, check


def race_secret_rotate(world: World) -> Race:
    url = reverse("secret-rotate", args=[world.project.uid, world.secret.pk])
    before = audit_count(Action.ROTATION_STARTED)

    def check(answers: list[Answer]) -> None:
        # One rotation started. (Not the generation or version: a worker may already be
        # moving that rotation through its phases, each a change of its own.)
        assert audit_count(Action.ROTATION_STARTED) - before == 1
        assert SecretRotation.objects.filter(secret=world.secret).count() == 1
        assert {answer.status for answer in answers} == {302}  # the others told it runs

    return [Click("owner", url)] * N, check


def race_mtls_enable(world: World) -> Race:
    url = reverse("mtls-enable", args=[world.project.uid])

    def check(answers: list[Answer]) -> None:
        # One CA, one audit event: the others are told it is on already.
        assert audit_count(Action.MTLS_ENABLED) == 1
        assert CertificateAuthority.objects.filter(project=world.project).count() == 1
        assert {answer.status for answer in answers} == {302}

    return [Click("owner", url)] * N, check


def race_mtls_rotate_ca(world: World) -> Race:
    mtls.enable(world.project, actor=None)
    url = reverse("mtls-rotate-ca", args=[world.project.uid])

    def check(answers: list[Answer]) -> None:
        # One new CA: the others are told a rotation runs.
        assert audit_count(Action.CA_ROTATION_STARTED) == 1
        assert CertificateAuthority.objects.filter(project=world.project).count() == 2
        assert {answer.status for answer in answers} == {302}

    return [Click("owner", url)] * N, check


def race_service_mtls_callers(world: World) -> Race:
    mtls.enable(world.project, actor=None)
    url = reverse("service-mtls-callers", args=[world.project.uid, world.postgres.pk])
    data = {"accept": "listed", "services": [str(world.api.pk)]}

    def check(answers: list[Answer]) -> None:
        assert audit_count(Action.MTLS_CALLERS_CHANGED) == 1
        assert mtls.callers_of([Service.objects.get(pk=world.postgres.pk)]) == {
            world.postgres.pk: ["api"]
        }
        assert {answer.status for answer in answers} == {302}

    return [Click("owner", url, data)] * N, check


def race_secret_end_grace(world: World) -> Race:
    Service.objects.filter(pk=world.api.pk).update(
        workload={"kind": "Deployment", "name": "api", "secrets": "", "rolled_out": True}
    )
    rotation.start_rotation(world.secret, actor=None)
    rotation.advance(world.secret.pk)
    assert rotation.advance(world.secret.pk) == SharedSecret.Phase.GRACE
    url = reverse("secret-end-grace", args=[world.project.uid, world.secret.pk])

    def check(answers: list[Answer]) -> None:
        assert audit_count(Action.ROTATION_GRACE_ENDED) == 1
        assert {answer.status for answer in answers} == {302}  # the others told it is over

    return [Click("owner", url)] * N, check


def race_secret_delete(world: World) -> Race:
    url = reverse("secret-delete", args=[world.project.uid, world.secret.pk])
    check_once = once(world, Action.SECRET_DELETED)

    def check(answers: list[Answer]) -> None:
        check_once()
        assert not SharedSecret.objects.filter(pk=world.secret.pk).exists()
        assert {answer.status for answer in answers} <= {302, 404}

    return [Click("owner", url)] * N, check


def race_peering_request(world: World) -> Race:
    target = Project.objects.create(organization=world.globex, name="Ledger")
    url = reverse("peering-request", args=[world.project.uid])
    data = {"target": target.uid, "justification": "Ledger reads orders."}

    def check(answers: list[Answer]) -> None:
        pair = PeeringRequest.objects.filter(requester_project=world.project, target_project=target)
        assert pair.count() == 1
        assert audit_count(Action.PEERING_REQUESTED, project=world.project) == 1
        losers = [answer for answer in answers if answer.status != 302]
        assert len(losers) == N - 1
        assert all("already pending" in answer.body for answer in losers)

    return [Click("owner", url, data)] * N, check


def race_peering_accept(world: World) -> Race:
    url = reverse("peering-accept", args=[world.project.uid, world.peering.pk])

    def check(answers: list[Answer]) -> None:
        assert audit_count(Action.PEERING_ACCEPTED, project=world.project) == 1
        peering = PeeringRequest.objects.get(pk=world.peering.pk)
        assert peering.status == PeeringRequest.Status.PENDING_SUPPORT

    return [Click("owner", url)] * N, check


def race_peering_cancel(world: World) -> Race:
    url = reverse("peering-cancel", args=[world.project.uid, world.peering.pk])

    def check(answers: list[Answer]) -> None:
        assert audit_count(Action.PEERING_CANCELLED, project=world.project) == 1

    return [Click("owner", url)] * N, check


def race_peering_revoke(world: World) -> Race:
    peering = active_peering(world)
    url = reverse("peering-revoke", args=[world.project.uid, peering.pk])
    before = generation(world.project)

    def check(answers: list[Answer]) -> None:
        assert audit_count(Action.PEERING_REVOKED, project=world.project) == 1
        assert generation(world.project) - before == 1

    return [Click("owner", url, {"confirm": "revoke"})] * N, check


def race_support_approve(world: World) -> Race:
    url = reverse("support-approve", args=[world.other_peering.pk])

    def check(answers: list[Answer]) -> None:
        assert audit_count(Action.PEERING_APPROVED, project=world.other_project) == 1

    return [Click("support", url)] * N, check


def race_support_reject(world: World) -> Race:
    url = reverse("support-reject", args=[world.other_peering.pk])

    def check(answers: list[Answer]) -> None:
        assert audit_count(Action.PEERING_REJECTED, project=world.other_project) == 1

    return [Click("support", url, {"reason": "Not needed."})] * N, check


def race_notification_open(world: World) -> Race:
    notification = make_notifications(world, 1)[0]
    url = reverse("notification-open")

    def check(answers: list[Answer]) -> None:
        link = reverse("project-peering", args=[world.project.uid])
        assert {(answer.status, answer.location) for answer in answers} == {(302, link)}
        assert NotificationRead.objects.filter(notification=notification).count() == 1

    return [Click("owner", url, {"notification": notification.pk})] * N, check


def race_notifications_mark_read(world: World) -> Race:
    shown = make_notifications(world, 3)
    owner = world.users["owner"]
    assert owner is not None
    NotificationRead.objects.create(user=owner, notification=shown[1])
    url = reverse("notifications-mark-read")

    def check(answers: list[Answer]) -> None:
        assert {answer.status for answer in answers} == {302}
        assert InboxState.objects.get(user=owner).read_up_to == shown[-1].pk
        assert not NotificationRead.objects.filter(user=owner).exists()

    return [Click("owner", url, {"up_to": shown[-1].pk})] * N, check


RACES: dict[str, Callable[[World], Race]] = {
    "login": race_login,
    "logout": race_logout,
    "project-create": race_project_create,
    "project-settings": race_project_settings,
    "project-sync-retry": race_project_sync_retry,
    "service-create": race_service_create,
    "service-edit": race_service_edit,
    "service-delete": race_service_delete,
    "project-delete": race_project_delete,
    "org-team-invite": race_team_invite,
    "org-team-role": race_team_role,
    "org-team-remove": race_team_remove,
    "org-token-create": race_token_create,
    "org-token-revoke": race_token_revoke,
    "service-reveal": race_service_reveal,
    "service-reference-add": race_service_reference_add,
    "service-reference-remove": race_service_reference_remove,
    "service-alias-extend": race_service_alias_extend,
    "service-alias-end": race_service_alias_end,
    "secret-create": race_secret_create,
    "secret-edit": race_secret_edit,
    "secret-reveal": race_secret_reveal,
    "secret-rotate": race_secret_rotate,
    "secret-end-grace": race_secret_end_grace,
    "secret-delete": race_secret_delete,
    "peering-request": race_peering_request,
    "peering-accept": race_peering_accept,
    "peering-cancel": race_peering_cancel,
    "peering-revoke": race_peering_revoke,
    "support-approve": race_support_approve,
    "service-connection-test": race_service_connection_test,
    "support-reject": race_support_reject,
    "notification-open": race_notification_open,
    "mtls-enable": race_mtls_enable,
    "mtls-rotate-ca": race_mtls_rotate_ca,
    "service-mtls-callers": race_service_mtls_callers,
    "notifications-mark-read": race_notifications_mark_read,
}


def test_every_mutating_url_has_a_race() -> None:
    mutating = {name for name, method in MATRIX if method == "POST"}
    assert mutating - set(RACES) == set(), "add a race for these POST URLs"
    assert set(RACES) - mutating == set(), "RACES names URLs that no longer take POST"


@pytest.fixture
def browsers(world: World, live_server: Any) -> Browsers:
    Organization.objects.filter(pk=world.acme.pk).update(plan=Organization.Plan.ENTERPRISE)
    return Browsers(world, live_server.url)


def assert_no_server_error(clicks: list[Click], answers: list[Answer]) -> None:
    failed = [
        (click.url, answer.status, answer.body[:300])
        for click, answer in zip(clicks, answers, strict=True)
        if answer.status >= 500
    ]
    assert failed == []


@pytest.mark.parametrize("name", sorted(RACES))
def test_twenty_identical_clicks_have_one_effect(
    world: World, browsers: Browsers, name: str
) -> None:
    clicks, check = RACES[name](world)
    answers = browsers.all_at_once(clicks)
    assert_no_server_error(clicks, answers)
    check(answers)


def test_both_sides_requesting_the_same_peering_make_one_request(
    world: World, browsers: Browsers
) -> None:
    target = Project.objects.create(organization=world.globex, name="Ledger")
    justification = {"justification": "Ledger reads orders."}
    clicks = [
        Click("owner", reverse("peering-request", args=[world.project.uid]),
              {"target": target.uid, **justification}),
        Click("globex-owner", reverse("peering-request", args=[target.uid]),
              {"target": world.project.uid, **justification}),
    ] * (N // 2)  # fmt: skip
    answers = browsers.all_at_once(clicks)
    assert_no_server_error(clicks, answers)
    open_requests = PeeringRequest.objects.filter(
        requester_project__in=[world.project, target], status__in=PeeringRequest.OPEN
    )
    assert open_requests.count() == 1
    assert sum(answer.status == 302 for answer in answers) == 1
    assert all("already pending" in answer.body for answer in answers if answer.status != 302)


def test_attaching_a_service_while_it_is_deleted_never_fails(
    world: World, browsers: Browsers
) -> None:
    doomed = make_service(world.project, "Doomed", Service.Kind.PRIVATE, [9000])
    attach = Click(
        "owner",
        reverse("secret-edit", args=[world.project.uid, world.secret.pk]),
        {"services": [world.api.pk, doomed.pk]},
    )
    delete = Click("owner", reverse("service-delete", args=[world.project.uid, doomed.pk]))
    clicks = [attach, delete] * (N // 2)
    answers = browsers.all_at_once(clicks)
    assert_no_server_error(clicks, answers)
    assert not Service.objects.filter(pk=doomed.pk).exists()
    assert audit_count(Action.SERVICE_DELETED) == 1
    # Whoever lost the race was told the service is gone, and the secret still reaches api.
    assert set(world.secret.services.values_list("name", flat=True)) == {"api"}
    refused = [
        answer for click, answer in zip(clicks, answers, strict=True)
        if click is attach and answer.status == 200
    ]  # fmt: skip
    assert all("deleted meanwhile" in answer.body for answer in refused)
