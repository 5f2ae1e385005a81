"""A member removed, or given a lower role, while their requests are on their way: nothing of
theirs is written after the change commits.

One request at a time first (SQLite too): let in, then the team change, then the write. Then
many at once against a live threaded server on PostgreSQL: the requests are let in (their
membership checked) and made to wait on the project's row, which the test holds, so each is
past the access check when an owner removes the member; the row is then let go. What a user
would notice: every one of them refused with the reason, no service and no audit event of the
member's after the ``member.removed`` event, and the next request refused at the door.
``test_the_burst_from_the_issue`` is the report's own race, with nothing held.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import Http404
from django.test import RequestFactory
from django.urls import reverse

from api.models import ApiToken
from networking import teams
from networking.access import get_organization_for_user, get_project_for_user
from networking.models import AuditEvent, Membership, Project, Service
from tests.access.test_concurrency import Browsers, Click
from tests.conftest import World
from tests.waiting import wait_until

N = 20
Action = AuditEvent.Action

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks and concurrent writers need PostgreSQL (CI sets DATABASE_URL)",
)

Answer = tuple[int, dict[str, Any]]


def call(base_url: str, method: str, path: str, token: str, body: Any = None) -> Answer:
    base = urlsplit(base_url)
    conn = http.client.HTTPConnection(base.hostname or "localhost", base.port, timeout=60)
    try:
        conn.request(
            method,
            path,
            body=json.dumps(body) if body is not None else None,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


class Requests:
    """Requests sent from threads of their own; ``answers`` once ``join`` returns."""

    def __init__(self, send: Callable[[int], Any], count: int) -> None:
        self.answers: list[Any] = [None] * count

        def run(index: int) -> None:
            try:
                self.answers[index] = send(index)
            except BaseException as error:  # reported by join
                self.answers[index] = error

        self.threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def join(self) -> list[Any]:
        for thread in self.threads:
            thread.join(120)
        for answer in self.answers:
            assert answer is not None and not isinstance(answer, BaseException), answer
        return self.answers


def waiting_for_a_lock() -> int:
    """How many sessions of the test database wait for a row lock now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        (waiting,) = cursor.fetchone()
    return int(waiting)


@contextmanager
def project_row_held(project: Project) -> Iterator[None]:
    """Hold the project's row (as a slow change would) until the block ends: every change to
    the project waits for it, past the access check."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        from django.db import transaction

        try:
            with transaction.atomic():
                Project.objects.select_for_update().get(pk=project.pk)
                held.set()
                assert release.wait(120)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        yield
    finally:
        release.set()
        holder.join(30)


def member_of(world: World) -> tuple[User, Membership]:
    member = world.users["member"]
    assert member is not None
    return member, Membership.objects.get(user=member, organization=world.acme)


def owner_of(world: World) -> User:
    owner = world.users["owner"]
    assert owner is not None
    return owner


def events_of(user: User) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(actor=user).order_by("id"))


def removed_event(world: World) -> AuditEvent:
    return AuditEvent.objects.get(organization=world.acme, action=Action.MEMBER_REMOVED)


def creates(world: World, base_url: str, token: str, count: int = N) -> Requests:
    path = f"/api/v1/projects/{world.project.uid}/services"
    return Requests(
        lambda i: call(
            base_url,
            "POST",
            path,
            token,
            {"name": f"Worker {i}", "kind": "private", "ports": [3000]},
        ),
        count,
    )


def let_in(user: User, project: Project) -> Any:
    """The acting user of a page request of ``user``'s that passed the access check for
    changing services."""
    request = RequestFactory().post("/")
    request.user = user
    get_project_for_user(request, project.uid).require(Membership.can_change_services)
    return request.user


def new_service(project: Project) -> Service:
    service = Service(project=project, display_name="Worker", kind="private", ports=[3000])
    service.full_clean(exclude=["name"])
    return service


def test_a_token_let_in_just_before_its_holder_is_removed_is_told_so(world: World) -> None:
    """The token passed authentication; the removal (which revokes it) commits before the
    project is looked up: the answer is the removal's reason, not "No such project"."""
    member, membership = member_of(world)
    token, _ = ApiToken.issue(user=member, organization=world.acme, name="ci", role="member")
    request = RequestFactory().get("/")
    request.user = member
    request.api_token = token  # type: ignore[attr-defined]  # as api.auth leaves it
    teams.remove(world.acme, membership.pk, actor=owner_of(world))
    with pytest.raises(PermissionDenied, match="no longer a member of Acme"):
        get_project_for_user(request, world.project.uid)
    # Another organization's project stays unknown to it.
    with pytest.raises(Http404):
        get_project_for_user(request, world.other_project.uid)


