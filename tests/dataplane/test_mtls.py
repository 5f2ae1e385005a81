"""Mutual TLS, shown with packets: services call each other over TLS by ``name.internal``
with the certificates the platform issues, the server admits only the callers its "accept
calls from" list names, another project's certificate is refused even where the network lets
its packets through (a peering), and a certificate renewal and a whole CA rotation run under a
calling loop without one refused call and without restarting a pod.

The programs in the pods are the service page's Python snippets (``networking.mtls_snippets``),
verbatim: the server as it is, the client's ``call`` in a loop.
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.utils import timezone

from networking import mtls, mtls_snippets
from networking.models import Project, ServiceCertificate
from tests.conftest import World
from tests.dataplane.conftest import TIMINGS, Call, Calls, DataPlane, create_service, in_sync
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PORT = 8443
TLS_VOLUME = "stackblaze-tls"


def _snippet(prefix: str, service: str, caller: str) -> str:
    code = mtls_snippets.snippets(service, PORT, caller, 9000)
    return next(text for label, text in code.items() if label.startswith(prefix))


def server_program(service: str) -> str:
    """The Python server of the service page, as it is."""
    return _snippet("Python server", service, "caller")


# The client of the service page calling in a loop, ten times a second: one JSON line a call.
LOOP = """
{client}

import datetime, json, time

while True:
    at = datetime.datetime.now(datetime.timezone.utc).isoformat()
    try:
        status, body = call("/")
        print(json.dumps({{"at": at, "status": status, "body": body.strip()}}), flush=True)
    except Exception as error:  # refused at the handshake, unreachable, timed out
        print(json.dumps({{"at": at, "status": 0, "error": str(error)}}), flush=True)
    time.sleep(0.1)
"""


def caller_program(service: str, caller: str) -> str:
    client = _snippet("Python client", service, caller)
    library = client.split('\nif __name__ == "__main__":')[0]
    assert "def call(" in library
    return LOOP.format(client=library)


# From a pod of another project: its own certificate presented to ``host`` (reached by the
# cluster's DNS name, as a peering allows), the server's not checked: the server must refuse.
FOREIGN_CALL = """
import json, socket, ssl
tls = "/var/run/stackblaze/tls"
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
context.load_cert_chain(tls + "/cert.pem", tls + "/key.pem")
try:
    with socket.create_connection(({host!r}, {port}), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="billing.internal") as connection:
            connection.sendall(b"GET / HTTP/1.1\\r\\nHost: billing.internal\\r\\n\\r\\n")
            answer = connection.recv(200).decode(errors="replace")
    print(json.dumps({{"outcome": "answered" if answer else "closed", "answer": answer}}))
except OSError as error:
    print(json.dumps({{"outcome": "refused", "error": str(error)}}))
"""

# From a calling pod: the certificate the server presents (its serial and its issuer).
PRESENTED = """
import json, socket, ssl
tls = "/var/run/stackblaze/tls"
context = ssl.create_default_context(cafile=tls + "/ca.pem")
context.load_cert_chain(tls + "/cert.pem", tls + "/key.pem")
try:
    with socket.create_connection(("billing.internal", {port}), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="billing.internal") as connection:
            seen = connection.getpeercert()
except OSError as error:
    print(json.dumps({{"error": str(error)}}))
else:
    issuer = dict(pair[0] for pair in seen["issuer"])["commonName"]
    print(json.dumps({{"serial": seen["serialNumber"].lower().lstrip("0"), "issuer": issuer}}))
