"""``stackblaze``: drive Stackblaze private networking from a terminal, a script or CI.

Tables for people, ``--json`` for scripts. Exit codes: 0 done, 1 refused by the API (its
reason is printed), 2 a usage error, 3 a failure (network, timeout, server error).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stackblaze_cli import project_file
from stackblaze_cli.client import Api, Failed, Refused, check_url, load_config, save_config

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3

app = typer.Typer(
    help="Stackblaze private networking: projects, services, shared secrets, mutual TLS, "
    "peering, the team, API tokens and the audit log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# `stackblaze projects` alone lists them, as it always did; its commands change them.
projects_app = typer.Typer(
    help="Projects: with no command, the ones your token can see.", invoke_without_command=True
)
services_app = typer.Typer(help="Services and databases: hostnames, ports, connection strings.")
secrets_app = typer.Typer(help="Shared secrets and their rotation without downtime.")
peering_app = typer.Typer(help="VPC peering between projects (Enterprise).")
members_app = typer.Typer(help="Who belongs to the organization, in which role.")
tokens_app = typer.Typer(
    help="API tokens for scripts, CI and this command: list and revoke them (they are created "
    "on your organization's API tokens page, signed in: a token can't create tokens)."
)
support_app = typer.Typer(help="Support staff: peering requests waiting for a decision.")
mtls_app = typer.Typer(
    help="Mutual TLS between the project's services: certificates, who may call whom, and "
    "the project's CA."
)
app.add_typer(projects_app, name="projects")
app.add_typer(services_app, name="services")
app.add_typer(secrets_app, name="secrets")
app.add_typer(peering_app, name="peering")
app.add_typer(members_app, name="members")
app.add_typer(tokens_app, name="tokens")
app.add_typer(support_app, name="support")
app.add_typer(mtls_app, name="mtls")

# No markup and no emoji codes: names are printed as typed ("Checkout [eu]" stays whole).
out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)


@dataclass
class Options:
    as_json: bool = False
    project: str = ""


options = Options()

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ProjectOption = Annotated[
    str,
    typer.Option(
        "--project",
        "-p",
        envvar="STACKBLAZE_PROJECT",
        help="Project ID or name (default: the only project, or the one `login` saved).",
    ),
]
OrganizationOption = Annotated[
    str,
    typer.Option(
        "--org",
        envvar="STACKBLAZE_ORG",
        help="The organization's slug (default: your token's organization).",
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")]
Role = Literal["owner", "member", "viewer"]


@app.callback()
def main(as_json: JsonOption = False, project: ProjectOption = "") -> None:
    options.as_json = as_json
    options.project = project


# -- Plumbing ----------------------------------------------------------------------------------


def _api() -> Api:
    config = load_config()
    url = os.environ.get("STACKBLAZE_URL") or config.get("url", "")
    token = os.environ.get("STACKBLAZE_TOKEN") or config.get("token", "")
    if not url or not token:
        _usage("Not logged in. Run `stackblaze login --url https://… --token sbk_…` first.")
    refused = check_url(url)
    if refused:
        _usage(refused)
    return Api(url=url, token=token)


def _usage(message: str) -> NoReturn:
    err.print(f"Error: {message}")
    raise typer.Exit(EXIT_USAGE)


def _call[T](action: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run an API call; a refusal or a failure ends the command with its exit code."""
    try:
        return action(*args, **kwargs)
    except Refused as refused:
        if options.as_json:
            print(json.dumps(refused.problem, indent=2), file=sys.stderr)
        else:
            err.print(f"Error: {refused}")
            for field, messages in (refused.problem.get("errors") or {}).items():
                for message in messages:
                    if message != str(refused):
                        err.print(f"  {field}: {message}")
        raise typer.Exit(EXIT_REFUSED) from None
    except Failed as failed:
        err.print(f"Error: {failed}")
        raise typer.Exit(EXIT_FAILED) from None


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    out.print(table)


def _project(api: Api) -> dict[str, Any]:
    """The project to act on: --project (an ID or a name), the saved one, or the only one."""
    wanted = options.project or load_config().get("project", "")
    projects: list[dict[str, Any]] = _call(lambda: api.get("/projects"))
    if wanted:
        for project in projects:
            if wanted in (project["id"], project["name"]) or (
                wanted.casefold() == project["name"].casefold()
            ):
                return project
        _usage(f"No project “{wanted}” here. `stackblaze projects` lists them.")
    if len(projects) == 1:
        return projects[0]
    names = ", ".join(f"{p['name']} ({p['id']})" for p in projects) or "none"
    _usage(f"Choose a project with --project: {names}.")


def _project_id(api: Api) -> str:
    return str(_project(api)["id"])


def _service(api: Api, project: str, name: str) -> dict[str, Any]:
    page = _call(lambda: api.get(f"/projects/{project}/services", name=name))
    if not page["items"]:
        _refuse(f"No service named “{name}” in this project. `stackblaze services ls` lists them.")
    return dict(page["items"][0])


def _secret(api: Api, project: str, name: str) -> dict[str, Any]:
    for secret in _call(lambda: api.get(f"/projects/{project}/secrets")):
        if secret["name"] == name:
            return dict(secret)
    _refuse(f"No shared secret named {name} in this project. `stackblaze secrets ls` lists them.")


def _refuse(message: str) -> NoReturn:
    err.print(f"Error: {message}")
    raise typer.Exit(EXIT_REFUSED)


def _confirm(question: str, *, unasked: str) -> None:
    """Ask before anything that disconnects or deletes. With no terminal to ask (a script, CI)
    nothing happens without --yes: ``unasked`` says what --yes would do."""
    if not sys.stdin.isatty():
        _usage(f"Add --yes to {unasked} without a prompt (no terminal to ask).")
    if not typer.confirm(question, err=True):  # stdout stays the command's answer
        raise typer.Exit(EXIT_USAGE)


def _organization(api: Api, wanted: str) -> str:
    """The organization to act on: --org, the token's own, or the only one you belong to."""
    if wanted:
        return wanted
    me = _call(lambda: api.get("/me"))
    if me.get("organization"):
        return str(me["organization"])
    found: list[dict[str, Any]] = _call(lambda: api.get("/organizations"))
    if len(found) == 1:
        return str(found[0]["slug"])
    if not found:
        _usage("This token belongs to no organization: give one with --org.")
    slugs = ", ".join(organization["slug"] for organization in found)
    _usage(f"Choose an organization with --org: {slugs}.")


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _when(text: str | None) -> str:
    """An API timestamp as people read it, in UTC: 2025-06-01 14:03 UTC."""
    return _moment(text).strftime("%Y-%m-%d %H:%M UTC") if text else ""


# As the dashboard's `timesince`: the largest unit, and the next one down when not zero.
_UNITS = (
    ("year", 365 * 86400),
    ("month", 30 * 86400),
    ("week", 7 * 86400),
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
)


def _duration(seconds: float) -> str:
    seconds = int(abs(seconds))
    for index, (unit, size) in enumerate(_UNITS):
        count, rest = divmod(seconds, size)
        if count:
            parts = [f"{count} {unit}{'' if count == 1 else 's'}"]
            if index + 1 < len(_UNITS):
                smaller, smaller_size = _UNITS[index + 1]
                more = rest // smaller_size
                if more:
                    parts.append(f"{more} {smaller}{'' if more == 1 else 's'}")
            return ", ".join(parts)
    return "less than a minute"


def _ago(text: str) -> str:
    """ "12 s ago" within the last minute, "3 hours, 4 minutes ago" after (the dashboard's)."""
    seconds = (datetime.now(UTC) - _moment(text)).total_seconds()
    if seconds < 1:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    return f"{_duration(seconds)} ago"


def _from_now(text: str) -> str:
    return f"{_duration((_moment(text) - datetime.now(UTC)).total_seconds())} from now"


# -- Account -----------------------------------------------------------------------------------