def test_a_member_removed_after_the_access_check_writes_nothing(world: World) -> None:
    member, membership = member_of(world)
    actor = let_in(member, world.project)
    teams.remove(world.acme, membership.pk, actor=owner_of(world))
    with pytest.raises(PermissionDenied, match="no longer a member of Acme"):
        new_service(world.project).create(actor=actor)
    assert not Service.objects.filter(project=world.project, name="worker").exists()


def test_a_member_made_a_viewer_after_the_access_check_writes_nothing(world: World) -> None:
    member, membership = member_of(world)
    actor = let_in(member, world.project)
    teams.change_role(world.acme, membership.pk, Membership.Role.VIEWER, actor=owner_of(world))
    with pytest.raises(PermissionDenied, match="changed to viewer"):
        new_service(world.project).create(actor=actor)
    assert not Service.objects.filter(project=world.project, name="worker").exists()


def test_the_system_is_no_member_and_is_not_asked(world: World) -> None:
    new_service(world.project).create(actor=None)
    assert Service.objects.filter(project=world.project, name="worker").exists()


def test_an_owner_removed_after_the_access_check_changes_no_one_s_role(world: World) -> None:
    """A team change confirms its owner too: removed meanwhile, they change nothing."""
    owner = owner_of(world)
    Membership.objects.filter(organization=world.acme, user__username="member").update(
        role=Membership.Role.OWNER
    )
    request = RequestFactory().post("/")
    request.user = owner
    organization, _ = get_organization_for_user(request, world.acme.slug)
    own = Membership.objects.get(user=owner, organization=world.acme)
    teams.remove(world.acme, own.pk, actor=world.users["member"])
    viewer = Membership.objects.get(organization=world.acme, user__username="viewer")
    with pytest.raises(PermissionDenied, match="no longer a member of Acme"):
        teams.change_role(organization, viewer.pk, Membership.Role.OWNER, actor=request.user)
    assert Membership.objects.get(pk=viewer.pk).role == Membership.Role.VIEWER


@pytest.mark.parametrize("change", ["leave", "step down"])
def test_an_owner_may_leave_or_step_down_themselves(world: World, change: str) -> None:
    """Their own change alters their own membership: it is confirmed before, not after."""
    owner = owner_of(world)
    Membership.objects.filter(organization=world.acme, user__username="member").update(
        role=Membership.Role.OWNER
    )
    own = Membership.objects.get(user=owner, organization=world.acme)
    client = world.client_for("owner")
    if change == "leave":
        url, data = reverse("org-team-remove", args=[world.acme.slug, own.pk]), {}
        action = Action.MEMBER_REMOVED
    else:
        url, data = reverse("org-team-role", args=[world.acme.slug, own.pk]), {"role": "member"}
        action = Action.MEMBER_ROLE_CHANGED
    response = client.post(url, data)
    assert response.status_code == 302
    assert AuditEvent.objects.filter(actor=owner, action=action).count() == 1
    if change == "leave":
        assert not Membership.objects.filter(pk=own.pk).exists()
    else:
        assert Membership.objects.get(pk=own.pk).role == Membership.Role.MEMBER


