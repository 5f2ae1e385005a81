"""``stackblaze services`` and ``stackblaze secrets`` beyond the basics, run as users run them
against a live server: wiring one service into another, old hostnames, each service's status,
and who receives a shared secret. What is checked is what a terminal or a CI job sees (the
output, the exit code) and what the database then holds.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.utils import timezone

from networking.models import (
    Project,
    ReferenceVariable,
    SecretRotation,
    Service,
    ServiceAlias,
    SharedSecret,
)
from tests.api import test_cli
from tests.api.test_cli import Run
from tests.conftest import World, make_secret, make_service

stackblaze = test_cli.stackblaze  # the same fixture: the installed command, a live server


def _row(output: str, first: str) -> str:
    """The table line that starts with ``first``."""
    return next(line for line in output.splitlines() if line.split()[:1] == [first])


def test_a_database_is_used_in_another_service_and_taken_back(
    stackblaze: Run, world: World
) -> None:
    linked = stackblaze("services", "link", "postgres", "api")
    assert linked.returncode == 0, linked.stderr
    assert linked.stdout.strip() == (
        "api receives DATABASE_URL, the connection string of postgres; it restarts once to "
        "pick it up."
    )
    wired = ReferenceVariable.objects.get(source=world.postgres)
    assert (wired.consumer, wired.variable) == (world.api, "DATABASE_URL")
    make_service(world.project, "worker", Service.Kind.PRIVATE, [3000])
    named = stackblaze("services", "link", "api", "worker", "--variable", "STOREFRONT_API")
    assert named.stdout.strip().startswith(
        "worker receives STOREFRONT_API, the internal URL of api;"
    )
    # Both sides of api: what it gives, what it receives.
    both = stackblaze("services", "refs", "api")
    assert re.search(r"api gives to\s+worker\s+STOREFRONT_API", both.stdout), both.stdout
    assert re.search(r"api receives from\s+postgres\s+DATABASE_URL", both.stdout), both.stdout

    unasked = stackblaze("services", "unlink", "postgres", "api")  # a script: no terminal
    assert unasked.returncode == 2
    assert "Add --yes to take DATABASE_URL from api without a prompt" in unasked.stderr
    assert ReferenceVariable.objects.filter(source=world.postgres).exists()
    # On a terminal it asks: no keeps it, yes takes it.
    declined = stackblaze("services", "unlink", "postgres", "api", typed="n\n")
    assert declined.returncode == 2
    assert "Take DATABASE_URL (the address of postgres) from api? It restarts without it." in (
        declined.stderr
    )
    assert ReferenceVariable.objects.filter(source=world.postgres).exists()
    unlinked = stackblaze("services", "unlink", "postgres", "api", typed="y\n")
    assert unlinked.returncode == 0, unlinked.stderr
    assert unlinked.stdout.strip() == (
        "api no longer receives DATABASE_URL; it restarts once without it."
    )
    assert not ReferenceVariable.objects.filter(source=world.postgres).exists()


def test_an_old_hostname_is_kept_longer_then_ended_by_an_owner(
    stackblaze: Run, world: World
) -> None:
    stackblaze("services", "rename", "api", "Gateway")
    alias = ServiceAlias.objects.get(name="api")
    listed = stackblaze("services", "aliases", "gateway")
    assert re.search(
        rf"api\.internal\s+{alias.expires_at:%Y-%m-%d %H:%M} UTC\s+23 hours, 59 minutes from now",
        listed.stdout,
    ), listed.stdout

    kept = stackblaze("services", "keep-old-name", "gateway", "api.internal")
    assert kept.returncode == 0, kept.stderr
    longer = ServiceAlias.objects.get(name="api").expires_at
    assert longer - alias.expires_at == timedelta(days=1)
    assert kept.stdout.strip() == (
        f"api.internal keeps resolving to gateway.internal until {longer:%Y-%m-%d %H:%M} UTC "
        "(1 day, 23 hours from now)."
    )

    unasked = stackblaze("services", "end-old-name", "gateway", "api", role="owner")
    assert unasked.returncode == 2
    assert "Add --yes to stop api.internal resolving without a prompt" in unasked.stderr
    assert ServiceAlias.objects.filter(name="api").exists()
    ended = stackblaze("services", "end-old-name", "gateway", "api", "--yes", role="owner")
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.strip() == (
        "api.internal no longer resolves; the name is free for another service."
    )
    assert not ServiceAlias.objects.filter(name="api").exists()
    gone = stackblaze("services", "aliases", "gateway")
    assert gone.stdout.strip() == "No old hostname resolves to gateway.internal."


def test_the_lists_say_what_the_dashboard_says(stackblaze: Run, world: World) -> None:
    """Each service's status and ClusterIP; each secret's rotations counted, never a version."""
    cache = make_service(world.project, "cache", Service.Kind.REDIS)
    worker = make_service(world.project, "worker", Service.Kind.PRIVATE, [3000])
    Project.objects.filter(pk=world.project.pk).update(applied_generation=5)
    for service, generation, cluster_ip in (
        (world.api, 5, "10.96.0.12"),  # applied, its ClusterIP read back
        (world.postgres, 6, "10.96.0.13"),  # changed since: pending, with the IP it had
        (cache, 4, None),  # applied, no ClusterIP read back yet
        (worker, 6, None),  # new, not applied yet
    ):
        Service.objects.filter(pk=service.pk).update(
            changed_generation=generation, cluster_ip=cluster_ip
        )
    rotated = SharedSecret.objects.filter(pk=world.secret.pk)
    rotated.update(
        last_rotated_at=timezone.now() - timedelta(hours=3, seconds=5), rotate_every_days=30
    )
    for _ in range(2):
        SecretRotation.objects.create(
            secret=world.secret, started_by_label="owner", result=SecretRotation.Result.COMPLETED
        )
    rotating = make_secret(world.project, "WEBHOOK_SECRET", [world.api])
    SharedSecret.objects.filter(pk=rotating.pk).update(rotation_phase="send_new")
    SecretRotation.objects.create(secret=rotating, started_by_label="owner")
    make_secret(world.project, "SESSION_KEY", [])

    services = stackblaze("services", "ls", role="viewer")
    assert services.returncode == 0, services.stderr
    assert _row(services.stdout, "NAME").split() == [
        "NAME", "KIND", "ADDRESS", "CLUSTERIP", "STATUS",
    ]  # fmt: skip
    assert _row(services.stdout, "api").split()[-2:] == ["10.96.0.12", "Live"]
    assert _row(services.stdout, "postgres").split()[-2:] == ["10.96.0.13", "Pending"]
    assert _row(services.stdout, "cache").endswith("not assigned yet  Applied")
    assert _row(services.stdout, "worker").split()[-2:] == ["pending", "Pending"]
    shown = stackblaze("services", "show", "worker", role="viewer")
    assert re.search(r"ClusterIP\s+pending\s*\n", shown.stdout), shown.stdout
    assert re.search(
        r"Status\s+Pending: the cluster has not caught up with its last change yet", shown.stdout
    ), shown.stdout

    secrets = stackblaze("secrets", "ls", role="viewer")
    assert secrets.returncode == 0, secrets.stderr
    assert "VERSION" not in secrets.stdout
    assert re.search(
        r"INTERNAL_API_SECRET\s+2\s+api\s+rotated 3 hours ago · every 30 days\s*\n", secrets.stdout
    ), secrets.stdout
    assert re.search(r"WEBHOOK_SECRET\s+1\s+api\s+Callers send the new value\s*\n", secrets.stdout)
    assert re.search(r"SESSION_KEY\s+0\s+no service yet\s+never rotated\s*\n", secrets.stdout)


def test_an_owner_gives_and_takes_a_secret_and_ends_a_grace_window(
    stackblaze: Run, world: World
) -> None:
    SharedSecret.objects.filter(pk=world.secret.pk).update(rotate_every_days=30)

    def receivers() -> tuple[set[str], int | None]:
        secret = SharedSecret.objects.get(pk=world.secret.pk)
        return {service.name for service in secret.services.all()}, secret.rotate_every_days

    given = stackblaze("secrets", "give", "INTERNAL_API_SECRET", "postgres", role="owner")
    assert given.returncode == 0, given.stderr
    assert given.stdout.strip() == (
        "INTERNAL_API_SECRET is received by api, postgres. postgres restarts once to receive it."
    )
    assert receivers() == ({"api", "postgres"}, 30)  # its schedule kept

    stranger = stackblaze("secrets", "take", "INTERNAL_API_SECRET", "worker", role="owner")
    assert stranger.returncode == 1
    assert "worker does not receive INTERNAL_API_SECRET" in stranger.stderr
    unasked = stackblaze("secrets", "take", "INTERNAL_API_SECRET", "api", role="owner")
    assert unasked.returncode == 2
    assert "Add --yes to take INTERNAL_API_SECRET from api without a prompt" in unasked.stderr
    assert receivers() == ({"api", "postgres"}, 30)
    taken = stackblaze("secrets", "take", "INTERNAL_API_SECRET", "api", "--yes", role="owner")
    assert taken.returncode == 0, taken.stderr
    assert taken.stdout.strip() == (
        "api no longer receives INTERNAL_API_SECRET and restarts without it; it goes to postgres."
    )
    assert receivers() == ({"postgres"}, 30)

    started = stackblaze("secrets", "rotate", "INTERNAL_API_SECRET", role="owner")
    assert started.stdout.strip() == (
        "Started rotation 1 of INTERNAL_API_SECRET. Follow it with `stackblaze secrets rotation "
        "INTERNAL_API_SECRET --wait`."
    )
    following = stackblaze("secrets", "rotation", "INTERNAL_API_SECRET", role="viewer")
    assert following.returncode == 0, following.stderr
    assert "Rotation 1 of INTERNAL_API_SECRET in progress:" in following.stdout
    assert "→ Accept the new value" in following.stdout
    assert re.search(r"postgres\s+no workload deployed yet", following.stdout)

    # The rotation reaches its grace window (the worker's doing; here, the row's).
    grace_until = timezone.now() + timedelta(hours=1)
    SharedSecret.objects.filter(pk=world.secret.pk).update(
        rotation_phase=SharedSecret.Phase.GRACE, grace_until=grace_until
    )
    unasked = stackblaze("secrets", "end-grace", "INTERNAL_API_SECRET", role="owner")
    assert unasked.returncode == 2
    assert "Add --yes to end the grace window of INTERNAL_API_SECRET" in unasked.stderr
    assert SharedSecret.objects.get(pk=world.secret.pk).grace_until == grace_until
    ended = stackblaze("secrets", "end-grace", "INTERNAL_API_SECRET", "--yes", role="owner")
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.strip() == (
        "Ended the grace window of rotation 1 of INTERNAL_API_SECRET: the old value is being "
        "retired, and callers still sending it are refused."
    )
    assert SharedSecret.objects.get(pk=world.secret.pk).grace_until is None


def test_an_owner_deletes_a_secret_after_saying_so(stackblaze: Run, world: World) -> None:
    unasked = stackblaze("secrets", "rm", "INTERNAL_API_SECRET", role="owner")
    assert unasked.returncode == 2 and "Add --yes to delete INTERNAL_API_SECRET" in unasked.stderr
    assert SharedSecret.objects.filter(pk=world.secret.pk).exists()
    member = stackblaze("secrets", "rm", "INTERNAL_API_SECRET", "--yes", role="member")
    assert member.returncode == 1
    deleted = stackblaze("secrets", "rm", "INTERNAL_API_SECRET", "--yes", role="owner")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == "Deleted INTERNAL_API_SECRET; its services restart without it."
    assert not SharedSecret.objects.filter(pk=world.secret.pk).exists()