@app.command()
def login(
    url: Annotated[str, typer.Option(help="The dashboard's address, e.g. https://dash.example")],
    token: Annotated[str, typer.Option(prompt=True, hide_input=True, help="An API token (sbk_…)")],
    project: Annotated[str, typer.Option(help="A default project (ID or name)")] = "",
) -> None:
    """Check a token and keep it, with the URL, in your config directory (mode 0600)."""
    refused = check_url(url)
    if refused:
        _usage(refused)
    api = Api(url=url, token=token.strip())
    me = _call(lambda: api.get("/me"))
    if not isinstance(me, dict) or "username" not in me:
        err.print(f"Error: {url} did not answer as the Stackblaze API does; nothing was saved.")
        raise typer.Exit(EXIT_FAILED)
    config = {"url": url, "token": token.strip()}
    if project:
        config["project"] = project
    path = save_config(config)
    if options.as_json:
        _print_json(me)
        return
    where = f" in {me['organization']}" if me.get("organization") else ""
    out.print(f"Logged in as {me['username']}{where} ({me['role']}, token {me['token']}).")
    out.print(f"Saved to {path}.")


# -- Projects ----------------------------------------------------------------------------------


@projects_app.callback()
def projects(context: typer.Context) -> None:
    """The projects your token can see; its commands create, rename and delete them (owners)."""
    if context.invoked_subcommand is None:
        _list_projects()


@projects_app.command("ls")
def projects_ls() -> None:
    """The projects your token can see (as `stackblaze projects` alone)."""
    _list_projects()


def _list_projects() -> None:
    api = _api()
    found = _call(lambda: api.get("/projects"))
    if options.as_json:
        _print_json(found)
        return
    _table(
        ["ID", "NAME", "ORGANIZATION", "ROLE", "SYNC"],
        [(p["id"], p["name"], p["organization"], p["role"], p["sync"]["label"]) for p in found],
    )


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="The project's name, e.g. “Checkout”")],
    org: OrganizationOption = "",
) -> None:
    """Create a project (owners); the worker sets up its namespace in the cluster."""
    api = _api()
    body: dict[str, Any] = {"name": name}
    if org:
        body["organization"] = org
    created = _call(lambda: api.send("POST", "/projects", body))
    if options.as_json:
        _print_json(created)
        return
    out.print(
        f"Created project {created['name']} ({created['id']}) in {created['organization']}. "
        f"Act on it with --project {created['id']}."
    )


@projects_app.command("rename")
def projects_rename(
    new_name: Annotated[str, typer.Argument(help="The project's new name")],
) -> None:
    """Rename the project named by --project (owners); nothing else changes.

    Only the name changes: its ID, its namespace and its services' hostnames stay as they
    are, so nothing reconnects."""
    api = _api()
    project = _project(api)
    changed = _call(lambda: api.send("PATCH", f"/projects/{project['id']}", {"name": new_name}))
    if options.as_json:
        _print_json(changed)
        return
    out.print(
        f"Renamed project {project['name']} to {changed['name']}; its ID, namespace and "
        "hostnames stay as they are."
    )


@projects_app.command("rm")
def projects_rm(yes: YesOption = False) -> None:
    """Delete the project named by --project and everything in it (owners).

    Its services and their hostnames, its shared secrets, its peerings, and its namespace in
    the cluster go with it; it cannot be undone. On a terminal you type the project's name
    back to confirm; with no terminal (a script, CI) it needs --yes."""
    api = _api()
    project = _project(api)
    name = project["name"]
    typed = name
    if not yes:
        if not sys.stdin.isatty():
            _usage(f"Add --yes to delete project {name} without a prompt (no terminal to ask).")
        err.print(
            f"This deletes {name} ({project['id']}) and cannot be undone: its services and "
            f"their .internal hostnames, its shared secrets, its peerings, and the namespace "
            f"{project['namespace']} with everything in it."
        )
        typed = typer.prompt(f"Type {name} to confirm", default="", show_default=False, err=True)
        if typed.strip() != name:
            _usage(f"“{typed.strip()}” is not the project's name, {name}; nothing was deleted.")
    _call(lambda: api.send("DELETE", f"/projects/{project['id']}", params={"confirm_name": typed}))
    if options.as_json:
        _print_json({"deleted": project["id"]})
        return
    out.print(
        f"Deleted project {name}; the worker removes its namespace {project['namespace']} "
        "from the cluster."
    )


# -- Services ----------------------------------------------------------------------------------


@services_app.command("ls")
def services_ls(
    kind: Annotated[str, typer.Option(help="Only this kind (web, private, postgresql…)")] = "",
) -> None:
    """Every service with its private address, ClusterIP and status.

    Status: Live (the cluster has it, with its ClusterIP), Applied (it has it; its ClusterIP
    is not read back yet) or Pending (the cluster has not caught up with its last change)."""
    api = _api()
    project = _project_id(api)
    items: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = _call(
            api.get, f"/projects/{project}/services", kind=kind or None, limit=200, offset=offset
        )
        items.extend(page["items"])
        offset = page["next_offset"]
    if options.as_json:
        _print_json(items)
        return
    _table(
        ["NAME", "KIND", "ADDRESS", "CLUSTERIP", "STATUS"],
        [(s["dns_label"], s["kind"], s["address"], _cluster_ip(s), _status(s)) for s in items],
    )


# A service's status as the dashboard's overview says it.
STATUS = {"live": "Live", "applied": "Applied", "pending": "Pending"}
STATUS_MEANING = {
    "live": "the cluster has it, with its ClusterIP",
    "applied": "the cluster has it; its ClusterIP is not read back yet",
    "pending": "the cluster has not caught up with its last change yet",
}


def _status(service: dict[str, Any]) -> str:
    return STATUS.get(service["status"], str(service["status"]))


def _cluster_ip(service: dict[str, Any]) -> str:
    """Its ClusterIP; without one, "pending" only while the service is pending."""
    if service["cluster_ip"]:
        return str(service["cluster_ip"])
    return "pending" if service["status"] == "pending" else "not assigned yet"


@services_app.command("create")
def services_create(
    name: Annotated[str, typer.Argument(help="As you would say it: “Background Worker”")],
    kind: Annotated[str, typer.Option(help="web, private, postgresql, mysql, redis, mongodb")] = (
        "web"
    ),
    port: Annotated[list[int] | None, typer.Option(help="A port it listens on (repeat)")] = None,
) -> None:
    """Create a service; it is reachable at <name>.internal inside the project."""
    api = _api()
    project = _project_id(api)
    body: dict[str, Any] = {"name": name, "kind": kind}
    if port:
        body["ports"] = port
    service = _call(lambda: api.send("POST", f"/projects/{project}/services", body))
    if options.as_json:
        _print_json(service)
        return
    out.print(f"Created {service['name']}: reachable at {service['address']} inside the project.")


# How long a rename keeps the old hostname, as the dashboard offers it.
KEEP_OLD_NAME = {"0": 0, "1h": 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}


@services_app.command("rename")
def services_rename(
    name: Annotated[str, typer.Argument(help="The service's current name")],
    new_name: Annotated[str, typer.Argument(help="Its new name")],
    keep_old_name: Annotated[
        str,
        typer.Option(
            help="How long the old hostname keeps resolving to the service, so callers still "
            "using it reach it meanwhile: 0 (not at all), 1h, 24h or 7d",
        ),
    ] = "24h",
    yes: YesOption = False,
) -> None:
    """Rename a service; its old hostname keeps resolving for a while.

    Its old hostname keeps resolving for 24 hours unless you say otherwise (--keep-old-name),
    and no other service can take it meanwhile. With --keep-old-name 0, callers still using it
    stop reaching the service at once: that asks first."""
    if keep_old_name not in KEEP_OLD_NAME:
        _usage(f"--keep-old-name must be one of {', '.join(KEEP_OLD_NAME)}.")
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    if not KEEP_OLD_NAME[keep_old_name] and not yes:
        _confirm(
            f"Rename {service['name']} without keeping {service['hostname']}? Callers still "
            "using it stop reaching the service at once.",
            unasked=f"rename {service['name']} and stop {service['hostname']} resolving at once",
        )
    changed = _call(
        lambda: api.send(
            "PATCH",
            f"/projects/{project}/services/{service['id']}",
            {"name": new_name, "keep_old_name_for_seconds": KEEP_OLD_NAME[keep_old_name]},
        )
    )
    if options.as_json:
        _print_json(changed)
        return
    kept = (
        f" {service['hostname']} keeps resolving to it for {keep_old_name}."
        if KEEP_OLD_NAME[keep_old_name] and changed["hostname"] != service["hostname"]
        else ""
    )
    out.print(f"Renamed: {service['hostname']} is now {changed['hostname']}.{kept}")


