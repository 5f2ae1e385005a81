"""The README's command-line tour runs as printed, in order, on the demo data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from api.models import ApiToken
from networking.models import Project, Service
from tests.api.conftest import STACKBLAZE, Cli
from tests.worker import WorkerProcess, database_url

README = Path(__file__).resolve().parents[2] / "README.md"
PRINTED_URL = "http://127.0.0.1:8000"
PRINTED_TOKEN = "sbk_…"
PRINTED_PROJECT = "k7x2m9q4p8ab"


def block(marker: str) -> list[str]:
    """The commands of the shell block under ``<!-- marker -->``, each without its comment
    (a line ending in a backslash goes on on the next)."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker} -->\n```sh\n(.*?)```", text, re.DOTALL)
    assert found is not None, f"the README has no {marker} block"
    joined = found[1].replace("\\\n", " ")
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines() if line]


def run(command: str, cli: Cli, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        env={
            **os.environ,
            "PATH": f"{STACKBLAZE.parent}{os.pathsep}{os.environ['PATH']}",
            "XDG_CONFIG_HOME": str(cli.folder / "config"),
            "COLUMNS": "200",
            **env,
        },
        cwd=cli.folder,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_the_readmes_command_line_tour_runs_as_printed(
    cli: Cli, demo_worker: WorkerProcess
) -> None:
    lines = block("cli-tour")
    assert lines[0].startswith(f"stackblaze login --url {PRINTED_URL} --token {PRINTED_TOKEN}")
    outputs = []
    for line in lines:
        # What a reader would paste: their own dashboard's address and token.
        command = line.replace(PRINTED_URL, cli.url).replace(PRINTED_TOKEN, cli.token)
        done = run(command, cli)
        assert done.returncode == 0, (line, done.stdout, done.stderr, demo_worker.tail())
        outputs.append(done.stdout)
    by_line = dict(zip(lines, outputs, strict=True))
    assert (
        "Created Email Sender"
        in by_line['stackblaze services create "Email Sender" --kind private --port 3000']
    )
    assert "mailer" not in by_line["stackblaze --json services ls"]
    assert "No changes." in outputs[-1]
    assert (cli.folder / "stackblaze.yaml").read_text().count("name: WEBHOOK_KEY") == 1


def test_the_readmes_curl_example_creates_the_service(cli: Cli) -> None:
    [command] = block("curl-example")
    storefront = Project.objects.get(name="Storefront")
    # The reader's own address and project ID.
    command = command.replace(PRINTED_URL, cli.url).replace(PRINTED_PROJECT, storefront.uid)
    done = run(command, cli, STACKBLAZE_TOKEN=cli.token)
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["hostname"] == "email-sender.internal", created
    assert Service.objects.filter(project=storefront, name="email-sender").exists()


def test_the_readmes_token_commands_print_working_tokens(cli: Cli) -> None:
    environment = {"DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url()}
    for command in block("token-commands"):
        manage = f"{sys.executable} {README.parent / 'manage.py'}"
        done = run(command.replace("python manage.py", manage, 1), cli, **environment)
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip().splitlines()[-1]
        assert ApiToken.authenticate(token).user.get_username() in command
