"""Rotating INTERNAL_API_SECRET refuses no request: a client pod calls a service that runs the
verifier snippet the dashboard hands out, in a loop, while both roll three times."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from networking import rotation
from networking.cluster.desired import SECRETS_ANNOTATION
from tests.conftest import World
from tests.dataplane.conftest import (
    TIMINGS,
    Call,
    Calls,
    DataPlane,
    applied,
    create_service,
    in_sync,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "INTERNAL_API_SECRET"

# The called service: the Python verifier from the dashboard, verbatim, behind a tiny server
# that guards /internal/ with it and, as any well-behaved service, drains for a moment on
# SIGTERM (the rollout's new pod is already serving by then).
SERVER = """
{check}

import http.server, signal, threading


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = not self.path.startswith("/internal/") or internal_secret_ok(
            self.headers.get("X-Internal-Secret")
        )
        self.send_response(200 if ok else 403)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"forbidden")

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("", 8080), Handler)
signal.signal(signal.SIGTERM, lambda *_: threading.Timer(3, server.shutdown).start())
server.serve_forever()
"""


def verifier_server() -> str:
    snippet = rotation.verifier_snippets(SECRET)["Python (Django)"]
    check = snippet.split("\n\nfrom django")[0]  # the part that is not Django's middleware
    assert "def internal_secret_ok" in check
    return SERVER.format(check=check)


# How long after a pod's first call its packets may still meet a policy that does not know it.
STARTUP_SECONDS = 10.0


def _seconds_between(earlier: str, later: str) -> float:
    def parse(at: str) -> datetime:
        return datetime.fromisoformat(at[:26].rstrip("Z") + "+00:00")

    return (parse(later) - parse(earlier)).total_seconds()


def _has_secret(pod: Any) -> bool:
    return any(variable.name == SECRET for variable in pod.spec.containers[0].env or [])


def test_a_rotation_refuses_no_request_while_the_pods_really_roll(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    world: World,
    api_client: Call,
    acme_token: str,
) -> None:
    project = storefront["project"]
    namespace = project.namespace
    secret = world.secret  # INTERNAL_API_SECRET, given to api
    billing = create_service(api_client, acme_token, project, "billing", "private", ports=[8080])
    create_service(api_client, acme_token, project, "caller", "private", ports=[9000])
    applied(api_client, acme_token, project, billing)
    receivers = api_client(
        acme_token,
        "PATCH",
        f"/projects/{project.uid}/secrets/{secret.pk}",
        {"services": ["api", "billing", "caller"]},
    )
    assert receivers.status_code == 200, receivers.content
    wait_until(lambda: in_sync(project), "the receivers applied", 60)
    dataplane.deploy(
        namespace, "billing", image_name="python", command=["python3", "-c", verifier_server()]
    )
    dataplane.deploy(
        namespace,
        "caller",
        ports=[],
        args=[
            "loop", "http://billing.internal:8080/internal/ping", "-every", "100ms",
            "-H", f"X-Internal-Secret: ${SECRET}",
        ],
    )  # fmt: skip

    def all_pods(name: str) -> list[Any]:
        selector = f"stackblaze.cloud/service={name}"
        return list(dataplane.core.list_namespaced_pod(namespace, label_selector=selector).items)

    # The watcher sees the new workloads and the worker gives them the secret (env from the
    # project's Secret), which rolls their pods once.
    def carries_the_secret(name: str) -> bool:
        deployment = dataplane.apps.read_namespaced_deployment(name, namespace)
        annotations = deployment.spec.template.metadata.annotations or {}
        return SECRETS_ANNOTATION in annotations and dataplane.rolled_out(namespace, name)

    for name in ("billing", "caller"):
        wait_until(partial(carries_the_secret, name), f"{name} given the secret", 90)
    # Until the pods from before that have drained, a caller may still meet one that has no
    # secret yet: what is counted starts once every pod, terminating ones too, has it.
    wait_until(
        lambda: all(_has_secret(pod) for name in ("billing", "caller") for pod in all_pods(name)),
        "the pods from before the secret gone",
        60,
    )
    since = datetime.now(UTC).isoformat()
    calls = Calls(dataplane, namespace, "caller", since)
    calls.start()
    wait_until(lambda: len(calls.lines) >= 10, "the caller to call", 30)
    assert {line["status"] for line in calls.lines} == {200}, calls.lines[:5]
    before = {
        name: {pod.metadata.name for pod in dataplane.pods(namespace, name)}
        for name in ("billing", "caller")
    }

    started = api_client(acme_token, "POST", f"/projects/{project.uid}/secrets/{secret.pk}/rotate")
    assert started.status_code == 202, started.content

    def finished() -> bool:
        state = api_client(
            acme_token, "GET", f"/projects/{project.uid}/secrets/{secret.pk}/rotation"
        ).json()
        return not state["rotating"] and (state["latest"] or {}).get("result") == "completed"

    wait_until(finished, "the rotation to complete", 240, every=0.5)
    for name in ("billing", "caller"):
        dataplane.wait_rolled_out(namespace, name)
    seen = len(calls.lines)
    wait_until(lambda: len(calls.lines) >= seen + 10, "calls after the rotation", 30)
    calls.stop()

    after = {
        name: {pod.metadata.name for pod in dataplane.pods(namespace, name)}
        for name in ("billing", "caller")
    }
    for name in ("billing", "caller"):
        assert not before[name] & after[name], f"{name}'s pods never rolled"
    # The promise: the verifier never refuses a caller (403) at any point of the rotation.
    refused = [line for line in calls.lines if line["status"] == 403]
    assert not refused, f"{len(refused)} of {len(calls.lines)} calls refused: {refused[:5]}"
    # Below the application: a new pod's first packets may meet the NetworkPolicy before the
    # enforcer has learnt its address (a new caller is not yet in the set of the project's
    # pods). That lasts a moment at a pod's start, never later.
    first_call: dict[str, str] = {}
    for line in calls.lines:
        first_call.setdefault(line["pod"], line["at"])
    failed = [line for line in calls.lines if line["status"] == 0]
    late = [
        line
        for line in failed
        if _seconds_between(first_call[line["pod"]], line["at"]) > STARTUP_SECONDS
    ]
    assert not late, f"{len(late)} calls failed after their pod's start: {late[:5]}"
    secret.refresh_from_db()
    assert not secret.rotating
    rolled = {line["pod"] for line in calls.lines}
    worst = max(
        (_seconds_between(first_call[line["pod"]], line["at"]) for line in failed), default=0
    )
    TIMINGS.append(
        f"rotation: {len(calls.lines)} calls from {len(rolled)} caller pods over the whole "
        f"rotation, none refused by the verifier; {len(failed)} connections refused by the "
        f"NetworkPolicy in a new pod's first {worst:.2f} s, before the enforcer knew its address"
    )
