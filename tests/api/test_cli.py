"""The ``stackblaze`` command, run as users run it, against a live server and a real worker.

Each test runs the installed console script in a process of its own, with its own config
directory, so what is checked is what a terminal or a CI job sees: the output, the messages
on stderr and the exit code (0 done, 1 refused, 2 usage, 3 failure).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from networking.models import AuditEvent, PeeringRequest, SecretRotation, Service, ServiceAlias
from tests.conftest import World
from tests.worker import WorkerProcess, database_url

STACKBLAZE = Path(sys.executable).parent / "stackblaze"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def stackblaze(
    world: World, api_tokens: dict[str, str | None], live_server: Any, tmp_path: Path
) -> Run:
    """Run ``stackblaze ARGS`` as ``role`` (its token in the environment, as CI would).

    Standard input is no terminal, as in CI, unless ``typed`` is given: then it is a terminal
    on which the person has typed that already (the answer to a prompt)."""

    def run(
        *args: str, role: str = "member", timeout: float = 60, typed: str | None = None, **env: str
    ) -> Any:
        token = api_tokens[role] or ""
        environment = {
            **os.environ,
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "STACKBLAZE_URL": live_server.url,
            "STACKBLAZE_TOKEN": token,
            "COLUMNS": "200",
            **env,
        }
        if typed is None:
            return subprocess.run(
                [str(STACKBLAZE), *args],
                env=environment,
                stdin=subprocess.DEVNULL,  # as in CI: no terminal to answer a prompt
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        # A terminal: what is typed waits in its input queue until the prompt reads it.
        keyboard, terminal = os.openpty()
        try:
            os.write(keyboard, typed.encode())
            return subprocess.run(
                [str(STACKBLAZE), *args],
                env=environment,
                stdin=terminal,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        finally:
            os.close(terminal)
            os.close(keyboard)

    return run


def test_login_keeps_the_url_and_token_private(
    stackblaze: Run, api_tokens: dict[str, str | None], live_server: Any, tmp_path: Path
) -> None:
    token = api_tokens["member"]
    assert token is not None
    done = stackblaze(
        "login", "--url", live_server.url, "--token", token, STACKBLAZE_URL="", STACKBLAZE_TOKEN=""
    )
    assert done.returncode == 0, done.stderr
    assert "Logged in as member in acme (member, token member-token)." in done.stdout
    config = tmp_path / "config" / "stackblaze" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"url": live_server.url, "token": token}
    # The next command reads them from there.
    listed = stackblaze("projects", STACKBLAZE_URL="", STACKBLAZE_TOKEN="")
    assert listed.returncode == 0 and "Storefront" in listed.stdout


def test_login_with_a_bad_token_is_refused_and_saves_nothing(
    stackblaze: Run, live_server: Any, tmp_path: Path
) -> None:
    done = stackblaze("login", "--url", live_server.url, "--token", "sbk_" + "x" * 40)
    assert done.returncode == 1
    assert "This token is not valid. Create a new one in the dashboard." in done.stderr
    assert not (tmp_path / "config" / "stackblaze" / "config.json").exists()


@pytest.fixture
def not_the_api() -> Iterator[Callable[[int, dict[str, str], bytes], str]]:
    """A web server on loopback that answers every request the same way, and is no API."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    servers: list[ThreadingHTTPServer] = []

    def serve(status: int, headers: dict[str, str], body: bytes) -> str:
        class Answer(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "headers", "body", "says"),
    [
        (301, {"Location": "https://dash.example/api/v1/me"}, b"", "redirect to https://dash"),
        (200, {"Content-Type": "text/html"}, b"<html>Welcome</html>", "did not answer as"),
        (401, {"Content-Type": "text/html"}, b"<html>Proxy login</html>", "did not answer as"),
    ],
)
def test_login_to_something_that_is_not_the_api_fails_and_saves_nothing(
    stackblaze: Run,
    api_tokens: dict[str, str | None],
    not_the_api: Callable[[int, dict[str, str], bytes], str],
    tmp_path: Path,
    status: int,
    headers: dict[str, str],
    body: bytes,
    says: str,
) -> None:
    url = not_the_api(status, headers, body)
    token = api_tokens["member"]
    assert token is not None
    done = stackblaze("login", "--url", url, "--token", token, STACKBLAZE_URL="")
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert says in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "config" / "stackblaze" / "config.json").exists()


def test_a_token_is_never_sent_over_plain_http_to_another_host(
    stackblaze: Run, api_tokens: dict[str, str | None], tmp_path: Path
) -> None:
    token = api_tokens["member"]
    assert token is not None
    done = stackblaze("login", "--url", "http://dash.example", "--token", token, STACKBLAZE_URL="")
    assert done.returncode == 2
    assert "plain http" in done.stderr and "STACKBLAZE_ALLOW_HTTP=1" in done.stderr
    listed = stackblaze("projects", STACKBLAZE_URL="http://dash.example")
    assert listed.returncode == 2 and "plain http" in listed.stderr


