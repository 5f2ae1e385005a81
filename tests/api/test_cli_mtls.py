"""``stackblaze mtls``, run as users run it against a live server (and, once, a real worker):
turning mutual TLS on after saying what it does, reading the certificates, rotating the CA and
choosing who may call a service. What is checked is what a terminal or a CI job sees (the
output, the exit code) and what the database then holds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from networking import mtls
from networking.models import CertificateAuthority, MutualTLS, Service, ServiceCertificate
from networking.passes import reconcile
from tests.api import test_cli
from tests.api.test_cli import Run
from tests.conftest import World, make_service, user
from tests.waiting import wait_until
from tests.worker import WorkerProcess

stackblaze = test_cli.stackblaze  # the same fixtures: the installed command, a live server
worker = test_cli.worker


def _row(output: str, first: str) -> str:
    """The table line that starts with ``first``."""
    return next(line for line in output.splitlines() if line.split()[:1] == [first])


def _enabled(world: World) -> bool:
    return MutualTLS.objects.filter(project=world.project).exists()


def test_status_of_a_project_without_it_says_how_to_turn_it_on(
    stackblaze: Run, world: World
) -> None:
    shown = stackblaze("mtls", "status", role="viewer")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == (
        "Mutual TLS is off for Storefront. `stackblaze mtls enable` turns it on (owners)."
    )
    certs = stackblaze("mtls", "certs", role="viewer")
    assert certs.stdout.strip().startswith("Mutual TLS is off for Storefront: no certificates.")
    as_json = json.loads(stackblaze("--json", "mtls", "status", role="viewer").stdout)
    assert as_json["enabled"] is False and as_json["certificates"] == []


def test_an_owner_turns_it_on_after_saying_what_it_does(stackblaze: Run, world: World) -> None:
    unasked = stackblaze("mtls", "enable", role="owner")  # a script: no terminal to ask
    assert unasked.returncode == 2
    assert "Add --yes to turn on mutual TLS for Storefront without a prompt" in unasked.stderr
    assert not _enabled(world)

    declined = stackblaze("mtls", "enable", role="owner", typed="n\n")
    assert declined.returncode == 2
    assert (
        "Turn on mutual TLS for Storefront? Each workload restarts once to mount its "
        "certificate at /var/run/stackblaze/tls, and it can't be turned off."
    ) in declined.stderr
    assert not _enabled(world)

    member = stackblaze("mtls", "enable", "--yes", role="member")
    assert member.returncode == 1
    assert member.stderr.strip() == "Error: Your role in this organization can’t make this change."
    assert not _enabled(world)

    enabled = stackblaze("mtls", "enable", role="owner", typed="y\n")
    assert enabled.returncode == 0, enabled.stderr
    assert enabled.stdout.strip() == (
        "Mutual TLS is on for Storefront: each service gets a certificate from the project's CA "
        "at /var/run/stackblaze/tls, and each workload restarts once to mount it. `stackblaze "
        "mtls status` follows it."
    )
    state = MutualTLS.objects.get(project=world.project)
    assert state.enabled_by_label == "owner via token owner-token"

    again = stackblaze("mtls", "enable", role="owner")  # nothing to ask: it is on
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == (
        f"Mutual TLS is already on for Storefront, since {state.enabled_at:%Y-%m-%d %H:%M} UTC."
    )
    assert CertificateAuthority.objects.filter(project=world.project).count() == 1


def test_the_certificates_the_worker_issues_are_listed(
    stackblaze: Run, worker: WorkerProcess, world: World
) -> None:
    enabled = stackblaze("mtls", "enable", "--yes", role="owner")
    assert enabled.returncode == 0, enabled.stderr
    wait_until(
        lambda: ServiceCertificate.objects.filter(service__project=world.project).count() == 2,
        "the worker to issue both services' certificates",
    )

    status = stackblaze("mtls", "status", role="viewer")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("Mutual TLS is on for Storefront since ")
    assert lines[0].endswith("(turned on by owner via token owner-token).")
    assert lines[1] == (
        "2 services with a certificate. Each is valid for 1 week and renewed well before it "
        "expires (`stackblaze mtls certs`)."
    )
    assert lines[2] == "CA rotation: never rotated."
    assert _row(status.stdout, "1").split()[-1] == "trusted"

    certs = stackblaze("mtls", "certs", role="viewer")
    assert certs.returncode == 0, certs.stderr
    assert _row(certs.stdout, "SERVICE").split() == [
        "SERVICE", "IDENTITY", "CA", "EXPIRES", "RENEWS",
    ]  # fmt: skip
    issued = ServiceCertificate.objects.get(service=world.api)
    assert re.search(
        rf"api\s+spiffe://stackblaze\.cloud/project/{world.project.uid}/service/api\s+1\s+"
        rf"{issued.not_after:%Y-%m-%d %H:%M} UTC\s+{issued.renew_after:%Y-%m-%d %H:%M} UTC",
        certs.stdout,
    ), certs.stdout
    assert _row(certs.stdout, "postgres")

    as_json = stackblaze("--json", "mtls", "certs", role="viewer")
    assert [c["service"] for c in json.loads(as_json.stdout)] == ["api", "postgres"]
    everything = stackblaze("--json", "mtls", "status", role="owner").stdout
    assert "BEGIN CERTIFICATE" in everything and "PRIVATE KEY" not in everything


def test_a_new_service_is_said_to_wait_for_its_certificate(
    stackblaze: Run, world: World, manifests: Path
) -> None:
    mtls.enable(world.project, actor=user(world, "owner"))
    assert reconcile(world.project.pk).status == "applied"
    make_service(world.project, "worker", Service.Kind.PRIVATE, [3000])
    status = stackblaze("mtls", "status", role="viewer")
    assert "2 services with a certificate; 1 waiting for a first one." in status.stdout
    certs = stackblaze("mtls", "certs", role="viewer")
    assert certs.stdout.splitlines()[-1] == (
        "1 service has no certificate yet: the worker issues it on its next pass."
    )


def test_an_owner_rotates_the_ca(stackblaze: Run, world: World) -> None:
    off = stackblaze("mtls", "rotate-ca", "--yes", role="owner")
    assert off.returncode == 1
    assert off.stderr.strip() == "Error: Mutual TLS is off for this project: turn it on first."

    mtls.enable(world.project, actor=user(world, "owner"))
    unasked = stackblaze("mtls", "rotate-ca", role="owner")
    assert unasked.returncode == 2
    assert "Add --yes to rotate the CA of Storefront without a prompt" in unasked.stderr
    assert not MutualTLS.objects.get(project=world.project).rotating
    member = stackblaze("mtls", "rotate-ca", "--yes", role="member")
    assert member.returncode == 1
    assert not MutualTLS.objects.get(project=world.project).rotating

    started = stackblaze("mtls", "rotate-ca", role="owner", typed="y\n")
    assert started.returncode == 0, started.stderr
    assert "Rotate the CA of Storefront? Every service gets a certificate from a new CA" in (
        started.stderr
    )
    assert started.stdout.strip() == (
        "Started rotating the CA of Storefront to CA 2: every service trusts it beside the old "
        "one first. Follow it with `stackblaze mtls status`."
    )
    assert MutualTLS.objects.get(project=world.project).rotation_phase == "trust_new"

    status = stackblaze("mtls", "status", role="viewer")
    assert re.search(
        r"CA rotation in progress; this phase started (just now|\d+ s ago):", status.stdout
    )
    assert "  → Trust the new CA\n" in status.stdout
    assert "    Issue from the new CA\n" in status.stdout
    assert _row(status.stdout, "2").split()[-1] == "trusted"

    again = stackblaze("mtls", "rotate-ca", "--yes", role="owner")
    assert again.returncode == 1
    assert "The CA is already being rotated" in again.stderr
    assert CertificateAuthority.objects.filter(project=world.project).count() == 2


def test_an_owner_chooses_who_may_call_a_service(stackblaze: Run, world: World) -> None:
    make_service(world.project, "worker", Service.Kind.PRIVATE, [3000])
    shown = stackblaze("mtls", "callers", "postgres", role="viewer")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "postgres accepts calls from every service of the project.",
        "Mutual TLS is off for this project: this applies once it is on.",
    ]

    mtls.enable(world.project, actor=user(world, "owner"))
    # Leaving services out refuses their calls: that asks first.
    unasked = stackblaze("mtls", "callers", "postgres", "--only", "worker", role="owner")
    assert unasked.returncode == 2
    assert "Add --yes to refuse calls to postgres from api without a prompt" in unasked.stderr
    world.postgres.refresh_from_db()
    assert world.postgres.accepts_any_caller

    viewer = stackblaze("mtls", "callers", "postgres", "--only", "worker", "--yes", role="viewer")
    assert viewer.returncode == 1
    world.postgres.refresh_from_db()
    assert world.postgres.accepts_any_caller

    only = stackblaze("mtls", "callers", "postgres", "--only", "worker", role="owner", typed="y\n")
    assert only.returncode == 0, only.stderr
    assert "Refuse calls to postgres from api?" in only.stderr
    assert only.stdout.strip() == "postgres accepts calls from worker only."
    world.postgres.refresh_from_db()
    assert not world.postgres.accepts_any_caller
    assert [service.name for service in world.postgres.accepts_calls_from.all()] == ["worker"]

    # Adding a caller leaves nobody out: nothing to ask.
    more = stackblaze("mtls", "callers", "postgres", "--only", "worker, api", role="owner")
    assert more.returncode == 0, more.stderr
    assert more.stdout.strip() == "postgres accepts calls from api, worker only."

    unknown = stackblaze("mtls", "callers", "postgres", "--only", "api,worker,mailer", role="owner")
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines()[0] == "Error: This project has no service named “mailer”."

    nobody = stackblaze("mtls", "callers", "postgres", "--only", "", "--yes", role="owner")
    assert nobody.returncode == 1
    assert nobody.stderr.startswith("Error: Choose the services that may call postgres")

    both = stackblaze("mtls", "callers", "postgres", "--any", "--only", "api", role="owner")
    assert both.returncode == 2 and "Give --any or --only, not both." in both.stderr

    opened = stackblaze("mtls", "callers", "postgres", "--any", role="owner")
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.strip() == "postgres accepts calls from every service of the project."
    world.postgres.refresh_from_db()
    assert world.postgres.accepts_any_caller

    as_json = stackblaze("--json", "mtls", "callers", "postgres", role="viewer")
    assert json.loads(as_json.stdout) == {"any": True, "callers": []}
