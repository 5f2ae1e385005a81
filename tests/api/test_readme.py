"""The README's command-line tour runs as printed, in order, on the demo data."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.api.conftest import STACKBLAZE, Cli
from tests.worker import WorkerProcess

README = Path(__file__).resolve().parents[2] / "README.md"
PRINTED_URL = "http://127.0.0.1:8000"
PRINTED_TOKEN = "sbk_…"


def tour() -> list[str]:
    """The lines of the block under ``<!-- cli-tour -->``, each without its comment."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- cli-tour -->\n```sh\n(.*?)```", text, re.DOTALL)
    assert block is not None, "the README has no CLI tour"
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in block[1].splitlines() if line]


def test_the_readmes_command_line_tour_runs_as_printed(
    cli: Cli, demo_worker: WorkerProcess
) -> None:
    lines = tour()
    assert lines[0].startswith(f"stackblaze login --url {PRINTED_URL} --token {PRINTED_TOKEN}")
    environment = {
        **os.environ,
        "PATH": f"{STACKBLAZE.parent}{os.pathsep}{os.environ['PATH']}",
        "XDG_CONFIG_HOME": str(cli.folder / "config"),
        "COLUMNS": "200",
    }
    outputs = []
    for line in lines:
        # What a reader would paste: their own dashboard's address and token.
        command = line.replace(PRINTED_URL, cli.url).replace(PRINTED_TOKEN, cli.token)
        done = subprocess.run(
            ["bash", "-c", command],
            env=environment,
            cwd=cli.folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
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