def test_an_answer_shaped_unlike_the_apis_is_a_failure_in_one_line(
    stackblaze: Run,
    api_tokens: dict[str, str | None],
    not_the_api: Callable[[int, dict[str, str], bytes], str],
) -> None:
    url = not_the_api(200, {"Content-Type": "application/json"}, b'{"projects": "none"}')
    done = stackblaze("projects", STACKBLAZE_URL=url)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stderr.startswith("Error: ") and "Traceback" not in done.stderr


def test_an_old_config_file_becomes_private(
    stackblaze: Run, api_tokens: dict[str, str | None], live_server: Any, tmp_path: Path
) -> None:
    config = tmp_path / "config" / "stackblaze" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text("{}")
    config.chmod(0o644)
    token = api_tokens["member"]
    assert token is not None
    done = stackblaze("login", "--url", live_server.url, "--token", token, STACKBLAZE_URL="")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_a_member_creates_a_service_and_reads_its_address(stackblaze: Run, world: World) -> None:
    created = stackblaze(
        "services", "create", "Background Worker", "--kind", "private", "--port", "3000"
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == (
        "Created Background Worker: reachable at background-worker.internal:3000 inside the "
        "project."
    )
    shown = stackblaze("--json", "services", "show", "background-worker")
    assert json.loads(shown.stdout)["address"] == "background-worker.internal:3000"
    listed = stackblaze("services", "ls")
    assert "background-worker.internal:3000" in listed.stdout
    event = AuditEvent.objects.get(action=AuditEvent.Action.SERVICE_CREATED)
    assert event.actor_display == "member via token member-token"


def test_the_connection_string_is_masked_unless_revealed(stackblaze: Run, world: World) -> None:
    password = Service.objects.get(pk=world.postgres.pk).database_password
    assert password is not None
    masked = stackblaze("services", "env", "postgres")
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout.startswith("DATABASE_URL=postgresql://")
    assert "@postgres.internal:5432/postgres" in masked.stdout
    assert "••••••••" in masked.stdout and password.reveal() not in masked.stdout
    revealed = stackblaze("services", "env", "postgres", "--reveal")
    assert revealed.returncode == 0, revealed.stderr
    assert quote(password.reveal(), safe="") in revealed.stdout
    assert AuditEvent.objects.filter(action=AuditEvent.Action.CREDENTIALS_REVEALED).count() == 1


def test_rename_and_remove(stackblaze: Run) -> None:
    renamed = stackblaze("services", "rename", "api", "Gateway")
    assert renamed.stdout.strip() == (
        "Renamed: api.internal is now gateway.internal. api.internal keeps resolving to it for 24h."
    )
    assert ServiceAlias.objects.filter(name="api").exists()
    # Keeping nothing disconnects callers at once: asked for (a script: --yes).
    unasked = stackblaze("services", "rename", "gateway", "Edge", "--keep-old-name", "0")
    assert unasked.returncode == 2 and "Add --yes" in unasked.stderr
    assert Service.objects.filter(name="gateway").exists()
    again = stackblaze("services", "rename", "gateway", "Edge", "--keep-old-name", "0", "--yes")
    assert again.stdout.strip() == "Renamed: gateway.internal is now edge.internal."
    assert not ServiceAlias.objects.filter(name="gateway").exists()
    help_text = stackblaze("services", "rename", "--help").stdout
    assert "keeps resolving for 24 hours" in " ".join(help_text.split())
    assert "stops resolving" not in help_text
    typo = stackblaze("services", "rename", "edge", "Gateway", "--keep-old-name", "2d")
    assert typo.returncode == 2 and "0, 1h, 24h, 7d" in typo.stderr
    stackblaze("services", "rename", "edge", "Gateway", "--keep-old-name", "0", "--yes")
    unasked = stackblaze("services", "rm", "gateway")  # a script: no terminal to ask
    assert unasked.returncode == 2 and "Add --yes" in unasked.stderr
    assert Service.objects.filter(name="gateway").exists()
    removed = stackblaze("services", "rm", "gateway", "--yes")
    assert removed.returncode == 0
    assert not Service.objects.filter(name="gateway").exists()


class TestRefusals:
    def test_a_viewer_is_refused_in_the_apis_words(self, stackblaze: Run) -> None:
        refused = stackblaze("services", "create", "Worker", "--port", "3000", role="viewer")
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "Error: Your role in this organization can’t make this change."
        )
        assert not Service.objects.filter(name="worker").exists()

    def test_invalid_input_prints_the_naming_rules_message(self, stackblaze: Run) -> None:
        refused = stackblaze("services", "create", "Background_Worker!", "--port", "3000")
        assert refused.returncode == 1
        assert "can’t be part of a hostname" in refused.stderr
        assert "Try “background-worker”." in refused.stderr

    def test_json_refusals_are_the_problem_document(self, stackblaze: Run) -> None:
        refused = stackblaze("--json", "secrets", "rotate", "INTERNAL_API_SECRET", role="member")
        assert refused.returncode == 1
        problem = json.loads(refused.stderr)
        assert problem["status"] == 403 and problem["type"].startswith("https://")

    def test_a_usage_error_is_exit_code_2(self, stackblaze: Run) -> None:
        assert stackblaze("services", "create").returncode == 2
        assert stackblaze("projects", STACKBLAZE_TOKEN="").returncode == 2

    def test_an_unreachable_api_is_a_failure(self, stackblaze: Run) -> None:
        failed = stackblaze("projects", STACKBLAZE_URL="http://127.0.0.1:9")
        assert failed.returncode == 3
        assert "Could not reach http://127.0.0.1:9" in failed.stderr


