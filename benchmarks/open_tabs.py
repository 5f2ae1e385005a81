"""Open tabs: what a thousand project pages polling "anything new?" every 2 s cost the web tier.

gunicorn (2 sync workers, as on one 2-core machine) serves the real dashboard over HTTP on the
benchmark's PostgreSQL; a load generator in Go (``benchmarks/tabs``, cheap enough to share the
machine) plays the tabs, 10 per user, each polling as htmx does. Measured side by side in one
run: the poll answered from the cache (Redis) against the same poll with no shared cache, when
it goes the whole way (session, user, membership, project).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from networking.models import Membership, Organization, Project, Service
from tests.kubeapi import free_port
from tests.worker import REPO, database_url

TAB_COUNTS = (200, 1000)
TABS_PER_USER = 10
MEASURE_SECONDS = 20
INTERVAL_SECONDS = 2
TARGET_MEDIAN_MS = 50.0
GUNICORN_WORKERS = 2


@dataclass
class Run:
    setup: str
    tabs: int
    answered_per_second: float
    median_ms: float
    p90_ms: float
    failures: int
    cpu_ms_per_poll: float


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdecimal():
            try:
                parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            except OSError:
                continue
            if int(parent) == pid:
                found.append(int(entry.name))
    return found


def _load_generator(build_dir: Path) -> Path | None:
    go = shutil.which("go")
    if go is None:
        return None
    binary = build_dir / "tabs"
    subprocess.run(
        [go, "build", "-o", str(binary), "."], cwd=REPO / "benchmarks" / "tabs", check=True
    )
    return binary


def _sessions(project: Project, users: int) -> list[str]:
    cookies = []
    for index in range(users):
        user = get_user_model().objects.create_user(f"tab-user-{index}", password="unused")
        Membership.objects.create(
            organization=project.organization, user=user, role=Membership.Role.VIEWER
        )
        client = Client()
        client.force_login(user)
        cookies.append(
            f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        )
    return cookies


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "dashboard.wsgi:application",
                "--bind", f"127.0.0.1:{port}", "--workers", str(GUNICORN_WORKERS),
                "--worker-class", "sync", "--log-level", "warning",
            ],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2):
                return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.2)


def _measure(
    binary: Path, setup: str, env: dict[str, str], urls: list[str], cookies: list[str], tabs: int,
    log: Path,
) -> Run:  # fmt: skip
    port = free_port()
    server = _serve(env, port, log)
    try:
        base = f"http://127.0.0.1:{port}"
        pids = [server.pid, *_children(server.pid)]
        # Each session's first poll goes the whole way (and fills the cache, if there is one).
        for url, cookie in zip(urls, cookies, strict=True):
            request = urllib.request.Request(base + url, headers={"Cookie": cookie})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 204, response.status
        cpu_before = _cpu_seconds(pids)
        result = subprocess.run(
            [
                str(binary), "-tabs", str(tabs), "-every", f"{INTERVAL_SECONDS}s",
                "-for", f"{MEASURE_SECONDS}s",
                "-urls", " ".join(base + url for url in urls), "-cookies", " ".join(cookies),
            ],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        cpu = _cpu_seconds(pids) - cpu_before
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    figures = json.loads(result.stdout)
    answered = figures["answered_per_second"]
    unexpected = {code: n for code, n in figures["statuses"].items() if code != "204"}
    if unexpected:
        raise RuntimeError(f"{setup}: polls answered {unexpected}, not 204")
    # The warm-up interval's polls are not in the answered count; the CPU of both is.
    polls = answered * (MEASURE_SECONDS + INTERVAL_SECONDS)
    return Run(
        setup,
        tabs,
        answered,
        figures["median_ms"],
        figures["p90_ms"],
        figures["failures"],
        cpu * 1000 / polls if polls else float("nan"),
    )


def main() -> bool:
    print(
        f"\nOpen tabs polling every {INTERVAL_SECONDS} s: gunicorn with {GUNICORN_WORKERS} sync "
        f"workers on this {os.cpu_count()}-core machine, {TABS_PER_USER} tabs per user, "
        f"{MEASURE_SECONDS} s measured (medians of every poll)"
    )
    if not settings.REDIS_URL:
        print("  skipped: the cache under test is Redis (set REDIS_URL)")
        return True
    with tempfile.TemporaryDirectory(prefix="stackblaze-tabs-") as build:
        binary = _load_generator(Path(build))
        if binary is None:
            print("  skipped: the load generator needs Go (`go` on PATH)")
            return True
        organization = Organization.objects.create(name="Tabs", slug="tabs")
        project = Project.objects.create(organization=organization, name="Watched")
        for name in ("web", "api", "worker"):
            Service.objects.create(
                project=project, display_name=name, name=name, kind="private", ports=[3000]
            )
        project.refresh_from_db()
        users = max(TAB_COUNTS) // TABS_PER_USER
        cookies = _sessions(project, users)
        url = f"{reverse('project-live', args=[project.uid])}?since={project.revision}"
        urls = [url] * users
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
            "DATABASE_URL": database_url(),
            "DJANGO_DEBUG": "false",
        }
        without_cache = {**env, "REDIS_URL": ""}
        log = Path(settings.STATE_DIR) / "bench-gunicorn.log"
        runs = []
        for tabs in TAB_COUNTS:
            for setup, setup_env in (
                ("the whole way (no shared cache)", without_cache),
                ("from the cache (Redis)", env),
            ):
                runs.append(_measure(binary, setup, setup_env, urls, cookies, tabs, log))
    print(
        f"{'answered':<34} {'tabs':>6} {'polls/s asked':>14} {'answered/s':>11} "
        f"{'median':>9} {'p90':>9} {'CPU/poll':>9}  failures"
    )
    ok = True
    for run in runs:
        print(
            f"{run.setup:<34} {run.tabs:>6,} {run.tabs / INTERVAL_SECONDS:>14.0f} "
            f"{run.answered_per_second:>11.1f} {run.median_ms:>6.1f} ms {run.p90_ms:>6.1f} ms "
            f"{run.cpu_ms_per_poll:>6.2f} ms  {run.failures}"
        )
    cached = [run for run in runs if "cache (Redis)" in run.setup and run.tabs == max(TAB_COUNTS)]
    met = bool(cached) and cached[0].median_ms < TARGET_MEDIAN_MS and cached[0].failures == 0
    ok = ok and met
    print(
        f"goal: {max(TAB_COUNTS):,} tabs answered from the cache with a median under "
        f"{TARGET_MEDIAN_MS:.0f} ms: {'met' if met else 'NOT met'} (CPU/poll: the web "
        "processes' CPU time over the polls answered)"
    )
    return ok