"""


def _mounted(dataplane: DataPlane, namespace: str, name: str) -> bool:
    """The workload mounts its TLS files (the worker set it) and runs that template."""
    deployment = dataplane.apps.read_namespaced_deployment(name, namespace)
    volumes = deployment.spec.template.spec.volumes or []
    return any(volume.name == TLS_VOLUME for volume in volumes) and dataplane.rolled_out(
        namespace, name
    )


def _pods(dataplane: DataPlane, namespace: str, name: str) -> dict[str, int]:
    """Each pod of the service with how often its container restarted."""
    return {
        pod.metadata.name: sum(status.restart_count for status in pod.status.container_statuses)
        for pod in dataplane.pods(namespace, name)
    }


def _turn_on(call: Call, token: str, project: Project) -> None:
    response = call(token, "POST", f"/projects/{project.uid}/mtls")
    assert response.status_code == 201, response.content


def _run(dataplane: DataPlane, namespace: str, name: str, program: str, **extra: Any) -> None:
    dataplane.deploy(
        namespace,
        name,
        image_name="python",
        command=["python3", "-c", program],
        wait=False,
        **extra,
    )


def _deploy_billing_and_callers(
    dataplane: DataPlane, project: Project, callers: tuple[str, ...]
) -> None:
    namespace = project.namespace
    # Without its files the server cannot start: the worker mounts them once it sees the
    # workload (the watcher asks for the pass), and that rollout is the one that serves.
    _run(dataplane, namespace, "billing", server_program("billing"), ports=[PORT])
    for caller in callers:
        _run(dataplane, namespace, caller, caller_program("billing", caller), ports=[])
    for name in ("billing", *callers):
        wait_until(partial(_mounted, dataplane, namespace, name), f"{name} mounts its TLS", 120)
    # Pods from before the mount (crashing without files) gone: only the mounted ones call.
    wait_until(
        lambda: all(len(dataplane.pods(namespace, name)) == 1 for name in ("billing", *callers)),
        "one pod each",
        60,
    )


def test_mutual_tls_admits_the_allowed_caller_by_name_and_refuses_the_others(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    world: World,
    api_client: Call,
    acme_token: str,
    globex_token: str,
    api_tokens: dict[str, str | None],
    namespaces: list[str],
) -> None:
    project = storefront["project"]
    namespace = project.namespace
    billing = create_service(api_client, acme_token, project, "billing", "private", ports=[PORT])
    for name in ("caller", "intruder"):
        create_service(api_client, acme_token, project, name, "private", ports=[9000])
    _turn_on(api_client, acme_token, project)
    chosen = api_client(
        acme_token,
        "PUT",
        f"/projects/{project.uid}/services/{billing['id']}/callers",
        {"any": False, "callers": ["caller"]},
    )
    assert chosen.status_code == 200, chosen.content
    wait_until(partial(in_sync, project), "Storefront in sync with mutual TLS", 60)
    _deploy_billing_and_callers(dataplane, project, ("caller", "intruder"))
    since = timezone.now().isoformat()
    calls = {name: Calls(dataplane, namespace, name, since) for name in ("caller", "intruder")}
    for each in calls.values():
        each.start()
    try:
        # The allowed caller, by billing.internal: the TLS handshake of both sides, then the
        # accept list, admit it, and billing knows who called.
        wait_until(
            lambda: sum(line["status"] == 200 for line in calls["caller"].lines) >= 5,
            "caller's calls to be answered",
            60,
        )
        # A service of the project, with a certificate of the same CA, that billing's list
        # does not name: refused by the application, 403.
        wait_until(
            lambda: sum(line["status"] == 403 for line in calls["intruder"].lines) >= 5,
            "intruder's calls to be refused",
            60,
        )
    finally:
        for each in calls.values():
            each.stop()
    identity = f"spiffe://stackblaze.cloud/project/{project.uid}/service/caller"
    answered = [line for line in calls["caller"].lines if line["status"] == 200]
    assert all(line["body"] == f"Hello, {identity}" for line in answered), answered[:3]
    assert not [line for line in calls["caller"].lines if line["status"] == 403]
    assert not [line for line in calls["intruder"].lines if line["status"] == 200]

    # Another project, peered with this one so that its packets do reach billing: its own
    # certificate (its own project's CA) is refused in the TLS handshake.
    analytics = world.other_project
    namespaces.append(analytics.namespace)
    _turn_on(api_client, globex_token, analytics)
    peering = world.peering  # Analytics asked to peer with Storefront
    accepted = api_client(
        acme_token, "POST", f"/projects/{project.uid}/peerings/{peering.pk}/accept"
    )
    assert accepted.status_code == 200, accepted.content
    support = api_tokens["support"]
    assert support is not None
    approved = api_client(support, "POST", f"/support/peerings/{peering.pk}/approve")
    assert approved.status_code == 200, approved.content
    wait_until(partial(in_sync, analytics), "Analytics in sync", 60)
    sleeper = "import time\nwhile True: time.sleep(3600)"
    _run(dataplane, analytics.namespace, "warehouse", sleeper, ports=[])
    wait_until(
        partial(_mounted, dataplane, analytics.namespace, "warehouse"), "warehouse mounts", 120
    )
    pod = wait_until(
        lambda: next(
            (
                p.metadata.name
                for p in dataplane.pods(analytics.namespace, "warehouse")
                if p.status.phase == "Running"
                and p.spec.volumes
                and any(v.name == TLS_VOLUME for v in p.spec.volumes)
            ),
            None,
        ),
        "a warehouse pod with its certificate",
        60,
    )
    target = f"billing.{namespace}.svc.cluster.local"
    # The network lets it through (the peering): the refusal below is TLS's, not a policy's.
    dataplane.until(analytics.namespace, pod, "connect", f"{target}:{PORT}", timeout=60)
    call = FOREIGN_CALL.format(host=target, port=PORT)
    foreign = dataplane.exec(analytics.namespace, pod, "python3", "-c", call)
    # Refused in the handshake: an alert (unknown CA), or the connection closed on it under
    # load; never an answer.
    assert foreign.data.get("outcome") == "refused", foreign.output
    # The same call, with the certificate of an allowed caller of billing's own project, is
    # answered: it is the certificate that was refused, not the call.
    caller_pod = dataplane.pods(namespace, "caller")[0].metadata.name
    own = dataplane.exec(namespace, caller_pod, "python3", "-c", call)
    assert own.data.get("outcome") == "answered", own.output
    assert own.data["answer"].startswith("HTTP/1.0 200"), own.output
    TIMINGS.append(
        f"mutual TLS: {len(answered)} calls admitted by name, "
        f"{sum(line['status'] == 403 for line in calls['intruder'].lines)} refused by the accept "
        f"list, another project's certificate refused in the handshake ({foreign.data['error']})"
    )


def test_renewal_and_a_ca_rotation_refuse_no_call_and_restart_no_pod(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    api_client: Call,
    acme_token: str,
) -> None:
    project = storefront["project"]
    namespace = project.namespace
    create_service(api_client, acme_token, project, "billing", "private", ports=[PORT])
    create_service(api_client, acme_token, project, "caller", "private", ports=[9000])
    _turn_on(api_client, acme_token, project)
    wait_until(partial(in_sync, project), "Storefront in sync with mutual TLS", 60)
    _deploy_billing_and_callers(dataplane, project, ("caller",))
    caller_pod = next(iter(_pods(dataplane, namespace, "caller")))

    def presented() -> dict[str, Any]:
        answer = dataplane.exec(namespace, caller_pod, "python3", "-c", PRESENTED.format(port=PORT))
        return answer.data

    # Counted from once the caller's calls are answered (a new pod's first packets may meet
    # the policy before the enforcer knows it: that is the startup, not mutual TLS).
    warmup = Calls(dataplane, namespace, "caller", timezone.now().isoformat())
    warmup.start()
    wait_until(lambda: any(line["status"] == 200 for line in warmup.lines), "a first call", 60)
    warmup.stop()
    calls = Calls(dataplane, namespace, "caller", timezone.now().isoformat())
    calls.start()
    wait_until(lambda: len(calls.lines) >= 10, "the caller to call", 30)
    pods = {name: _pods(dataplane, namespace, name) for name in ("billing", "caller")}
    first = presented()

    # Renewal: the certificates come due (two thirds of their life, here made to pass), beat
    # asks for a pass, and the pass issues new ones into the mounted files.
    ServiceCertificate.objects.filter(service__project=project).update(
        renew_after=timezone.now() - timedelta(seconds=1)
    )
    assert mtls.renew_due() == 1
    renewed = ServiceCertificate.objects.get(service__project=project, service__name="billing")
    wait_until(
        lambda: (
            (row := ServiceCertificate.objects.get(pk=renewed.pk)).serial != first["serial"]
            and presented().get("serial") == row.serial
        ),
        "billing to present its renewed certificate",
        90,
        every=1,
    )

    # A whole CA rotation: trust both, issue from the new, retire the old.
    started = api_client(acme_token, "POST", f"/projects/{project.uid}/mtls/rotate-ca")
    assert started.status_code == 202, started.content

    def rotated() -> bool:
        state = api_client(acme_token, "GET", f"/projects/{project.uid}/mtls").json()
        return not state["rotation"]["rotating"] and state["rotation"]["last_rotated_at"]

    wait_until(rotated, "the CA rotation to complete", 300, every=1)
    new_ca = f"project {project.uid} CA 2"
    at_completion = presented().get("issuer")
    # Calls go on until the server presents the new CA's certificate (at once, unless the
    # rotation said "completed" before the files reached the pods), and a little after.
    wait_until(lambda: presented().get("issuer") == new_ca, "billing on the new CA", 60, every=1)
    seen = len(calls.lines)
    wait_until(lambda: len(calls.lines) >= seen + 10, "calls after the rotation", 30)
    calls.stop()

    failed = [line for line in calls.lines if line["status"] != 200]
    assert not failed, f"{len(failed)} of {len(calls.lines)} calls failed: {failed[:5]}"
    # "Completed" means done: every pod had the new files by then.
    assert at_completion == new_ca
    # In place: the same pods, none restarted, through the renewal and the rotation.
    assert {name: _pods(dataplane, namespace, name) for name in pods} == pods
    TIMINGS.append(
        f"mutual TLS: {len(calls.lines)} calls over a renewal and a CA rotation, none refused, "
        f"no pod restarted ({json.dumps(first)} → {json.dumps(presented())})"
    )