@pytest.fixture
def worker(transactional_db: Any, tmp_path: Path, settings: Any) -> Iterator[WorkerProcess]:
    """A real worker on the manifests backend, with a grace window of nothing."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "CLUSTER_BACKEND": "manifests",
        "MANIFESTS_DIR": str(tmp_path / "manifests"),
        "ROTATION_GRACE_SECONDS": "0",
        "ROTATION_POLL_SECONDS": "1",
    }
    process = WorkerProcess(env, tmp_path / "worker.log")
    process.start()
    yield process
    process.stop()


def test_an_owner_rotates_internal_api_secret_to_completion(
    stackblaze: Run, worker: WorkerProcess, world: World
) -> None:
    done = stackblaze(
        "secrets", "rotate", "INTERNAL_API_SECRET", "--wait", "--timeout", "120",
        role="owner", timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + worker.tail()
    for title in (
        "Accept the new value",
        "Send the new value",
        "Grace window",
        "Retire the old value",
    ):
        assert f"✓ {title}" in done.stderr
    # Rotations are counted, as on the secret's page; its internal version is never shown.
    assert done.stdout.strip() == (
        "Rotation 1 of INTERNAL_API_SECRET completed: every receiving service has the new value."
    )
    rotation = SecretRotation.objects.get(secret=world.secret)
    assert rotation.result == SecretRotation.Result.COMPLETED
    assert rotation.started_by_label == "owner via token owner-token"
    listed = stackblaze("secrets", "ls", role="viewer")
    assert "VERSION" not in listed.stdout
    assert re.search(r"INTERNAL_API_SECRET\s+1\s+api\s+rotated (just now|.* ago)", listed.stdout)


def test_revoking_a_peering_asks_first(stackblaze: Run, world: World) -> None:
    PeeringRequest.objects.filter(pk=world.peering.pk).update(status=PeeringRequest.Status.ACTIVE)
    unasked = stackblaze("peering", "revoke", str(world.peering.pk), role="owner")
    assert unasked.returncode == 2 and "Add --yes" in unasked.stderr
    assert PeeringRequest.objects.get(pk=world.peering.pk).status == PeeringRequest.Status.ACTIVE
    revoked = stackblaze("peering", "revoke", str(world.peering.pk), "--yes", role="owner")
    assert revoked.returncode == 0, revoked.stderr
    # Revoked, and being disconnected (the worker removes the policies next).
    assert PeeringRequest.objects.get(pk=world.peering.pk).status == PeeringRequest.Status.REVOKING
    assert f"Revoked peering #{world.peering.pk}" in revoked.stdout


def test_secrets_peering_and_audit_lists(stackblaze: Run, world: World) -> None:
    secrets = stackblaze("secrets", "ls", role="viewer")
    assert "INTERNAL_API_SECRET" in secrets.stdout and "api" in secrets.stdout
    peerings = stackblaze("--json", "peering", "ls", role="owner")
    assert [p["id"] for p in json.loads(peerings.stdout)] == [world.peering.pk]
    accepted = stackblaze("peering", "accept", str(world.peering.pk), role="owner")
    assert accepted.stdout.strip() == f"Accepted peering #{world.peering.pk}: Waiting for support."
    audit = stackblaze("audit", "--what", "peering", role="viewer")
    assert "owner via token owner-token" in audit.stdout
    assert "accepted a peering request" in audit.stdout


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://dash.example", True),
        ("http://localhost:8000", True),
        ("http://127.0.0.2:8000", True),
        ("http://[::1]:8000", True),
        ("http://dash.example", False),
        ("http://[::1", False),
        ("dash.example", False),
        ("ftp://dash.example", False),
    ],
)
def test_where_a_token_may_be_sent(
    url: str, allowed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stackblaze_cli.client import ALLOW_HTTP_VARIABLE, check_url

    monkeypatch.delenv(ALLOW_HTTP_VARIABLE, raising=False)
    assert (check_url(url) is None) == allowed


def test_notifications_lists_what_needs_the_tokens_holder(stackblaze: Run, world: World) -> None:
    from django.contrib.auth.models import User

    from networking import peering
    from networking.models import Project

    assert stackblaze("notifications", role="owner").stdout.strip() == "No notifications."
    reports = Project.objects.create(organization=world.globex, name="Reports")
    peering.request_peering(
        reports, world.project.uid, "Reads orders.", actor=User.objects.get(username="globex-owner")
    )
    listed = stackblaze("notifications", "--unread", role="owner").stdout
    assert "unread" in listed and "Globex asks to peer Reports with Storefront" in listed
    assert f"/projects/{world.project.uid}/peering/" in listed
    # Only owners can accept: a member's token is told nothing.
    assert json.loads(stackblaze("--json", "notifications", role="member").stdout) == []
