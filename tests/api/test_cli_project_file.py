"""The project as a file: ``stackblaze export``, ``plan`` and ``apply``, run as users run them,
on the demo data, against a live server (and, for ``--wait``, a real worker)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest
import yaml

from networking.models import (
    AuditEvent,
    PeeringRequest,
    Project,
    ReferenceVariable,
    Service,
    ServiceAlias,
    SharedSecret,
)
from stackblaze_cli.project_file import SCHEMA, FileInvalid, load
from tests.api.conftest import Cli
from tests.worker import WorkerProcess


def _state(project: Project) -> dict[str, Any]:
    """What the file describes, as the database holds it."""
    return {
        "services": sorted(
            (s.name, s.display_name, s.kind, tuple(s.ports)) for s in project.services.all()
        ),
        "secrets": sorted(
            (s.name, tuple(sorted(s.services.values_list("name", flat=True))))
            for s in SharedSecret.objects.filter(project=project)
        ),
        "references": sorted(
            (r.source.name, r.consumer.name, r.variable)
            for r in ReferenceVariable.objects.filter(project=project).select_related(
                "source", "consumer"
            )
        ),
    }


def test_the_demo_project_exported_and_applied_to_an_empty_project_is_the_same_project(
    cli: Cli, demo_worker: WorkerProcess
) -> None:
    storefront = Project.objects.get(name="Storefront")
    exported = cli("export", storefront.uid)
    assert exported.returncode == 0, exported.stderr
    text = exported.stdout
    document = yaml.safe_load(text)
    # Never a value: the secret is named, with its receivers, and generated where it is new.
    assert document["secrets"] == [
        {"name": "INTERNAL_API_SECRET", "services": ["api", "background-worker"], "generate": True}
    ]
    assert {"from": "postgres", "to": "api", "variable": "DATABASE_URL"} in document["references"]
    value = SharedSecret.objects.get(project=storefront).value
    assert value is not None and value.reveal() not in text
    jsonschema_rs.validator_for(SCHEMA).validate(document)  # the published schema agrees
    (cli.folder / "stackblaze.yaml").write_text(text)

    # The file names the demo project: applied to it, nothing would change (exit 0).
    same = cli("plan", "-f", "stackblaze.yaml")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "No changes." in same.stdout

    empty = cli("--json", "projects", "create", "Storefront Copy")
    assert empty.returncode == 0, empty.stderr
    copy = Project.objects.get(name="Storefront Copy")
    events_before = AuditEvent.objects.filter(project=copy).count()
    planned = cli("plan", "-f", "stackblaze.yaml", "--project", copy.uid)
    assert planned.returncode == 2, planned.stdout + planned.stderr  # changes: exit 2
    assert "+ service “api”: api.internal, web, 8080" in planned.stdout
    assert "+ secret INTERNAL_API_SECRET: a generated value, given to api, background-worker" in (
        planned.stdout
    )
    assert "Plan: 7 to add, 0 to change, 0 to delete." in planned.stdout
    # A plan changes nothing.
    assert AuditEvent.objects.filter(project=copy).count() == events_before
    assert not copy.services.exists()

    applied = cli("apply", "-f", "stackblaze.yaml", "--project", copy.uid, "--wait", timeout=180)
    assert applied.returncode == 0, applied.stdout + applied.stderr + demo_worker.tail()
    assert "Applied: 7 added, 0 changed, 0 deleted." in applied.stdout
    assert "in sync" in applied.stdout
    copy.refresh_from_db()
    assert copy.applied_generation == copy.generation
    assert _state(copy) == _state(storefront)
    assert PeeringRequest.objects.filter(requester_project=copy).count() == 1

    # Applied again, it finds nothing to do, and says so.
    again = cli("apply", "-f", "stackblaze.yaml", "--project", copy.uid)
    assert again.returncode == 0, again.stderr
    assert "No changes: the project already matches the file." in again.stdout
    after = cli("plan", "-f", "stackblaze.yaml", "--project", copy.uid)
    assert after.returncode == 0 and "No changes." in after.stdout


def test_a_rename_in_the_file_is_a_rename_with_its_old_hostname_kept(cli: Cli) -> None:
    storefront = Project.objects.get(name="Storefront")
    text = cli("export", storefront.uid).stdout
    document = yaml.safe_load(text)
    worker = next(s for s in document["services"] if s["name"] == "background-worker")
    worker.update(name="Job Runner", was="background-worker")
    (cli.folder / "stackblaze.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    before = Service.objects.get(project=storefront, name="background-worker").pk

    planned = cli("plan", "-f", "stackblaze.yaml")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert (
        "~ service “background-worker” → “Job Runner”: renamed to job-runner.internal; "
        "background-worker.internal keeps resolving to it for 24 h"
    ) in planned.stdout
    assert "Plan: 0 to add, 1 to change, 0 to delete." in planned.stdout

    applied = cli("apply", "-f", "stackblaze.yaml")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    renamed = Service.objects.get(pk=before)  # the same service, not a new one
    assert renamed.name == "job-runner"
    assert ServiceAlias.objects.filter(service=renamed, name="background-worker").exists()
    # Its secret and its reference followed it.
    secret = SharedSecret.objects.get(project=storefront)
    assert "job-runner" in secret.services.values_list("name", flat=True)
    assert cli("plan", "-f", "stackblaze.yaml").returncode == 0


def test_prune_deletes_only_when_asked(cli: Cli) -> None:
    storefront = Project.objects.get(name="Storefront")
    document = yaml.safe_load(cli("export", storefront.uid).stdout)
    document["services"] = [s for s in document["services"] if s["name"] != "cache"]
    (cli.folder / "stackblaze.yaml").write_text(yaml.safe_dump(document, sort_keys=False))

    kept = cli("plan", "-f", "stackblaze.yaml")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "! service “cache”: cache.internal is not in the file: kept (--prune deletes it)" in (
        kept.stdout
    )
    pruning = cli("plan", "-f", "stackblaze.yaml", "--prune")
    assert pruning.returncode == 2
    assert "- service “cache”" in pruning.stdout
    # No terminal to ask: pruning takes --yes.
    refused = cli("apply", "-f", "stackblaze.yaml", "--prune")
    assert refused.returncode != 0
    assert "--yes" in refused.stderr
    assert Service.objects.filter(project=storefront, name="cache").exists()
    done = cli("apply", "-f", "stackblaze.yaml", "--prune", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not Service.objects.filter(project=storefront, name="cache").exists()


def test_a_bad_file_gets_every_error_with_its_line_and_nothing_is_applied(cli: Cli) -> None:
    storefront = Project.objects.get(name="Storefront")
    (cli.folder / "stackblaze.yaml").write_text(
        "services:\n"
        "  - name: Ledger\n"
        "    ports: [8080, 0]\n"
        "  - name: 9lives\n"
        "  - name: Reports\n"
        "    kind: cobol\n"
        "secrets:\n"
        "  - name: NEW_KEY\n"
        "    services: [nowhere]\n"
        "references:\n"
        "  - from: ledger\n"
        "    to: ghost\n"
    )
    before = _state(storefront), AuditEvent.objects.count()
    for command in ("plan", "apply"):
        refused = cli(command, "-f", "stackblaze.yaml", "--project", storefront.uid)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "stackblaze.yaml:3: services[0].ports[1]: 0 is not a port (1 to 65535)" in (
            refused.stderr
        )
        assert "stackblaze.yaml:6: services[2].kind: 'cobol' is not one of" in refused.stderr
    # Past the file's own checks, what only the project can say, all at once too.
    (cli.folder / "stackblaze.yaml").write_text(
        "services:\n"
        "  - name: Ledger\n"
        "  - name: 9lives\n"
        "secrets:\n"
        "  - name: NEW_KEY\n"
        "    services: [nowhere]\n"
        "references:\n"
        "  - from: ledger\n"
        "    to: ghost\n"
    )
    refused = cli("apply", "-f", "stackblaze.yaml", "--project", storefront.uid)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    errors = refused.stderr
    assert "stackblaze.yaml:3: name: “9lives”: The hostname must start with a letter" in errors
    assert "stackblaze.yaml:5: services: “nowhere” is no service of the file" in errors
    assert "stackblaze.yaml:5: generate: the project has no NEW_KEY" in errors
    assert "stackblaze.yaml:8: to: “ghost” is no service of the file" in errors
    assert (_state(storefront), AuditEvent.objects.count()) == before


def test_the_schema_is_printed_for_editors_and_agrees_with_the_checks(cli: Cli) -> None:
    printed = cli("schema")
    assert printed.returncode == 0
    schema = json.loads(printed.stdout)
    assert schema == SCHEMA
    validator = jsonschema_rs.validator_for(schema)
    good = "services:\n  - name: API\n    kind: web\n    ports: [8080]\n"
    bad = [
        "services:\n  - name: API\n    ports: [0]\n",
        "services:\n  - name: API\n    colour: red\n",
        "secrets:\n  - name: lower_case\n",
        "references:\n  - from: api\n",
        "peerings:\n  - project: nope\n    justification: x\n",
        "extra: 1\n",
    ]
    assert validator.is_valid(yaml.safe_load(good))
    load(good)
    for text in bad:
        assert not validator.is_valid(yaml.safe_load(text)), text
        with pytest.raises(FileInvalid):
            load(text)


def _write(cli: Cli, document: dict[str, Any]) -> None:
    (cli.folder / "stackblaze.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def test_the_file_names_its_project_and_only_a_typed_project_overrides_it(cli: Cli) -> None:
    storefront = Project.objects.get(name="Storefront")
    data = Project.objects.get(name="Data Platform")
    _write(cli, yaml.safe_load(cli("export", storefront.uid).stdout))
    # The everyday default (STACKBLAZE_PROJECT) does not turn a Storefront file on another
    # project: it is said, and the file's project is planned.
    planned = cli("plan", "-f", "stackblaze.yaml", STACKBLAZE_PROJECT=data.uid)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert f"The file names project {storefront.uid}" in planned.stderr
    assert planned.stdout.startswith(f"Storefront ({storefront.uid}):")
    # An error is 1, never 2 (which says "changes").
    unknown = cli("plan", "-f", "stackblaze.yaml", "--project", "nosuchproject")
    assert unknown.returncode == 1, unknown.stderr
    assert "No project “nosuchproject”" in unknown.stderr


def test_one_service_cannot_become_two(cli: Cli) -> None:
    _write(
        cli,
        {
            "services": [
                {"name": "Gateway", "was": "api"},
                {"name": "Edge", "was": "api"},
                {"name": "Cache Two", "was": "cache"},
                {"name": "cache", "kind": "redis"},
            ]
        },
    )
    refused = cli("plan", "-f", "stackblaze.yaml", "--project", "Storefront")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "stackblaze.yaml:4: was: api.internal is already “Gateway” (line 2)" in refused.stderr
    assert "stackblaze.yaml:6: was: cache.internal is already “cache” (line 8)" in refused.stderr


def test_a_reference_moved_to_another_source_and_receivers_left_alone(cli: Cli) -> None:
    storefront = Project.objects.get(name="Storefront")
    document = yaml.safe_load(cli("export", storefront.uid).stdout)
    # api takes DATABASE_URL from cache now, not postgres; background-worker is left out of
    # the file, so it keeps what it receives.
    document["references"] = [{"from": "cache", "to": "api", "variable": "DATABASE_URL"}]
    document["services"] = [s for s in document["services"] if s["name"] != "background-worker"]
    document["secrets"][0]["services"] = ["api"]
    _write(cli, document)
    kept = cli("plan", "-f", "stackblaze.yaml")
    assert "~ secret" not in kept.stdout  # background-worker keeps INTERNAL_API_SECRET
    assert "! service “background-worker”" in kept.stdout
    pruning = cli("plan", "-f", "stackblaze.yaml", "--prune")
    assert "~ secret INTERNAL_API_SECRET: given to api, background-worker → api" in pruning.stdout
    applied = cli("apply", "-f", "stackblaze.yaml", "--prune", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    [reference] = ReferenceVariable.objects.filter(project=storefront)
    assert (reference.source.name, reference.consumer.name) == ("cache", "api")
    # --prune deleted background-worker, and with it what it received.
    assert not Service.objects.filter(project=storefront, name="background-worker").exists()
    assert cli("plan", "-f", "stackblaze.yaml").returncode == 0
