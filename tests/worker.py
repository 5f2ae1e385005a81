"""Celery worker and beat processes for tests and benchmarks, on this run's queue and database."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The test database, as a worker process must reach it."""
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    password = f":{config['PASSWORD']}" if config["PASSWORD"] else ""
    return (
        f"postgres://{config['USER']}{password}@{config['HOST'] or '127.0.0.1'}:"
        f"{config['PORT'] or 5432}/{config['NAME']}"
    )


class WorkerProcess:
    """``celery worker`` for this test run's queue, with its log kept for failure output."""

    def __init__(self, env: dict[str, str], log: Path, extra_args: Sequence[str] = ()) -> None:
        self.env = env
        self.log = log
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        name = f"test-{uuid.uuid4().hex[:8]}@%h"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "dashboard", "worker",
                    "-Q", settings.CELERY_TASK_DEFAULT_QUEUE, "-n", name,
                    "--pool=solo", "--loglevel=INFO",
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                    *self.extra_args,
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.wait_for_log("ready.", timeout=30)

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            assert self.process is not None and self.process.poll() is None, self.tail()
            time.sleep(0.1)
        raise AssertionError(f"worker never logged {text!r}:\n{self.tail()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


class BeatProcess(WorkerProcess):
    """``celery beat`` on its own, as production runs it beside the workers."""

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "dashboard", "beat",
                    "--loglevel=INFO", *self.extra_args,
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.wait_for_log("beat: Starting...", timeout=30)


class WatcherProcess(WorkerProcess):
    """``manage.py watch_cluster``: the watcher, as production runs it beside the workers."""

    def start(self) -> None:
        logged = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "watch_cluster", *self.extra_args],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while b"Watching the cluster" not in self.log.read_bytes()[logged:]:
            assert self.process.poll() is None, self.tail()
            assert time.monotonic() < deadline, f"the watcher never synced:\n{self.tail()}"
            time.sleep(0.1)
