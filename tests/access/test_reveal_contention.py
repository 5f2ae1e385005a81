"""A reveal is never refused because other writes to its project deadlocked.

A reveal writes one thing, its audit event, and moves the project's revision so open pages
show it: it waits in line for the project's row like any change. When the writers ahead of it
deadlock with each other, the first in line is part of the cycle (it holds the row's place in
line), and, having waited longest, it is the one PostgreSQL finds the cycle from and aborts.
Nothing of it was saved, so it is tried again (``contention.retried_after_deadlock``).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import OperationalError, connection, transaction

from networking import contention
from networking.crypto import SecretText
from networking.models import AuditEvent, Project, Service, SharedSecret
from tests.access.test_removed_members import Requests, call, waiting_for_a_lock
from tests.conftest import World
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks and deadlocks need PostgreSQL (CI sets DATABASE_URL)",
)

Action = AuditEvent.Action


def in_a_thread(work: Any) -> tuple[threading.Thread, list[BaseException | None]]:
    """``work`` in a thread of its own, with what it raised (None if nothing) once joined."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
            outcome.append(None)
        except BaseException as error:  # returned to the test
            outcome.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("what", ["credentials", "secret"])
def test_a_reveal_in_line_behind_writers_that_deadlock_is_answered(
    world: World, api_tokens: dict[str, str | None], live_server: Any, what: str
) -> None:
    """A change holds the project's row, as a rename does before it locks the service; the
    reveal waits for the row; the worker stamps the service (``Project.touch_services``) and
    queues for the row behind the reveal; the change then asks for the service. The change and
    the worker deadlock, and one of them loses; the reveal is answered."""
    SharedSecret.objects.filter(pk=world.secret.pk).update(value=SecretText.seal("s3cret-value"))
    if what == "credentials":
        path = f"/api/v1/projects/{world.project.uid}/services/{world.postgres.pk}/reveal"
        token, shown = api_tokens["member"], world.postgres.database_password
        assert shown is not None
        value, action = shown.reveal(), Action.CREDENTIALS_REVEALED
    else:
        path = f"/api/v1/projects/{world.project.uid}/secrets/{world.secret.pk}/reveal"
        token, value, action = api_tokens["owner"], "s3cret-value", Action.SECRET_REVEALED
    assert token is not None
    held, ask_for_the_service = threading.Event(), threading.Event()

    def change() -> None:
        with transaction.atomic():
            Project.objects.select_for_update().get(pk=world.project.pk)
            held.set()
            assert ask_for_the_service.wait(60)
            Service.objects.select_for_update().get(pk=world.api.pk)

    changing, change_outcome = in_a_thread(change)
    assert held.wait(30)
    reveal = Requests(lambda _: call(live_server.url, "POST", path, token), 1)
    wait_until(lambda: waiting_for_a_lock() >= 1, "the reveal to wait for the project's row")
    stamping, worker_outcome = in_a_thread(
        lambda: Project.touch_services(world.project.pk, Service.objects.filter(pk=world.api.pk))
    )
    wait_until(lambda: waiting_for_a_lock() >= 2, "the worker to queue behind the reveal")
    ask_for_the_service.set()
    [(status, body)] = reveal.join()
    changing.join(30)
    stamping.join(30)

    assert status == 200, body
    assert value in str(body)
    assert AuditEvent.objects.filter(action=action).count() == 1
    # The writers did deadlock: one of them was aborted for it (that one is theirs to retry).
    lost = [error for error in (*change_outcome, *worker_outcome) if error is not None]
    assert len(lost) == 1 and contention.lost_a_race(lost[0]), lost
    assert isinstance(lost[0], OperationalError)