@services_app.command("ports")
def services_ports(
    name: Annotated[str, typer.Argument(help="The service's name")],
    ports: Annotated[list[int], typer.Argument(help="The ports it listens on")],
) -> None:
    """Change the ports a service listens on."""
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    changed = _call(
        lambda: api.send("PATCH", f"/projects/{project}/services/{service['id']}", {"ports": ports})
    )
    if options.as_json:
        _print_json(changed)
        return
    out.print(f"{changed['hostname']} listens on {', '.join(map(str, changed['ports']))}.")


@services_app.command("rm")
def services_rm(
    name: Annotated[str, typer.Argument(help="The service's name")],
    yes: YesOption = False,
) -> None:
    """Delete a service and release its hostname. Asks first."""
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    if not yes:
        _confirm(
            f"Delete {service['name']} ({service['hostname']})?",
            unasked=f"delete {service['name']}",
        )
    _call(lambda: api.send("DELETE", f"/projects/{project}/services/{service['id']}"))
    if options.as_json:
        _print_json({"deleted": service["dns_label"]})
        return
    out.print(f"Deleted {service['name']}; {service['hostname']} is released.")


@services_app.command("show")
def services_show(name: Annotated[str, typer.Argument(help="The service's name")]) -> None:
    """A service's hostname, ports, ClusterIP, status and connection strings.

    Passwords are masked: `services env NAME --reveal` shows them (audited)."""
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    if options.as_json:
        _print_json(service)
        return
    _table(
        ["", ""],
        [
            ("Name", service["name"]),
            ("Hostname", service["hostname"]),
            ("Kind", service["kind"]),
            ("Ports", ", ".join(map(str, service["ports"]))),
            ("ClusterIP", _cluster_ip(service)),
            ("Status", f"{_status(service)}: {STATUS_MEANING.get(service['status'], '')}"),
            *[(endpoint["label"], endpoint["value"]) for endpoint in service["endpoints"]],
        ],
    )


@services_app.command("env")
def services_env(
    name: Annotated[str, typer.Argument(help="The service's name")],
    reveal: Annotated[
        bool, typer.Option(help="Show a database's password (audited, members and owners)")
    ] = False,
) -> None:
    """The environment variable lines to give the services that call this one."""
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    endpoints = service["endpoints"]
    if reveal:
        endpoints = _call(
            lambda: api.send("POST", f"/projects/{project}/services/{service['id']}/reveal")
        )["endpoints"]
    if options.as_json:
        _print_json({endpoint["env_name"]: endpoint["value"] for endpoint in endpoints})
        return
    for endpoint in endpoints:
        print(endpoint["env_line"])


