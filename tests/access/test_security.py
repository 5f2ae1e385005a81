"""The security sweep: a planted secret surfaces only where it must; production settings."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from celery.signals import before_task_publish
from cryptography.fernet import Fernet
from django.urls import reverse

from networking import mtls
from networking.crypto import SecretText
from networking.models import CertificateAuthority, Project, Service
from networking.tasks import reconcile_project
from tests.access.test_access_matrix import crawl
from tests.conftest import World

REPO = Path(__file__).resolve().parents[2]
CANARY = "canary-Zq7#pw/with?reserved&chars"


# The private keys of the planted world's mutual TLS (its CAs' and its services'): never shown
# anywhere, not even by a reveal.
PLANTED_KEYS: list[str] = []


@pytest.fixture
def planted(world: World) -> World:
    Service.objects.filter(pk=world.postgres.pk).update(database_password=SecretText.seal(CANARY))
    Service.objects.filter(pk=world.other_service.pk).update(
        database_password=SecretText.seal(CANARY)
    )
    PLANTED_KEYS.clear()
    for project in (world.project, world.other_project):
        mtls.enable(project, actor=None)
        tls = mtls.material(project, dict(project.services.values_list("pk", "name")), {})
        assert tls is not None
        PLANTED_KEYS.extend(files.key for files in tls.services.values())
    for authority in CertificateAuthority.objects.all():
        assert authority.key is not None
        PLANTED_KEYS.append(authority.key.reveal())
    # Turning it on queued a pass (no message was sent: not in a request): none is waiting.
    Project.objects.update(reconcile_queued_at=None)
    return world


def _key_lines(key: str) -> list[str]:
    """The lines of a PEM key's body that hold its private part: any one shown is a leak.
    (An EC key's last line is mostly its public key, which its certificate shows.)"""
    return [line for line in key.splitlines() if line and not line.startswith("-----")][:2]


def leaks(text: str) -> bool:
    return (
        CANARY in text
        or quote(CANARY, safe="") in text
        or "PRIVATE KEY" in text
        or any(line in text for key in PLANTED_KEYS for line in _key_lines(key))
    )


def test_the_canary_appears_only_in_the_reveal_response(
    planted: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        seen_in = crawl(planted, leaks)
    # Owners and members revealing their own database, and nothing else.
    assert sorted(seen_in) == [
        ("service-reveal", "POST", "member", False),
        ("service-reveal", "POST", "owner", False),
    ]
    assert not leaks(caplog.text)


def test_task_messages_carry_ids_only(
    planted: World, django_capture_on_commit_callbacks: Any
) -> None:
    published: list[str] = []

    def capture(body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        published.append(repr(body) + repr(headers))

    before_task_publish.connect(capture)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            planted.client_for("owner").post(
                reverse("service-create", args=[planted.project.uid]),
                {"display_name": "Second DB", "kind": "postgresql"},
            )
    finally:
        before_task_publish.disconnect(capture)
    assert len(published) == 1
    assert f"({planted.project.pk},)" in published[0]
    second = Service.objects.get(name="second-db").database_password
    assert second is not None
    assert second.reveal() not in published[0]
    assert not leaks(published[0])


def test_the_worker_never_logs_a_secret(
    planted: World, caplog: pytest.LogCaptureFixture, settings: Any, tmp_path: Path
) -> None:
    settings.MANIFESTS_DIR = tmp_path
    with caplog.at_level(logging.DEBUG):
        assert reconcile_project.apply(args=(planted.project.pk,)).get() == "applied"
    assert "Applied generation" in caplog.text
    assert not leaks(caplog.text)
    for manifest in tmp_path.rglob("*.yaml"):
        assert not leaks(manifest.read_text())


def production_env(**overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "FIELD_ENCRYPTION", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        DJANGO_SECRET_KEY="k" * 10 + "3rT9vLq8wZ-pX2mN7bY4cF6hJ1sD5gK0aE-uI9oR2tQ8zV",
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        DJANGO_ALLOWED_HOSTS="dashboard.example.com",
    )
    env.update(overrides)
    return {key: value for key, value in env.items() if value}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY is not set"),
        ({"DJANGO_SECRET_KEY": "too-short"}, "at least 50 characters"),
        ({"FIELD_ENCRYPTION_KEYS": ""}, "FIELD_ENCRYPTION_KEYS is not set"),
        ({"FIELD_ENCRYPTION_KEYS": "not-a-key"}, "not a valid Fernet key"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG must be one of"),
    ],
)
def test_production_settings_refuse_to_start_without_real_keys(
    overrides: dict[str, str], message: str
) -> None:
    result = manage("check", env=production_env(**overrides))
    assert result.returncode != 0
    assert message in result.stderr


SECRET_CANARY = "secret-canary-Vx9/with?reserved&chars-0123456789"


def secret_leaks(text: str) -> bool:
    return leaks(text) or SECRET_CANARY in text or quote(SECRET_CANARY, safe="") in text


def test_the_canaries_appear_in_api_responses_only_from_the_reveals(
    planted: World, api_tokens: dict[str, str | None], caplog: pytest.LogCaptureFixture
) -> None:
    """Every API operation, as every role, on its own tenant and another's: the database
    password and the shared secret's value appear only in the two audited reveal answers."""
    from django.test import Client

    from networking.models import SharedSecret
    from tests.access.test_api_access_matrix import body_for, call, operations, url_for

    for secret in (planted.secret, planted.other_secret):
        SharedSecret.objects.filter(pk=secret.pk).update(value=SecretText.seal(SECRET_CANARY))
    # Every role reads, then every role changes, then every role deletes: each object is
    # still there for every role to read and reveal.
    phases = [("GET",), ("POST", "PATCH"), ("DELETE",)]
    seen_in = []
    with caplog.at_level(logging.DEBUG):
        for methods in phases:
            for role, token, (operation_id, (method, path)) in (
                (role, token, operation)
                for role, token in api_tokens.items()
                for operation in operations().items()
                if operation[1][0] in methods
            ):
                for foreign in (False, True):
                    url = url_for(planted, path, operation_id, foreign=foreign)
                    body = body_for(planted, operation_id)
                    response = call(Client(), method, url, body, token)
                    assert response.status_code < 500, (operation_id, role, response.content)
                    if secret_leaks(response.content.decode(errors="replace")):
                        seen_in.append((operation_id, role, foreign))
    assert sorted(seen_in) == [
        ("reveal_secret", "owner", False),
        ("reveal_service_credentials", "member", False),
        ("reveal_service_credentials", "owner", False),
    ]
    assert not secret_leaks(caplog.text)


def test_a_refusal_is_one_line_in_the_log_and_a_crash_keeps_its_traceback(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 403 is the access rules working, not a fault: one line, no stack trace. A 500 is a
    fault, and its traceback is how it is found."""
    from django.test import Client

    from networking import audit_trail

    viewer = world.client_for("viewer")
    with caplog.at_level(logging.INFO, logger="django.request"):
        response = viewer.post(
            reverse("peering-request", args=[world.project.uid]),
            {"target": world.other_project.uid, "justification": "x"},
        )
    assert response.status_code == 403
    [refusal] = [record for record in caplog.records if record.name == "django.request"]
    assert refusal.levelno == logging.WARNING
    assert refusal.exc_info is None and refusal.exc_text is None
    url = reverse("peering-request", args=[world.project.uid])
    assert refusal.getMessage() == f"Forbidden (Permission denied): {url}"
    assert "Traceback" not in caplog.text

    def crash(query: Any) -> Any:
        raise RuntimeError("a real bug")

    monkeypatch.setattr(audit_trail.Filters, "from_query", crash)
    owner = Client(raise_request_exception=False)
    owner.force_login(world.users["owner"])  # type: ignore[arg-type]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="django.request"):
        response = owner.get(reverse("audit-log", args=[world.project.uid]))
    assert response.status_code == 500
    [crashed] = [record for record in caplog.records if record.name == "django.request"]
    assert crashed.levelno == logging.ERROR and crashed.exc_info is not None
    assert "RuntimeError: a real bug" in caplog.text
