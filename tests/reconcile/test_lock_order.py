"""Every writer takes the project's row before the services' rows, the worker's passes and a
person's changes alike, so two never deadlock (PostgreSQL would refuse one side, as likely the
person's save)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import OperationalError, connection, connections, transaction

from networking import references
from networking.cluster import reconcile
from networking.cluster.backends import ApplyResult
from networking.cluster.lease import ServiceRow
from networking.models import Project, Service
from tests.conftest import World
from tests.waiting import wait_until


def _waiting_for_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


def _waits_for_the_project_first(
    project: Project, service: Service, act: Callable[[], object]
) -> bool:
    """Run ``act`` while another transaction holds the project's row: once ``act`` waits for a
    lock, whether the service's row is still free (True: ``act`` took the project first). Any
    error ``act`` raised is raised here, after it finished."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's")
    pid: list[int] = []
    release = threading.Event()
    errors: list[BaseException] = []

    def holder() -> None:
        """A transaction holding the project's row (a person's save, a pass's "in sync")."""
        try:
            with transaction.atomic():
                Project.objects.select_for_update().filter(pk=project.pk).first()
                release.wait(30)
        finally:
            connections.close_all()

    def actor() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pid.append(cursor.fetchone()[0])
            act()
        except BaseException as error:  # reported by the test
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=holder), threading.Thread(target=actor)]
    threads[0].start()
    wait_until(lambda: _held(project.pk), "a transaction holding the project's row")
    threads[1].start()
    wait_until(lambda: bool(pid) and _waiting_for_a_lock(pid[0]), "the change waiting for a lock")
    try:
        with transaction.atomic():
            Service.objects.select_for_update(nowait=True).filter(pk=service.pk).first()
        free = True
    except OperationalError:
        free = False
    release.set()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    return free


def _held(project_id: int) -> Any:
    """The holder has the project's row (a NOWAIT lock of it fails)."""
    try:
        with transaction.atomic():
            Project.objects.select_for_update(nowait=True).filter(pk=project_id).first()
    except OperationalError:
        return True
    return False


@pytest.mark.django_db(transaction=True)
def test_recording_a_clusterip_waits_for_the_project_before_locking_the_service(
    world: World,
) -> None:
    project, service = world.project, world.api
    row = ServiceRow(service.pk, service.name, service.kind, tuple(service.ports), None)
    result = ApplyResult(cluster_ips={service.name: "10.96.0.9"}, verified=False)
    record = reconcile._new_record(project)
    # The worker waits for the project; meanwhile the service's row is free for the person's
    # save to lock next (before the fix the worker held it, and the two deadlocked).
    free = _waits_for_the_project_first(
        project, service, lambda: reconcile._record_services(project.pk, [row], result, record)
    )
    assert free, "the worker locked the service's row before the project's"
    assert Service.objects.get(pk=service.pk).cluster_ip == "10.96.0.9"


def _remove_a_service(world: World) -> Callable[[], object]:
    return lambda: world.api.remove(actor=None)


def _choose_receivers(world: World) -> Callable[[], object]:
    now = set(world.secret.services.all())
    chosen = [world.api] if now != {world.api} else [world.api, world.postgres]
    return lambda: world.secret.change_receivers(chosen, None, actor=None)


def _take_a_reference_back(world: World) -> Callable[[], object]:
    (made,) = references.add(world.postgres, [world.api], "", actor=None)
    return lambda: references.remove(made, actor=None)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "change",
    [_remove_a_service, _choose_receivers, _take_a_reference_back],
    ids=lambda f: f.__name__,
)
def test_a_persons_change_takes_the_project_before_the_services(
    world: World, change: Callable[[World], Callable[[], object]]
) -> None:
    """A pass's "in sync" updates the project's row, then restamps the services it applied
    (``statements.mark_applied``): a change that locked a service first and then waited for the
    project would deadlock with it."""
    free = _waits_for_the_project_first(world.project, world.api, change(world))
    assert free, "the change locked the service's row before the project's"
    assert Project.objects.get(pk=world.project.pk).generation > world.project.generation