@services_app.command("test")
def services_test(
    name: Annotated[str, typer.Argument(help="The service's name")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most")] = 120.0,
    interval: Annotated[float, typer.Option(help="Seconds between looks", hidden=True)] = 1.0,
) -> None:
    """Test the connection to a service from inside the project.

    A probe in the project resolves NAME.internal and connects to each port, then says what
    it found. Exits 0 when every check passes, 1 when one fails."""
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    base = f"/projects/{project}/services/{service['id']}/connection-tests"
    test = _call(lambda: api.send("POST", base))
    follow = f"{base}/{test['id']}"
    deadline = time.monotonic() + timeout
    with err.status(f"Testing {service['hostname']}…", spinner="dots") as status:
        while test["status"] in ("queued", "running"):
            if time.monotonic() > deadline:
                status.stop()
                err.print(f"Error: the test was still {test['status']} after {timeout:.0f} s.")
                raise typer.Exit(EXIT_FAILED)
            time.sleep(interval)
            test = _call(lambda: api.get(follow))
    if options.as_json:
        _print_json(test)
    elif test["status"] == "error":
        err.print(f"Error: the test could not run: {test['error']}")
    else:
        verdict = "Connected" if test["status"] == "passed" else "Failed"
        out.print(f"{verdict}: {test['hostname']}")
        for finding in test["findings"]:
            out.print(f"  {'✓' if finding['ok'] else '✗'} {finding['text']}")
    if test["status"] == "error":
        raise typer.Exit(EXIT_FAILED)
    if test["status"] != "passed":
        raise typer.Exit(EXIT_REFUSED)


# -- Reference variables ("Use in another service") -------------------------------------------

DATABASE_KINDS = frozenset({"postgresql", "mysql", "redis", "mongodb"})


def _what_is_given(source: dict[str, Any]) -> str:
    return "connection string" if source["kind"] in DATABASE_KINDS else "internal URL"


@services_app.command("link")
def services_link(
    source: Annotated[str, typer.Argument(help="The service whose address is given")],
    consumers: Annotated[
        list[str],
        typer.Argument(help="The services that receive it (their names, as `services ls` shows)"),
    ],
    variable: Annotated[
        str,
        typer.Option(
            help="The variable's name (default: the usual one, such as DATABASE_URL, REDIS_URL "
            "or API_URL, unless the consumer has it already)"
        ),
    ] = "",
) -> None:
    """Use in another service: give consumers this service's address.

    Each CONSUMER gets the address of SOURCE (a database's connection string, a service's
    internal URL) as an environment variable, which the platform keeps current (after a
    rename or a new password too). Each consumer restarts once to pick it up."""
    api = _api()
    project = _project_id(api)
    given = _service(api, project, source)
    body: dict[str, Any] = {"consumers": consumers}
    if variable:
        body["variable"] = variable
    made = _call(
        lambda: api.send("POST", f"/projects/{project}/services/{given['id']}/references", body)
    )
    if options.as_json:
        _print_json(made)
        return
    for reference in made:
        out.print(
            f"{reference['consumer']} receives {reference['variable']}, the "
            f"{_what_is_given(given)} of {reference['source']}; it restarts once to pick it up."
        )


@services_app.command("unlink")
def services_unlink(
    source: Annotated[str, typer.Argument(help="The service whose address is given")],
    consumer: Annotated[str, typer.Argument(help="The service that receives it")],
    yes: YesOption = False,
) -> None:
    """Stop giving a consumer a service's address. Asks first.

    The variable is removed and CONSUMER restarts once without it."""
    api = _api()
    project = _project_id(api)
    given = _service(api, project, source)
    base = f"/projects/{project}/services/{given['id']}/references"
    wiring = _call(lambda: api.get(base))
    wanted = consumer.strip().lower()
    reference = next((r for r in wiring["gives"] if r["consumer"] == wanted), None)
    if reference is None:
        _refuse(
            f"{given['dns_label']} gives its address to no service named “{consumer}”. "
            f"`stackblaze services refs {given['dns_label']}` lists the ones it gives it to."
        )
    if not yes:
        _confirm(
            f"Take {reference['variable']} (the address of {reference['source']}) from "
            f"{reference['consumer']}? It restarts without it.",
            unasked=f"take {reference['variable']} from {reference['consumer']}",
        )
    _call(lambda: api.send("DELETE", f"{base}/{reference['id']}"))
    if options.as_json:
        _print_json({"removed": reference})
        return
    out.print(
        f"{reference['consumer']} no longer receives {reference['variable']}; it restarts once "
        "without it."
    )


@services_app.command("refs")
def services_refs(name: Annotated[str, typer.Argument(help="The service's name")]) -> None:
    """Both sides: what the service gives, and what it receives.

    The services it gives its address to, and the addresses it receives, each with its
    variable."""
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    wiring = _call(lambda: api.get(f"/projects/{project}/services/{service['id']}/references"))
    if options.as_json:
        _print_json(wiring)
        return
    label = service["dns_label"]
    if not wiring["gives"] and not wiring["receives"]:
        out.print(
            f"{label} gives its address to no service and receives none. "
            "`stackblaze services link` wires one service into another."
        )
        return
    _table(
        ["", "SERVICE", "VARIABLE"],
        [
            *[(f"{label} gives to", r["consumer"], r["variable"]) for r in wiring["gives"]],
            *[(f"{label} receives from", r["source"], r["variable"]) for r in wiring["receives"]],
        ],
    )


# -- Old hostnames -----------------------------------------------------------------------------


def _alias(api: Api, project: str, service: dict[str, Any], hostname: str) -> dict[str, Any]:
    aliases = _call(lambda: api.get(f"/projects/{project}/services/{service['id']}/aliases"))
    wanted = hostname.strip().lower().removesuffix(".").removesuffix(".internal")
    for alias in aliases:
        if alias["dns_label"] == wanted:
            return dict(alias)
    _refuse(
        f"{hostname} is not an old hostname of {service['hostname']}. "
        f"`stackblaze services aliases {service['dns_label']}` lists them."
    )


@services_app.command("aliases")
def services_aliases(name: Annotated[str, typer.Argument(help="The service's name")]) -> None:
    """Old hostnames that still resolve to the service, and until when.

    A rename keeps the old hostname resolving for a while; callers should move to the new
    one meanwhile."""
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    found = _call(lambda: api.get(f"/projects/{project}/services/{service['id']}/aliases"))
    if options.as_json:
        _print_json(found)
        return
    if not found:
        out.print(f"No old hostname resolves to {service['hostname']}.")
        return
    _table(
        ["OLD HOSTNAME", "RESOLVES UNTIL", ""],
        [(a["hostname"], _when(a["expires_at"]), _from_now(a["expires_at"])) for a in found],
    )


@services_app.command("keep-old-name")
def services_keep_old_name(
    name: Annotated[str, typer.Argument(help="The service's name")],
    old_hostname: Annotated[str, typer.Argument(help="Its old hostname, e.g. api.internal")],
) -> None:
    """Keep an old hostname resolving to the service a day longer than it does now."""
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    alias = _alias(api, project, service, old_hostname)
    # The end as read: a retry, or someone else's click meanwhile, extends it once only.
    kept = _call(
        lambda: api.send(
            "POST",
            f"/projects/{project}/services/{service['id']}/aliases/{alias['id']}/extend",
            {"seen_expires_at": alias["expires_at"]},
        )
    )
    if options.as_json:
        _print_json(kept)
        return
    out.print(
        f"{kept['hostname']} keeps resolving to {service['hostname']} until "
        f"{_when(kept['expires_at'])} ({_from_now(kept['expires_at'])})."
    )


@services_app.command("end-old-name")
def services_end_old_name(
    name: Annotated[str, typer.Argument(help="The service's name")],
    old_hostname: Annotated[str, typer.Argument(help="Its old hostname, e.g. api.internal")],
    yes: YesOption = False,
) -> None:
    """Stop an old hostname resolving now (owners). Asks first.

    Callers still using it stop reaching the service, and the name is free for another
    service."""
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    alias = _alias(api, project, service, old_hostname)
    if not yes:
        _confirm(
            f"Stop {alias['hostname']} resolving now? Callers still using it stop reaching "
            f"{service['hostname']}.",
            unasked=f"stop {alias['hostname']} resolving",
        )
    _call(
        lambda: api.send(
            "DELETE", f"/projects/{project}/services/{service['id']}/aliases/{alias['id']}"
        )
    )
    if options.as_json:
        _print_json({"ended": alias["hostname"]})
        return
    out.print(f"{alias['hostname']} no longer resolves; the name is free for another service.")


# -- Shared secrets ----------------------------------------------------------------------------


@secrets_app.command("ls")
def secrets_ls() -> None:
    """Shared secrets, who receives them and whether one is rotating (never a value)."""
    api = _api()
    project = _project_id(api)
    found = _call(lambda: api.get(f"/projects/{project}/secrets"))
    if options.as_json:
        _print_json(found)
        return
    _table(
        ["NAME", "ROTATIONS", "RECEIVED BY", "ROTATION"],
        [
            (s["name"], s["rotations"], ", ".join(s["services"]) or "no service yet", _rotation(s))
            for s in found
        ],
    )


# A rotation's phase as the dashboard says it.
PHASES = {
    "accept_new": "Verifiers accept the new value",
    "send_new": "Callers send the new value",
    "grace": "Grace window: the old value is still accepted",
    "retire_old": "The old value is retired",
}


def _rotation(secret: dict[str, Any]) -> str:
    """The phase while it rotates, else when it was last rotated; and its schedule."""
    if secret["rotating"]:
        said = PHASES.get(secret["rotation_phase"], str(secret["rotation_phase"]))
    elif secret["last_rotated_at"]:
        said = f"rotated {_ago(secret['last_rotated_at'])}"
    else:
        said = "never rotated"
    if secret["rotate_every_days"]:
        said += f" · every {secret['rotate_every_days']} days"
    return said


@secrets_app.command("create")
def secrets_create(
    name: Annotated[str, typer.Argument(help="The variable's name, e.g. INTERNAL_API_SECRET")],
    service: Annotated[
        list[str] | None, typer.Option(help="A service that receives it (repeat)")
    ] = None,
    value_from_stdin: Annotated[
        bool, typer.Option("--value-from-stdin", help="Read the value from standard input")
    ] = False,
) -> None:
    """Create a shared secret: a generated 256-bit value unless you give one on stdin."""
    api = _api()
    project = _project_id(api)
    body: dict[str, Any] = {"name": name, "services": service or []}
    if value_from_stdin:
        body["value"] = sys.stdin.read().rstrip("\n")
    created = _call(lambda: api.send("POST", f"/projects/{project}/secrets", body))
    if options.as_json:
        _print_json(created)
        return
    receivers = ", ".join(created["services"]) or "no service yet"
    out.print(f"Created {created['name']}, given to {receivers}.")


@secrets_app.command("rotate")
def secrets_rotate(
    name: Annotated[str, typer.Argument(help="The secret's name")],
    wait: Annotated[bool, typer.Option(help="Follow the rotation until it completes")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most")] = 3600.0,
    interval: Annotated[float, typer.Option(help="Seconds between looks", hidden=True)] = 1.0,
) -> None:
    """Rotate without downtime: accept new, send new, a grace window, retire old.

    --wait follows it until it completes (or `secrets rotation NAME --wait` later)."""
    api = _api()
    project = _project_id(api)
    secret = _secret(api, project, name)
    base = f"/projects/{project}/secrets/{secret['id']}"
    progress = _call(lambda: api.send("POST", f"{base}/rotate"))
    if not wait:
        if options.as_json:
            _print_json(progress)
        else:
            out.print(
                f"Started rotation {progress['number']} of {name}. Follow it with "
                f"`stackblaze secrets rotation {name} --wait`."
            )
        return
    progress = _follow(api, f"{base}/rotation", progress, timeout=timeout, interval=interval)
    if options.as_json:
        _print_json(progress)
        return
    _completed(progress)


def _completed(progress: dict[str, Any]) -> None:
    out.print(
        f"Rotation {progress['number']} of {progress['secret']} completed: every receiving "
        "service has the new value."
    )


@secrets_app.command("rotation")
def secrets_rotation(
    name: Annotated[str, typer.Argument(help="The secret's name")],
    wait: Annotated[bool, typer.Option(help="Follow the rotation until it completes")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most")] = 3600.0,
    interval: Annotated[float, typer.Option(help="Seconds between looks", hidden=True)] = 1.0,
) -> None:
    """How the secret's rotation stands; --wait follows it to the end.

    Each phase (done, current, pending), and whether each receiving service's pods have the
    value."""
    api = _api()
    project = _project_id(api)
    secret = _secret(api, project, name)
    path = f"/projects/{project}/secrets/{secret['id']}/rotation"
    progress = _call(lambda: api.get(path))
    if wait and progress["rotating"]:
        progress = _follow(api, path, progress, timeout=timeout, interval=interval)
        if options.as_json:
            _print_json(progress)
        else:
            _completed(progress)
        return
    if options.as_json:
        _print_json(progress)
        return
    if progress["rotating"]:
        out.print(f"Rotation {progress['number']} of {name} in progress:")
        marks = {"done": "✓", "current": "→", "pending": " "}
        for step in progress["steps"]:
            out.print(f"  {marks.get(step['state'], ' ')} {step['title']}")
        if progress["phase"] == "grace" and progress["grace_until"]:
            out.print(
                f"  The grace window ends {_when(progress['grace_until'])} "
                f"({_from_now(progress['grace_until'])}); `stackblaze secrets end-grace {name}` "
                "ends it now."
            )
    elif progress["number"]:
        finished = (progress["latest"] or {}).get("finished_at")
        last = f", the last {_ago(finished)}" if finished else ""
        times = "time" if progress["number"] == 1 else "times"
        out.print(f"{name} is not rotating: rotated {progress['number']} {times}{last}.")
    else:
        out.print(f"{name} is not rotating: never rotated.")
    _table(
        ["SERVICE", "ITS PODS"],
        [(r["service"], _pods(r, progress)) for r in progress["receivers"]],
    )


def _pods(receiver: dict[str, Any], progress: dict[str, Any]) -> str:
    """Whether a receiving workload's pods have the value, as the secret's page says it."""
    if not receiver["has_workload"]:
        return "no workload deployed yet"
    if receiver["version"] == progress["version"] and receiver["rolled_out"]:
        return "up to date"
    if receiver["version"]:
        return f"restarting onto the {'next phase' if progress['rotating'] else 'current value'}"
    return "restarting to receive it"


def _follow(
    api: Api, path: str, progress: dict[str, Any], *, timeout: float, interval: float
) -> dict[str, Any]:
    """Poll the rotation, printing each phase as it passes, until it completes."""
    steps = progress["steps"]
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} phases"),
        TimeElapsedColumn(),
        console=err,
        disable=options.as_json,
    ) as bar:
        task = bar.add_task("Rotating", total=len(steps))
        while True:
            finished = not progress["rotating"] and progress["latest"] is not None
            for step in progress["steps"]:
                passed = step["state"] == "done" or finished
                if passed and step["phase"] not in seen:
                    seen.add(step["phase"])
                    bar.console.print(f"✓ {step['title']}: {step['detail']}")
                elif step["state"] == "current":
                    bar.update(task, description=step["title"])
            bar.update(task, completed=len(seen))
            if finished:
                return progress
            if time.monotonic() > deadline:
                err.print(f"Error: still rotating after {timeout:.0f} s; it goes on without you.")
                raise typer.Exit(EXIT_FAILED)
            time.sleep(interval)
            progress = _call(lambda: api.get(path))


def _receivers(api: Api, project: str, secret: dict[str, Any], services: list[str]) -> Any:
    """Change who receives the secret: the API takes the whole list (its schedule as read)."""
    return _call(
        lambda: api.send(
            "PATCH",
            f"/projects/{project}/secrets/{secret['id']}",
            {"services": services, "rotate_every_days": secret["rotate_every_days"]},
        )
    )


@secrets_app.command("give")
def secrets_give(
    name: Annotated[str, typer.Argument(help="The secret's name")],
    services: Annotated[list[str], typer.Argument(help="The services to give it to")],
) -> None:
    """Give the secret to more services (owners); each restarts once to receive it."""
    api = _api()
    project = _project_id(api)
    secret = _secret(api, project, name)
    had = list(secret["services"])
    wanted = had + [service for service in dict.fromkeys(services) if service not in had]
    changed = _receivers(api, project, secret, wanted)
    if options.as_json:
        _print_json(changed)
        return
    said = f"{name} is received by {', '.join(changed['services'])}."
    added = [service for service in changed["services"] if service not in had]
    if added:
        one = len(added) == 1
        said += f" {', '.join(added)} restart{'s' if one else ''} once to receive it."
    out.print(said)


@secrets_app.command("take")
def secrets_take(
    name: Annotated[str, typer.Argument(help="The secret's name")],
    services: Annotated[list[str], typer.Argument(help="The services to take it from")],
    yes: YesOption = False,
) -> None:
    """Take the secret from services (owners). Asks first.

    They restart without it, so whatever they check or send with it stops working."""
    api = _api()
    project = _project_id(api)
    secret = _secret(api, project, name)
    had = list(secret["services"])
    strangers = [service for service in services if service not in had]
    if strangers:
        _refuse(
            f"{strangers[0]} does not receive {name}; it goes to {', '.join(had) or 'no service'}."
        )
    chosen = list(dict.fromkeys(services))
    taken = ", ".join(chosen)
    if not yes:
        _confirm(
            f"Take {name} from {taken}? They restart without it.",
            unasked=f"take {name} from {taken}",
        )
    changed = _receivers(api, project, secret, [kept for kept in had if kept not in chosen])
    if options.as_json:
        _print_json(changed)
        return
    verbs = ("receives", "restarts") if len(chosen) == 1 else ("receive", "restart")
    out.print(
        f"{taken} no longer {verbs[0]} {name} and {verbs[1]} without it; it goes to "
        f"{', '.join(changed['services']) or 'no service yet'}."
    )


@secrets_app.command("rm")
def secrets_rm(
    name: Annotated[str, typer.Argument(help="The secret's name")],
    yes: YesOption = False,
) -> None:
    """Delete a shared secret (owners). Asks first.

    Its services restart without it, so whatever they check or send with it stops working."""
    api = _api()
    project = _project_id(api)
    secret = _secret(api, project, name)
    if not yes:
        receivers = ", ".join(secret["services"]) or "no service"
        _confirm(
            f"Delete {name}? {receivers} restart(s) without it.",
            unasked=f"delete {name}",
        )
    _call(lambda: api.send("DELETE", f"/projects/{project}/secrets/{secret['id']}"))
    if options.as_json:
        _print_json({"deleted": name})
        return
    out.print(f"Deleted {name}; its services restart without it.")


@secrets_app.command("end-grace")
def secrets_end_grace(
    name: Annotated[str, typer.Argument(help="The secret's name")],
    yes: YesOption = False,
) -> None:
    """End the rotation's grace window now (owners). Asks first.

    The old value is retired, and anything still sending it (a job started before the
    rotation, a script, a request under way) is refused from then on."""
    api = _api()
    project = _project_id(api)
    secret = _secret(api, project, name)
    if not yes:
        _confirm(
            f"End the grace window of {name} now? Anything still sending the old value is "
            "refused from then on.",
            unasked=f"end the grace window of {name}",
        )
    progress = _call(
        lambda: api.send("POST", f"/projects/{project}/secrets/{secret['id']}/rotation/end-grace")
    )
    if options.as_json:
        _print_json(progress)
        return
    out.print(
        f"Ended the grace window of rotation {progress['number']} of {name}: the old value is "
        "being retired, and callers still sending it are refused."
    )


# -- Mutual TLS --------------------------------------------------------------------------------

TLS_DIR = "/var/run/stackblaze/tls"


def _mtls(api: Api, project: str) -> dict[str, Any]:
    return dict(_call(lambda: api.get(f"/projects/{project}/mtls")))


@mtls_app.command("status")
def mtls_status() -> None:
    """Whether mutual TLS is on, the project's CAs, and how a CA rotation stands."""
    api = _api()
    project = _project(api)
    state = _mtls(api, project["id"])
    if options.as_json:
        _print_json(state)
        return
    if not state["enabled"]:
        out.print(
            f"Mutual TLS is off for {project['name']}. `stackblaze mtls enable` turns it on "
            "(owners)."
        )
        return
    out.print(
        f"Mutual TLS is on for {project['name']} since {_when(state['enabled_at'])} (turned on "
        f"by {state['enabled_by']})."
    )
    issued = len(state["certificates"])
    waiting = f"; {state['pending']} waiting for a first one" if state["pending"] else ""
    out.print(
        f"{issued} service{'' if issued == 1 else 's'} with a certificate{waiting}. Each is "
        f"valid for {_duration(state['certificate_hours'] * 3600)} and renewed well before it "
        "expires (`stackblaze mtls certs`)."
    )
    rotation = state["rotation"]
    if rotation["rotating"]:
        out.print(
            f"CA rotation in progress; this phase started {_ago(rotation['phase_started_at'])}:"
        )
        marks = {"done": "✓", "current": "→", "pending": " "}
        for step in rotation["steps"]:
            out.print(f"  {marks.get(step['state'], ' ')} {step['title']}")
    elif rotation["last_rotated_at"]:
        out.print(
            f"CA rotation: none running; the last completed {_ago(rotation['last_rotated_at'])}."
        )
    else:
        out.print("CA rotation: never rotated.")
    _table(
        ["CA", "CREATED", "STATE"],
        [
            (
                authority["generation"],
                _when(authority["created_at"]),
                "trusted" if authority["trusted"] else f"retired {_when(authority['retired_at'])}",
            )
            for authority in state["authorities"]
        ],
    )


@mtls_app.command("enable")
def mtls_enable(yes: YesOption = False) -> None:
    """Turn on mutual TLS for the project (owners). Asks first.

    The project gets its own CA, and each service a certificate naming it, mounted at
    /var/run/stackblaze/tls: each workload restarts once to mount it. Certificates are then
    renewed, and the CA rotated, without restarts. It can't be turned off."""
    api = _api()
    project = _project(api)
    state = _mtls(api, project["id"])
    if not state["enabled"]:
        if not yes:
            _confirm(
                f"Turn on mutual TLS for {project['name']}? Each workload restarts once to "
                f"mount its certificate at {TLS_DIR}, and it can't be turned off.",
                unasked=f"turn on mutual TLS for {project['name']}",
            )
        state = _call(lambda: api.send("POST", f"/projects/{project['id']}/mtls"))
    elif not options.as_json:
        out.print(
            f"Mutual TLS is already on for {project['name']}, since {_when(state['enabled_at'])}."
        )
        return
    if options.as_json:
        _print_json(state)
        return
    out.print(
        f"Mutual TLS is on for {project['name']}: each service gets a certificate from the "
        f"project's CA at {TLS_DIR}, and each workload restarts once to mount it. "
        "`stackblaze mtls status` follows it."
    )


@mtls_app.command("rotate-ca")
def mtls_rotate_ca(yes: YesOption = False) -> None:
    """Rotate the project's CA without refusing a request (owners). Asks first.

    Every service trusts the new CA beside the old, then gets a certificate from the new one,
    then stops trusting the old, whose key is destroyed. Nothing restarts; a client outside
    the project that trusts the old CA stops trusting the services' new certificates."""
    api = _api()
    project = _project(api)
    if not yes:
        _confirm(
            f"Rotate the CA of {project['name']}? Every service gets a certificate from a new "
            "CA and the old one is retired; nothing restarts.",
            unasked=f"rotate the CA of {project['name']}",
        )
    state = _call(lambda: api.send("POST", f"/projects/{project['id']}/mtls/rotate-ca"))
    if options.as_json:
        _print_json(state)
        return
    newest = max(authority["generation"] for authority in state["authorities"])
    out.print(
        f"Started rotating the CA of {project['name']} to CA {newest}: every service trusts "
        "it beside the old one first. Follow it with `stackblaze mtls status`."
    )


@mtls_app.command("certs")
def mtls_certs() -> None:
    """Each service's certificate: identity, CA, expiry and renewal (never a private key)."""
    api = _api()
    project = _project(api)
    state = _mtls(api, project["id"])
    if options.as_json:
        _print_json(state["certificates"])
        return
    if not state["enabled"]:
        out.print(
            f"Mutual TLS is off for {project['name']}: no certificates. `stackblaze mtls "
            "enable` turns it on (owners)."
        )
        return
    if state["certificates"]:
        _table(
            ["SERVICE", "IDENTITY", "CA", "EXPIRES", "RENEWS"],
            [
                (
                    c["service"],
                    c["identity"],
                    c["authority"],
                    _when(c["not_after"]),
                    _when(c["renew_after"]),
                )
                for c in state["certificates"]
            ],
        )
    elif not state["pending"]:
        out.print(f"{project['name']} has no service yet, so no certificate.")
    if state["pending"]:
        count = state["pending"]
        out.print(
            f"{count} service{' has' if count == 1 else 's have'} no certificate yet: the "
            f"worker issues {'it' if count == 1 else 'them'} on its next pass."
        )


def _callers_said(service: dict[str, Any], callers: dict[str, Any]) -> str:
    if callers["any"]:
        return f"{service['dns_label']} accepts calls from every service of the project."
    if not callers["callers"]:
        return f"{service['dns_label']} accepts calls from no service."
    return f"{service['dns_label']} accepts calls from {', '.join(callers['callers'])} only."


def _service_names(api: Api, project: str) -> list[str]:
    names: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = _call(api.get, f"/projects/{project}/services", limit=200, offset=offset)
        names.extend(item["dns_label"] for item in page["items"])
        offset = page["next_offset"]
    return names


@mtls_app.command("callers")
def mtls_callers(
    name: Annotated[str, typer.Argument(help="The service's name")],
    any_caller: Annotated[
        bool, typer.Option("--any", help="Let every service of the project call it")
    ] = False,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help='Only these services may call it: their names, comma-separated ("" for none)',
        ),
    ] = None,
    yes: YesOption = False,
) -> None:
    """Who may call a service over mutual TLS; --any or --only sets it (owners).

    With --only, the services left out are refused from then on (that asks first). The
    service's accept list changes in place: nothing restarts."""
    if any_caller and only is not None:
        _usage("Give --any or --only, not both.")
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    path = f"/projects/{project}/services/{service['id']}/callers"
    callers = _call(lambda: api.get(path))
    if any_caller or only is not None:
        wanted = [each.strip().lower() for each in (only or "").split(",") if each.strip()]
        if not any_caller and not yes:
            before = callers["callers"] if not callers["any"] else _service_names(api, project)
            dropped = [
                each for each in before if each not in wanted and each != service["dns_label"]
            ]
            if dropped:
                _confirm(
                    f"Refuse calls to {service['dns_label']} from {', '.join(dropped)}?",
                    unasked=f"refuse calls to {service['dns_label']} from {', '.join(dropped)}",
                )
        body: dict[str, Any] = {"any": True} if any_caller else {"any": False, "callers": wanted}
        callers = _call(lambda: api.send("PUT", path, body))
    if options.as_json:
        _print_json(callers)
        return
    out.print(_callers_said(service, callers))
    if not _mtls(api, project)["enabled"]:
        out.print("Mutual TLS is off for this project: this applies once it is on.")


