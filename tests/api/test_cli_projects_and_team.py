"""``stackblaze projects``, ``members``, ``tokens`` and ``support``, run as users run them
against a live server. What is checked is what a terminal or a CI job sees (the output, the
exit code) and what the database then holds.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.utils import timezone

from api.models import ApiToken
from networking.models import AuditEvent, Membership, PeeringRequest, Project
from tests.api import test_cli
from tests.api.test_cli import Run
from tests.conftest import World

stackblaze = test_cli.stackblaze  # the same fixture: the installed command, a live server


def test_an_owner_creates_renames_and_deletes_a_project(stackblaze: Run, world: World) -> None:
    created = stackblaze("projects", "create", "Checkout [eu]", role="owner")
    assert created.returncode == 0, created.stderr
    project = Project.objects.get(organization=world.acme, name="Checkout [eu]")
    assert created.stdout.strip() == (
        f"Created project Checkout [eu] ({project.uid}) in acme. Act on it with --project "
        f"{project.uid}."
    )
    listed = stackblaze("projects", role="owner")  # with no command, it lists them
    assert "Checkout [eu]" in listed.stdout and "Storefront" in listed.stdout

    renamed = stackblaze("--project", project.uid, "projects", "rename", "Checkout", role="owner")
    assert renamed.returncode == 0, renamed.stderr
    assert renamed.stdout.strip() == (
        "Renamed project Checkout [eu] to Checkout; its ID, namespace and hostnames stay as "
        "they are."
    )
    assert Project.objects.get(pk=project.pk).name == "Checkout"

    unasked = stackblaze("--project", "Checkout", "projects", "rm", role="owner")
    assert unasked.returncode == 2
    assert "Add --yes to delete project Checkout without a prompt" in unasked.stderr
    assert Project.objects.filter(pk=project.pk).exists()
    deleted = stackblaze("--project", "Checkout", "projects", "rm", "--yes", role="owner")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == (
        f"Deleted project Checkout; the worker removes its namespace {project.namespace} from "
        "the cluster."
    )
    assert not Project.objects.filter(pk=project.pk).exists()
    event = AuditEvent.objects.get(action=AuditEvent.Action.PROJECT_DELETED)
    assert (event.target, event.actor_display) == ("Checkout", "owner via token owner-token")


def test_on_a_terminal_deleting_a_project_takes_its_name_typed_back(
    stackblaze: Run, world: World
) -> None:
    mistyped = stackblaze("projects", "rm", role="owner", typed="storefront\n")
    assert mistyped.returncode == 2, mistyped.stderr
    assert "Type Storefront to confirm" in mistyped.stderr
    assert (
        "“storefront” is not the project's name, Storefront; nothing was deleted."
        in mistyped.stderr
    )
    assert Project.objects.filter(pk=world.project.pk).exists()
    typed = stackblaze("projects", "rm", role="owner", typed="Storefront\n")
    assert typed.returncode == 0, typed.stderr
    assert not Project.objects.filter(pk=world.project.pk).exists()


def test_an_owner_adds_a_member_changes_their_role_and_removes_them(
    stackblaze: Run, world: World
) -> None:
    listed = stackblaze("members", "ls", role="owner")  # the token's organization: acme
    assert listed.returncode == 0, listed.stderr
    for role in ("owner", "member", "viewer"):
        assert re.search(rf"{role}\s+{role}@acme\.example\s+{role}\s*\n", listed.stdout)

    def role_of_outsider() -> str | None:
        found = Membership.objects.filter(organization=world.acme, user__username="outsider")
        return found.values_list("role", flat=True).first()

    added = stackblaze("members", "add", "outsider", "--role", "viewer", role="owner")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "Added outsider to acme as a viewer."
    assert role_of_outsider() == "viewer"
    changed = stackblaze("members", "role", "outsider", "owner", role="owner")
    assert changed.stdout.strip() == "outsider is now an owner of acme."
    assert role_of_outsider() == "owner"

    unasked = stackblaze("members", "rm", "outsider", role="owner")
    assert unasked.returncode == 2
    assert "Add --yes to remove outsider from acme without a prompt" in unasked.stderr
    assert role_of_outsider() == "owner"
    removed = stackblaze("members", "rm", "outsider", "--yes", role="owner")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "Removed outsider from acme; their tokens for it are revoked."
    assert role_of_outsider() is None


def test_a_token_is_listed_and_revoked_but_never_made_by_a_token(
    stackblaze: Run, world: World
) -> None:
    # A token can't make tokens (they would outlive it): the command is not there, and the
    # API refuses it (tests/api/test_api_operations.py).
    assert stackblaze("tokens", "create", "ci-deploy").returncode == 2
    member = world.users["member"]
    assert member is not None
    # Made on the API tokens page, which shows it once.
    row, token = ApiToken.issue(
        user=member,
        organization=world.acme,
        name="ci-deploy",
        role="viewer",
        expires_at=timezone.now() + timedelta(days=30),
    )
    works = stackblaze("projects", STACKBLAZE_TOKEN=token)
    assert works.returncode == 0 and "Storefront" in works.stdout

    listed = stackblaze("tokens", "ls")
    assert re.search(
        rf"{row.pk}\s+ci-deploy\s+{row.prefix}…\s+member\s+viewer\s+\S+\s+"
        rf"{row.expires_at:%Y-%m-%d}\s+\S.*\s+active\s*\n",
        listed.stdout,
    ), listed.stdout

    unasked = stackblaze("tokens", "revoke", "ci-deploy")
    assert unasked.returncode == 2 and "Add --yes to revoke ci-deploy" in unasked.stderr
    assert ApiToken.objects.get(pk=row.pk).revoked_at is None
    revoked = stackblaze("tokens", "revoke", "ci-deploy", "--yes")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == "Revoked ci-deploy: it is refused from its next request."
    assert ApiToken.objects.get(pk=row.pk).revoked_at is not None
    assert stackblaze("projects", STACKBLAZE_TOKEN=token).returncode == 1


def test_support_staff_approve_and_reject_peering_requests(stackblaze: Run, world: World) -> None:
    PeeringRequest.objects.filter(pk=world.peering.pk).update(
        status=PeeringRequest.Status.PENDING_SUPPORT
    )
    queue = stackblaze("support", "queue", role="support")
    assert queue.returncode == 0, queue.stderr
    assert re.search(rf"{world.peering.pk}\s+Analytics ↔ Storefront\s+Globex", queue.stdout)
    assert re.search(rf"{world.other_peering.pk}\s+Analytics ↔ Billing\s+Globex", queue.stdout)

    approved = stackblaze("support", "approve", str(world.other_peering.pk), role="support")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == (
        f"Approved peering #{world.other_peering.pk}: Approved, being connected."
    )
    assert (
        PeeringRequest.objects.get(pk=world.other_peering.pk).status
        == PeeringRequest.Status.APPROVED
    )
    rejected = stackblaze(
        "support", "reject", str(world.peering.pk), "--reason", "Use the public API.",
        role="support",
    )  # fmt: skip
    assert rejected.returncode == 0, rejected.stderr
    peering = PeeringRequest.objects.get(pk=world.peering.pk)
    assert (peering.status, peering.decision_reason) == (
        PeeringRequest.Status.REJECTED,
        "Use the public API.",
    )
