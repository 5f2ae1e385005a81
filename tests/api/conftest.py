"""What the CLI tests on the demo data share: ``stackblaze`` as the demo's owner, and a worker."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from networking.models import Organization
from tests.conftest import issue_token
from tests.worker import WorkerProcess, database_url

STACKBLAZE = Path(sys.executable).parent / "stackblaze"


class Cli:
    """``stackblaze`` as the demo's owner, in a folder of its own (where the file lives)."""

    def __init__(self, url: str, token: str, folder: Path) -> None:
        self.url, self.token, self.folder = url, token, folder

    def __call__(
        self, *args: str, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            "XDG_CONFIG_HOME": str(self.folder / "config"),
            "STACKBLAZE_URL": self.url,
            "STACKBLAZE_TOKEN": self.token,
            "COLUMNS": "200",
            **env,
        }
        return subprocess.run(
            [str(STACKBLAZE), *args],
            env=environment,
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def cli(transactional_db: Any, live_server: Any, tmp_path: Path) -> Cli:
    call_command("seed_demo", stdout=io.StringIO())
    owner = User.objects.get(username="owner")
    token = issue_token(owner, Organization.objects.get(slug="acme"), "owner", "project-file")
    return Cli(live_server.url, token, tmp_path)


@pytest.fixture
def demo_worker(cli: Cli, tmp_path: Path) -> Iterator[WorkerProcess]:
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