# -- Peering -----------------------------------------------------------------------------------


@peering_app.command("ls")
def peering_ls() -> None:
    """This project's peerings with their state, newest first."""
    api = _api()
    project = _project_id(api)
    found = _call(lambda: api.get(f"/projects/{project}/peerings"))
    if options.as_json:
        _print_json(found)
        return
    _table(
        ["ID", "REQUESTER", "TARGET", "STATUS", "SINCE"],
        [
            (
                p["id"],
                f"{p['requester']['name']} ({p['requester']['id']})",
                f"{p['target']['name']} ({p['target']['id']})",
                p["status_label"],
                p["history"][-1]["at"][:16] if p["history"] else "",
            )
            for p in found
        ],
    )


@peering_app.command("request")
def peering_request(
    target: Annotated[str, typer.Argument(help="The other project's ID")],
    justification: Annotated[str, typer.Option(help="Why the projects need to talk privately")],
) -> None:
    """Ask to peer this project with another Enterprise project."""
    api = _api()
    project = _project_id(api)
    body = {"target": target, "justification": justification}
    created = _call(lambda: api.send("POST", f"/projects/{project}/peerings", body))
    _peering_done(created, "Requested")


def _transition(peering_id: int, action: str, verb: str) -> None:
    api = _api()
    project = _project_id(api)
    moved = _call(lambda: api.send("POST", f"/projects/{project}/peerings/{peering_id}/{action}"))
    _peering_done(moved, verb)