@postgresql_only
def test_creates_waiting_when_the_member_is_removed_write_nothing(
    world: World, api_tokens: dict[str, str | None], live_server: Any
) -> None:
    token = api_tokens["member"]
    assert token is not None
    member, membership = member_of(world)
    before = len(events_of(member))
    with project_row_held(world.project):
        burst = creates(world, live_server.url, token)
        wait_until(lambda: waiting_for_a_lock() >= N, "every create to wait for the project")
        assert teams.remove(world.acme, membership.pk, actor=owner_of(world))
    answers = burst.join()

    assert {status for status, _ in answers} == {403}, answers
    assert all(
        body["detail"].startswith("You are no longer a member of Acme: you were removed")
        for _, body in answers
    )
    assert not Service.objects.filter(project=world.project, name__startswith="worker-").exists()
    assert len(events_of(member)) == before
    # The next request is refused at the door: the removal revoked the token.
    status, body = call(
        live_server.url, "GET", f"/api/v1/projects/{world.project.uid}/services", token
    )
    assert status == 401
    assert "was revoked" in body["detail"]


@postgresql_only
def test_a_reveal_waiting_when_the_member_is_removed_shows_nothing(
    world: World, api_tokens: dict[str, str | None], live_server: Any
) -> None:
    token = api_tokens["member"]
    assert token is not None
    _, membership = member_of(world)
    path = f"/api/v1/projects/{world.project.uid}/services/{world.postgres.pk}/reveal"
    with project_row_held(world.project):
        reveal = Requests(lambda _: call(live_server.url, "POST", path, token), 1)
        wait_until(lambda: waiting_for_a_lock() >= 1, "the reveal to wait for the project")
        assert teams.remove(world.acme, membership.pk, actor=owner_of(world))
    [(status, body)] = reveal.join()

    assert status == 403
    assert "no longer a member of Acme" in body["detail"]
    password = world.postgres.database_password
    assert password is not None and password.reveal() not in json.dumps(body)
    assert not AuditEvent.objects.filter(action=Action.CREDENTIALS_REVEALED).exists()


@postgresql_only
def test_creates_waiting_when_the_member_becomes_a_viewer_write_nothing(
    world: World, api_tokens: dict[str, str | None], live_server: Any
) -> None:
    token = api_tokens["member"]
    assert token is not None
    member, membership = member_of(world)
    before = len(events_of(member))
    with project_row_held(world.project):
        burst = creates(world, live_server.url, token)
        wait_until(lambda: waiting_for_a_lock() >= N, "every create to wait for the project")
        assert teams.change_role(
            world.acme, membership.pk, Membership.Role.VIEWER, actor=owner_of(world)
        )
    answers = burst.join()

    assert {status for status, _ in answers} == {403}, answers
    assert all(
        body["detail"].startswith("Your role in Acme changed to viewer while this request")
        for _, body in answers
    )
    assert not Service.objects.filter(project=world.project, name__startswith="worker-").exists()
    assert len(events_of(member)) == before
    # The token still works, with the role its holder has now.
    status, body = call(
        live_server.url,
        "POST",
        f"/api/v1/projects/{world.project.uid}/services",
        token,
        {"name": "Late", "kind": "private", "ports": [3000]},
    )
    assert status == 403
    assert body["detail"] == "Your role in this organization can’t make this change."


@postgresql_only
def test_a_demotion_that_still_allows_the_change_lets_it_through(
    world: World, api_tokens: dict[str, str | None], live_server: Any
) -> None:
    """An owner made a member while creating services: a member may create them, so they are."""
    token = api_tokens["owner"]
    assert token is not None
    owner = owner_of(world)
    Membership.objects.filter(organization=world.acme, user__username="member").update(
        role=Membership.Role.OWNER
    )  # someone else stays an owner
    membership = Membership.objects.get(user=owner, organization=world.acme)
    member = world.users["member"]
    with project_row_held(world.project):
        burst = creates(world, live_server.url, token, count=3)
        wait_until(lambda: waiting_for_a_lock() >= 3, "every create to wait for the project")
        assert teams.change_role(world.acme, membership.pk, Membership.Role.MEMBER, actor=member)
    answers = burst.join()

    assert {status for status, _ in answers} == {201}, answers
    assert Service.objects.filter(project=world.project, name__startswith="worker-").count() == 3


