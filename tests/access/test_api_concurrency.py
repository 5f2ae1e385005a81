"""Twenty identical API calls at once against a live threaded server on PostgreSQL.

With the same ``Idempotency-Key`` they act once and all get the first answer; without one, the
domain functions' constraints still decide (one service, the others a 409 naming the clash).
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connection

from networking.models import AuditEvent, Service
from tests.conftest import World

N = 20

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks and concurrent writers need PostgreSQL (CI sets DATABASE_URL)",
)


def all_at_once(
    base_url: str, path: str, body: dict[str, Any], headers: dict[str, str]
) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
    base = urlsplit(base_url)
    barrier = threading.Barrier(N)
    answers: list[Any] = [None] * N

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=60)
            conn = http.client.HTTPConnection(base.hostname or "localhost", base.port, timeout=60)
            try:
                conn.request(
                    "POST",
                    path,
                    body=json.dumps(body),
                    headers={"Content-Type": "application/json", **headers},
                )
                response = conn.getresponse()
                answers[index] = (
                    response.status,
                    json.loads(response.read() or b"{}"),
                    dict(response.getheaders()),
                )
            finally:
                conn.close()
        except BaseException as error:  # reported below
            answers[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for answer in answers:
        assert isinstance(answer, tuple), answer
    return answers


def test_twenty_retries_with_one_key_act_once(
    world: World, api_tokens: dict[str, str | None], live_server: Any
) -> None:
    answers = all_at_once(
        live_server.url,
        f"/api/v1/projects/{world.project.uid}/services",
        {"name": "Background Worker", "kind": "private", "ports": [3000]},
        {"Authorization": f"Bearer {api_tokens['member']}", "Idempotency-Key": "deploy-42"},
    )
    assert {status for status, _, _ in answers} == {201}, answers
    assert len({body["id"] for _, body, _ in answers}) == 1
    assert sum(headers.get("Idempotent-Replayed") == "true" for _, _, headers in answers) == N - 1
    assert Service.objects.filter(name="background-worker").count() == 1
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SERVICE_CREATED).count() == 1


def test_twenty_creates_without_a_key_make_one_service(
    world: World, api_tokens: dict[str, str | None], live_server: Any
) -> None:
    answers = all_at_once(
        live_server.url,
        f"/api/v1/projects/{world.project.uid}/services",
        {"name": "Background Worker", "kind": "private", "ports": [3000]},
        {"Authorization": f"Bearer {api_tokens['member']}"},
    )
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [201] + [409] * (N - 1), answers
    assert all(
        "background-worker.internal" in body["detail"]
        for status, body, _ in answers
        if status == 409
    )
    assert Service.objects.filter(name="background-worker").count() == 1
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SERVICE_CREATED).count() == 1


def test_twenty_first_uses_of_a_token_are_audited_once(world: World, live_server: Any) -> None:
    from api.models import ApiToken

    _, raw = ApiToken.issue(
        user=world.users["viewer"], organization=world.acme, name="new", role="viewer"
    )
    answers = all_at_once(
        live_server.url,
        f"/api/v1/projects/{world.project.uid}/sync/retry",
        {},
        {"Authorization": f"Bearer {raw}"},
    )
    assert {status for status, _, _ in answers} == {403}
    assert AuditEvent.objects.filter(action=AuditEvent.Action.TOKEN_FIRST_USED).count() == 1