def _peering_done(peering: dict[str, Any], verb: str) -> None:
    if options.as_json:
        _print_json(peering)
        return
    out.print(f"{verb} peering #{peering['id']}: {peering['status_label']}.")


@peering_app.command("accept")
def peering_accept(peering_id: Annotated[int, typer.Argument(help="The request's ID")]) -> None:
    """Accept another organization's request: it goes to support."""
    _transition(peering_id, "accept", "Accepted")


@peering_app.command("cancel")
def peering_cancel(peering_id: Annotated[int, typer.Argument(help="The request's ID")]) -> None:
    """Withdraw or decline a pending request."""
    _transition(peering_id, "cancel", "Cancelled")


@peering_app.command("revoke")
def peering_revoke(
    peering_id: Annotated[int, typer.Argument(help="The peering's ID")],
    yes: YesOption = False,
) -> None:
    """Disconnect an approved or active peering. Asks first.

    Both projects stop reaching each other at once (the dashboard's revoke page asks too)."""
    if not yes:
        _confirm(
            f"Revoke peering #{peering_id}? Both projects stop reaching each other at once.",
            unasked=f"revoke peering #{peering_id}",
        )
    _transition(peering_id, "revoke", "Revoked")


# -- Support -----------------------------------------------------------------------------------


@support_app.command("queue")
def support_queue() -> None:
    """Peering requests waiting for support's decision, oldest first."""
    api = _api()
    waiting = _call(lambda: api.get("/support/peerings"))
    if options.as_json:
        _print_json(waiting)
        return
    if not waiting:
        out.print("Nothing is waiting for support.")
        return
    _table(
        ["ID", "PROJECTS", "FROM", "TO", "WAITING", "JUSTIFICATION"],
        [
            (
                p["id"],
                f"{p['requester']['name']} ↔ {p['target']['name']}",
                f"{p['requester']['organization']} ({p['requester']['id']})",
                f"{p['target']['organization']} ({p['target']['id']})",
                _duration((datetime.now(UTC) - _moment(p["created_at"])).total_seconds()),
                p["justification"],
            )
            for p in waiting
        ],
    )