@postgresql_only
def test_a_removal_waits_for_the_writes_already_confirmed(
    world: World, api_tokens: dict[str, str | None], live_server: Any
) -> None:
    """A change that confirmed the membership before the removal began commits first: its
    event comes before ``member.removed``, and the removal does not deadlock with it."""
    token = api_tokens["member"]
    assert token is not None
    member, membership = member_of(world)
    confirmed, go_on = threading.Event(), threading.Event()
    original = AuditEvent.record.__func__  # type: ignore[attr-defined]

    def record_then_wait(cls: type[AuditEvent], /, **kwargs: Any) -> AuditEvent:
        event: AuditEvent = original(cls, **kwargs)
        if kwargs["action"] == Action.SERVICE_CREATED:
            confirmed.set()
            assert go_on.wait(60)
        return event

    removal: list[bool] = []

    def remove() -> None:
        try:
            removal.append(teams.remove(world.acme, membership.pk, actor=owner_of(world)))
        finally:
            connection.close()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AuditEvent, "record", classmethod(record_then_wait))
        create = creates(world, live_server.url, token, count=1)
        assert confirmed.wait(30)
        remover = threading.Thread(target=remove)
        remover.start()
        wait_until(lambda: waiting_for_a_lock() >= 1, "the removal to wait for the create")
        go_on.set()
        [(status, _)] = create.join()
        remover.join(30)

    assert status == 201
    assert removal == [True]
    created = AuditEvent.objects.get(actor=member, action=Action.SERVICE_CREATED)
    assert created.pk < removed_event(world).pk


@postgresql_only
def test_the_burst_from_the_issue(
    world: World, api_tokens: dict[str, str | None], live_server: Any
) -> None:
    """Twenty creates at once with a member's token while an owner removes the member (the
    removal starts once the first create is answered): whatever was written, was written
    before the removal; the rest were refused with the reason."""
    token = api_tokens["member"]
    assert token is not None
    member, membership = member_of(world)
    path = f"/api/v1/projects/{world.project.uid}/services"
    barrier = threading.Barrier(N)
    first_answer = threading.Event()

    def create(index: int) -> Answer:
        barrier.wait(60)
        answer = call(
            live_server.url,
            "POST",
            path,
            token,
            {"name": f"Worker {index}", "kind": "private", "ports": [3000]},
        )
        first_answer.set()
        return answer

    burst = Requests(create, N)
    assert first_answer.wait(60)
    assert teams.remove(world.acme, membership.pk, actor=owner_of(world))
    answers = burst.join()

    removed = removed_event(world)
    assert [event for event in events_of(member) if event.pk > removed.pk] == []
    assert all(event.created_at <= removed.created_at for event in events_of(member))
    created = [status for status, _ in answers if status == 201]
    assert len(created) == Service.objects.filter(name__startswith="worker-").count() >= 1
    refused = [(status, body["detail"]) for status, body in answers if status != 201]
    assert all(
        (status == 403 and "no longer a member of Acme" in detail)
        or (status == 401 and "was revoked" in detail)
        for status, detail in refused
    ), refused


@postgresql_only
def test_a_page_waiting_when_the_member_is_removed_writes_nothing(
    world: World, live_server: Any
) -> None:
    """The same through the dashboard, with a signed-in browser."""
    member, membership = member_of(world)
    browsers = Browsers(world, live_server.url)
    url = reverse("service-create", args=[world.project.uid])
    with project_row_held(world.project):
        page = Requests(
            lambda _: browsers.post(
                Click("member", url, {"display_name": "Worker", "kind": "private", "ports": "3000"})
            ),
            1,
        )
        wait_until(lambda: waiting_for_a_lock() >= 1, "the create to wait for the project")
        assert teams.remove(world.acme, membership.pk, actor=owner_of(world))
    [answer] = page.join()

    assert answer.status == 403
    assert "no longer a member of Acme" in answer.body
    assert not Service.objects.filter(project=world.project, name="worker").exists()
    assert not AuditEvent.objects.filter(actor=member, action=Action.SERVICE_CREATED).exists()
