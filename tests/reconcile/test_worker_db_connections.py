"""A worker keeps its database connection from task to task, as a web process does from
request to request, and still drops one that is too old or broken; asking whether it is
broken costs no round trip while nothing waits on its socket."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery import signals
from celery.fixups.django import DjangoWorkerFixup  # type: ignore[attr-defined]  # not in the stubs
from django.db import connection, connections
from django.db.backends.postgresql.base import DatabaseWrapper as DjangoPostgreSQL

from dashboard.celery import app
from networking.tasks import reconcile_project
from tests.waiting import wait_until


@pytest.fixture
def worker_fixup() -> Iterator[None]:
    """Celery's Django fixup, installed as ``celery worker`` installs it."""
    fixup = DjangoWorkerFixup(app)
    fixup.install()
    try:
        yield
    finally:
        signals.task_prerun.disconnect(fixup.on_task_prerun)
        signals.task_postrun.disconnect(fixup.on_task_postrun)
        signals.worker_process_init.disconnect(fixup.on_worker_process_init)
        signals.beat_embedded_init.disconnect(fixup.close_database)


def around_a_task() -> None:
    """What the worker's tracer sends before and after running a task."""
    task = reconcile_project
    signals.task_prerun.send(sender=task, task_id="t", task=task, args=(), kwargs={})
    signals.task_postrun.send(sender=task, task_id="t", task=task, args=(), kwargs={})


@pytest.fixture
def kept_connections() -> Iterator[None]:
    """Connections kept for a minute, as DATABASE_URL configures them (SQLite's default is 0)."""
    saved = connection.settings_dict["CONN_MAX_AGE"]
    connection.close()
    connection.settings_dict["CONN_MAX_AGE"] = 60
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["CONN_MAX_AGE"] = saved


@pytest.mark.django_db(transaction=True)
def test_a_task_reuses_the_connection_of_the_last(
    worker_fixup: None, kept_connections: None
) -> None:
    connection.ensure_connection()
    before = connection.connection
    for _ in range(3):
        around_a_task()
        connection.ensure_connection()
    assert connection.connection is before


@pytest.mark.django_db(transaction=True)
def test_a_connection_past_its_age_is_replaced(worker_fixup: None, kept_connections: None) -> None:
    connection.ensure_connection()
    before = connection.connection
    connection.close_at = time.monotonic() - 1  # as if DATABASE_CONN_MAX_AGE had passed
    around_a_task()
    connection.ensure_connection()
    assert connection.connection is not before


on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite has no connection to check"
)


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_quiet_connection_is_checked_without_a_round_trip(
    worker_fixup: None, kept_connections: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[object] = []
    ours = type(connections["default"])
    ask = ours.is_usable
    pings: list[object] = []
    ping = DjangoPostgreSQL.is_usable

    def checked(self: DjangoPostgreSQL) -> bool:
        asked.append(self)
        return bool(ask(self))

    def pinged(self: DjangoPostgreSQL) -> bool:
        pings.append(self)
        return bool(ping(self))

    monkeypatch.setattr(ours, "is_usable", checked)
    monkeypatch.setattr(DjangoPostgreSQL, "is_usable", pinged)
    assert connection.settings_dict["CONN_HEALTH_CHECKS"]
    connection.ensure_connection()
    before = connection.connection
    for _ in range(3):
        around_a_task()
        with connection.cursor() as cursor:  # the task's first query: checked first
            cursor.execute("SELECT 1")
    assert connection.connection is before
    assert len(asked) == 3  # checked before each task's first query
    assert pings == []  # with no round trip


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_ended_between_tasks_is_replaced(
    worker_fixup: None, kept_connections: None
) -> None:
    """A PostgreSQL restart, or an administrator ending the session, between two tasks: the
    next task's first query runs on a new connection instead of failing."""
    connection.ensure_connection()
    before = connection.connection
    pid = before.info.backend_pid
    other = connections["default"].copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

        def gone() -> bool:
            with other.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
                (sessions,) = cursor.fetchone()
                return bool(sessions == 0)

        wait_until(gone, "the session to end")
    finally:
        other.close()
    around_a_task()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 42")
        assert cursor.fetchone() == (42,)
    assert connection.connection is not before