@support_app.command("approve")
def support_approve(peering_id: Annotated[int, typer.Argument(help="The request's ID")]) -> None:
    """Approve a peering request: the worker connects the two projects."""
    api = _api()
    moved = _call(lambda: api.send("POST", f"/support/peerings/{peering_id}/approve"))
    _peering_done(moved, "Approved")


@support_app.command("reject")
def support_reject(
    peering_id: Annotated[int, typer.Argument(help="The request's ID")],
    reason: Annotated[str, typer.Option(help="Why (the customer sees it)")],
) -> None:
    """Reject a peering request with a reason, which the customer sees."""
    api = _api()
    moved = _call(
        lambda: api.send("POST", f"/support/peerings/{peering_id}/reject", {"reason": reason})
    )
    _peering_done(moved, "Rejected")


# -- The team ----------------------------------------------------------------------------------


def _a(role: str) -> str:
    return f"{'an' if role[:1] in 'aeiou' else 'a'} {role}"


def _member(api: Api, organization: str, who: str) -> dict[str, Any]:
    members = _call(lambda: api.get(f"/organizations/{organization}/members"))
    wanted = who.strip().casefold()
    for member in members:
        if wanted in (member["username"].casefold(), (member["email"] or "").casefold()):
            return dict(member)
    _refuse(f"No member “{who}” in {organization}. `stackblaze members ls` lists them.")


@members_app.command("ls")
def members_ls(org: OrganizationOption = "") -> None:
    """Who belongs to the organization, in which role."""
    api = _api()
    organization = _organization(api, org)
    members = _call(lambda: api.get(f"/organizations/{organization}/members"))
    if options.as_json:
        _print_json(members)
        return
    _table(["PERSON", "EMAIL", "ROLE"], [(m["username"], m["email"], m["role"]) for m in members])


@members_app.command("add")
def members_add(
    who: Annotated[str, typer.Argument(help="Their username or email (they need an account)")],
    role: Annotated[Role, typer.Option(help="What they may do")] = "member",
    org: OrganizationOption = "",
) -> None:
    """Add someone who has an account to the organization (owners).

    Owners manage projects, secrets, peering and the team; members change services; viewers
    see everything and change nothing."""
    api = _api()
    organization = _organization(api, org)
    added = _call(
        lambda: api.send(
            "POST", f"/organizations/{organization}/members", {"who": who, "role": role}
        )
    )
    if options.as_json:
        _print_json(added)
        return
    out.print(f"Added {added['username']} to {organization} as {_a(added['role'])}.")


@members_app.command("role")
def members_role(
    who: Annotated[str, typer.Argument(help="Their username or email")],
    role: Annotated[Role, typer.Argument(help="Their new role")],
    org: OrganizationOption = "",
) -> None:
    """Change someone's role (owners); the last owner stays an owner.

    Their tokens act with no more than the new role from their next request."""
    api = _api()
    organization = _organization(api, org)
    member = _member(api, organization, who)
    changed = _call(
        lambda: api.send(
            "PATCH", f"/organizations/{organization}/members/{member['id']}", {"role": role}
        )
    )
    if options.as_json:
        _print_json(changed)
        return
    out.print(f"{changed['username']} is now {_a(changed['role'])} of {organization}.")


@members_app.command("rm")
def members_rm(
    who: Annotated[str, typer.Argument(help="Their username or email")],
    org: OrganizationOption = "",
    yes: YesOption = False,
) -> None:
    """Take someone out of the organization (owners). Asks first.

    Their tokens for it are revoked at once."""
    api = _api()
    organization = _organization(api, org)
    member = _member(api, organization, who)
    if not yes:
        _confirm(
            f"Remove {member['username']} from {organization}? Their tokens for it are revoked "
            "at once.",
            unasked=f"remove {member['username']} from {organization}",
        )
    _call(lambda: api.send("DELETE", f"/organizations/{organization}/members/{member['id']}"))
    if options.as_json:
        _print_json({"removed": member})
        return
    out.print(f"Removed {member['username']} from {organization}; their tokens for it are revoked.")


# -- API tokens --------------------------------------------------------------------------------


def _token_state(token: dict[str, Any]) -> str:
    if token["revoked_at"]:
        return "revoked"
    if token["expires_at"] and _moment(token["expires_at"]) <= datetime.now(UTC):
        return "expired"
    return "active"


@tokens_app.command("ls")
def tokens_ls(org: OrganizationOption = "") -> None:
    """Your tokens (an owner: everyone's in the organization), never the token itself."""
    api = _api()
    organization = _organization(api, org)
    tokens = _call(lambda: api.get(f"/organizations/{organization}/tokens"))
    if options.as_json:
        _print_json(tokens)
        return
    _table(
        ["ID", "NAME", "TOKEN", "HOLDER", "ROLE", "CREATED", "EXPIRES", "LAST USED", "STATE"],
        [
            (
                t["id"],
                t["name"],
                f"{t['prefix']}…",
                t["user"],
                t["role"],
                t["created_at"][:10],
                t["expires_at"][:10] if t["expires_at"] else "never",
                _ago(t["last_used_at"]) if t["last_used_at"] else "never",
                _token_state(t),
            )
            for t in tokens
        ],
    )


@tokens_app.command("revoke")
def tokens_revoke(
    token: Annotated[str, typer.Argument(help="The token's name or ID, as `tokens ls` shows")],
    org: OrganizationOption = "",
    yes: YesOption = False,
) -> None:
    """Revoke a token: yours, or (owners) anyone's. Asks first.

    Anything using it is refused from its next request."""
    api = _api()
    organization = _organization(api, org)
    tokens = _call(lambda: api.get(f"/organizations/{organization}/tokens"))
    live = [t for t in tokens if not t["revoked_at"]]
    found = [t for t in live if str(t["id"]) == token.strip()] or [
        t for t in live if t["name"] == token.strip()
    ]
    if not found:
        _refuse(
            f"No token “{token}” to revoke in {organization}. `stackblaze tokens ls` lists them."
        )
    if len(found) > 1:
        ids = ", ".join(f"{t['id']} ({t['user']}'s)" for t in found)
        _usage(f"More than one token is named {token}: give its ID, one of {ids}.")
    chosen = found[0]
    if not yes:
        _confirm(
            f"Revoke {chosen['name']} ({chosen['prefix']}…, {chosen['user']}'s)? Anything "
            "using it is refused from its next request.",
            unasked=f"revoke {chosen['name']}",
        )
    _call(lambda: api.send("DELETE", f"/organizations/{organization}/tokens/{chosen['id']}"))
    if options.as_json:
        _print_json({"revoked": chosen})
        return
    out.print(f"Revoked {chosen['name']}: it is refused from its next request.")


# -- The project as a file --------------------------------------------------------------------

FileOption = Annotated[
    Path,
    typer.Option("--file", "-f", help="The project file, e.g. stackblaze.yaml", dir_okay=False),
]
# No environment variable here: the project a file names is overridden only by what is typed.
FileProjectOption = Annotated[
    str,
    typer.Option(
        "--project",
        "-p",
        help="Apply to this project (ID or name) instead of the one the file names",
    ),
]
PruneOption = Annotated[
    bool,
    typer.Option(help="Also delete what the project holds and the file does not name"),
]


@app.command("export")
def export_project(
    project: Annotated[
        str, typer.Argument(help="Project ID or name (default: --project, or the only one)")
    ] = "",
) -> None:
    """Print the project as a file (stackblaze.yaml): its services, shared secrets (names
    and receivers, never values), reference variables and peerings.

    `stackblaze export > stackblaze.yaml`, keep it in your repository, and `plan` and `apply`
    it: applied to an empty project, it makes the same project."""
    api = _api()
    if project:
        options.project = project
    current = _call(project_file.read_project, api, _project_id(api))
    sys.stdout.write(project_file.export(current))


@app.command("schema")
def print_schema() -> None:
    """Print the project file's JSON Schema, for editors: save it as stackblaze.schema.json
    beside the file (the line `export` writes at its top points there)."""
    _print_json(project_file.SCHEMA)


def _plan_of(path: Path, *, prune: bool, project: str) -> tuple[Api, project_file.Plan]:
    """The file read and checked whole, then compared with its project: the one named by this
    command's --project, else the file's, else the usual one (STACKBLAZE_PROJECT, the saved
    one, the only one). Any error in it: every one printed, nothing sent."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        _refuse(f"Can't read {path}: {getattr(error, 'strerror', None) or error}.")
    try:
        spec = project_file.load(text, str(path))
    except project_file.FileInvalid as invalid:
        _file_invalid(invalid)
    api = _api()
    if project or spec.project:
        if spec.project and not project and options.project not in ("", spec.project):
            err.print(
                f"The file names project {spec.project}: it is planned against that one, not "
                f"{options.project} (put --project after the command to choose another)."
            )
        options.project = project or spec.project or ""
    project_id = _project_id(api)
    try:
        plan = _call(project_file.make_plan, api, spec, project_id, prune=prune)
    except project_file.FileInvalid as invalid:
        _file_invalid(invalid)
    return api, plan


def _file_invalid(invalid: project_file.FileInvalid) -> NoReturn:
    err.print(f"Error: {invalid}; nothing was changed:")
    for line in invalid.errors:
        err.print(f"  {line}")
    raise typer.Exit(EXIT_REFUSED)


def _show_plan(plan: project_file.Plan) -> None:
    if options.as_json:
        _print_json(
            {
                "project": plan.project["id"],
                "changes": [
                    {"action": change.sign, "what": change.what, "detail": change.detail}
                    for change in plan.changes
                ],
            }
        )
        return
    out.print(f"{plan.project['name']} ({plan.project['id']}):")
    for change in plan.changes:
        out.print(change.describe())
    out.print(plan.summary() if not plan.empty else "No changes.")


@app.command("plan")
def plan_command(
    file: FileOption, prune: PruneOption = False, project: FileProjectOption = ""
) -> None:
    """Show what applying the file would change, resource by resource; changes nothing.

    Exits 0 when nothing would change, 2 when something would (as terraform plan
    -detailed-exitcode), 1 on an error (a file's errors are printed each with its line and
    key)."""
    try:
        _, plan = _plan_of(file, prune=prune, project=project)
    except typer.Exit as stopped:
        # 2 means "something would change" here: any other stop is an error (1), as in
        # terraform, so a CI job reading the code never takes an error for drift.
        code = EXIT_REFUSED if stopped.exit_code == EXIT_USAGE else stopped.exit_code
        raise typer.Exit(code) from None
    _show_plan(plan)
    raise typer.Exit(0 if plan.empty else 2)


@app.command("apply")
def apply_command(
    file: FileOption,
    prune: PruneOption = False,
    project: FileProjectOption = "",
    yes: YesOption = False,
    wait: Annotated[bool, typer.Option(help="Follow the cluster until it is in sync")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most")] = 600.0,
    interval: Annotated[float, typer.Option(help="Seconds between looks", hidden=True)] = 1.0,
) -> None:
    """Make the project what the file describes: exactly the changes `plan` shows.

    Applied twice, the second finds nothing to do. What the file no longer names is kept
    unless you add --prune (deletions are asked for, or need --yes with no terminal)."""
    api, plan = _plan_of(file, prune=prune, project=project)
    if plan.empty:
        if not options.as_json:
            out.print("No changes: the project already matches the file.")
    else:
        if not options.as_json:
            _show_plan(plan)
        deletions = [change for change in plan.actions if change.sign == "-"]
        if deletions and not yes:
            _confirm(
                f"Delete {len(deletions)} thing(s) the file no longer names?",
                unasked=f"delete the {len(deletions)} thing(s) the file no longer names",
            )
        done: list[project_file.Change] = []

        def said(change: project_file.Change) -> None:
            done.append(change)
            if not options.as_json:
                out.print(f"{change.sign} {change.what}: done")

        try:
            _call(project_file.apply, api, plan, said)
        finally:
            if len(done) < len(plan.actions):
                err.print(f"Made {len(done)} of {len(plan.actions)} changes before that error.")
        counts = {sign: sum(1 for c in done if c.sign == sign) for sign in "+~-"}
        if options.as_json:
            _show_plan(plan)
        else:
            out.print(
                f"Applied: {counts['+']} added, {counts['~']} changed, {counts['-']} deleted."
            )
    if wait:
        _wait_in_sync(api, str(plan.project["id"]), timeout=timeout, interval=interval)


def _wait_in_sync(api: Api, project_id: str, *, timeout: float, interval: float) -> None:
    """Poll the project's sync state until the cluster has caught up with every change."""
    deadline = time.monotonic() + timeout
    with err.status("Waiting for the cluster…", spinner="dots"):
        while True:
            sync = _call(lambda: api.get(f"/projects/{project_id}/sync"))
            if sync["state"] == "in_sync" and sync["applied_generation"] >= sync["generation"]:
                break
            if sync["state"] == "failed":
                _refuse(f"The cluster refused a change: {sync['error']}")
            if time.monotonic() > deadline:
                err.print(f"Error: not in sync after {timeout:.0f} s ({sync['label']}).")
                raise typer.Exit(EXIT_FAILED)
            time.sleep(interval)
    if not options.as_json:
        out.print(f"The cluster is in sync (generation {sync['generation']}).")


# -- The audit log -----------------------------------------------------------------------------


@app.command()
def audit(
    limit: Annotated[int, typer.Option(help="How many events, newest first")] = 50,
    who: Annotated[str, typer.Option(help="Only this person's changes")] = "",
    what: Annotated[str, typer.Option(help="project, service, secret, peering or member")] = "",
) -> None:
    """The project's audit log: who did what, when (and with which token)."""
    api = _api()
    project = _project_id(api)
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(events) < limit:
        page = _call(
            api.get,
            f"/projects/{project}/audit",
            limit=min(200, limit - len(events)),
            cursor=cursor,
            who=who,
            what=what,
        )
        events.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    if options.as_json:
        _print_json(events)
        return
    _table(
        ["WHEN", "WHO", "WHAT", "TARGET"],
        [
            (e["at"][:19].replace("T", " "), e["actor"], e["action_label"], e["target"])
            for e in events
        ],
    )


# -- Notifications -----------------------------------------------------------------------------


@app.command()
def notifications(
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 25,
    unread: Annotated[bool, typer.Option("--unread", help="Only the unread ones")] = False,
) -> None:
    """What needs you (your token's organization): a peering waiting for your acceptance,
    support's decisions, a failed sync, a rotation waiting on a workload. Read them, and mark
    them read, in the dashboard's header."""
    api = _api()
    found: list[dict[str, Any]] = []
    before: int | None = None
    while len(found) < limit:
        page = _call(
            api.get,
            "/notifications",
            limit=min(100, limit - len(found)),
            before=before,
            unread="true" if unread else None,
        )
        found.extend(page["items"])
        before = page["next_before"]
        if before is None:
            break
    if options.as_json:
        _print_json(found)
        return
    if not found:
        out.print("No unread notifications." if unread else "No notifications.")
        return
    _table(
        ["WHEN", "", "PROJECT", "WHAT", "WHERE"],
        [
            (
                _ago(n["created_at"]),
                "unread" if n["unread"] else "",
                n["project_name"],
                n["title"] + (" (resolved)" if n["resolved_at"] else ""),
                n["url"],
            )
            for n in found
        ],
    )


def run() -> None:
    """The console script: anything unforeseen is a failure (exit 3), said in one line."""
    try:
        app()
    except Exception as error:  # typer's own exits are SystemExit and pass through
        err.print(f"Error: {error.__class__.__name__}: {error}")
        sys.exit(EXIT_FAILED)
