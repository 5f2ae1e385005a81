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
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stackblaze_cli.client import Api, Failed, Refused, check_url, load_config, save_config

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3

app = typer.Typer(
    help="Stackblaze private networking: services, shared secrets, peering and the audit log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
services_app = typer.Typer(help="Services and databases: hostnames, ports, connection strings.")
secrets_app = typer.Typer(help="Shared secrets and their rotation without downtime.")
peering_app = typer.Typer(help="VPC peering between projects (Enterprise).")
app.add_typer(services_app, name="services")
app.add_typer(secrets_app, name="secrets")
app.add_typer(peering_app, name="peering")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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


def _project_id(api: Api) -> str:
    """The project to act on: --project (an ID or a name), the saved one, or the only one."""
    wanted = options.project or load_config().get("project", "")
    projects: list[dict[str, Any]] = _call(lambda: api.get("/projects"))
    if wanted:
        for project in projects:
            if wanted in (project["id"], project["name"]) or (
                wanted.casefold() == project["name"].casefold()
            ):
                return str(project["id"])
        _usage(f"No project “{wanted}” here. `stackblaze projects` lists them.")
    if len(projects) == 1:
        return str(projects[0]["id"])
    names = ", ".join(f"{p['name']} ({p['id']})" for p in projects) or "none"
    _usage(f"Choose a project with --project: {names}.")


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


@app.command()
def projects() -> None:
    """The projects your token can see."""
    api = _api()
    found = _call(lambda: api.get("/projects"))
    if options.as_json:
        _print_json(found)
        return
    _table(
        ["ID", "NAME", "ORGANIZATION", "ROLE", "SYNC"],
        [(p["id"], p["name"], p["organization"], p["role"], p["sync"]["label"]) for p in found],
    )


# -- Services ----------------------------------------------------------------------------------


@services_app.command("ls")
def services_ls(
    kind: Annotated[str, typer.Option(help="Only this kind (web, private, postgresql…)")] = "",
) -> None:
    """Every service with its private address and ClusterIP."""
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
        ["NAME", "KIND", "ADDRESS", "CLUSTER IP"],
        [(s["dns_label"], s["kind"], s["address"], s["cluster_ip"] or "pending") for s in items],
    )


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
) -> None:
    """Rename a service. Its old hostname keeps resolving for 24 hours unless you say
    otherwise (--keep-old-name), and no other service can take it meanwhile."""
    if keep_old_name not in KEEP_OLD_NAME:
        _usage(f"--keep-old-name must be one of {', '.join(KEEP_OLD_NAME)}.")
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
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
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")] = False,
) -> None:
    """Delete a service and release its hostname."""
    api = _api()
    project = _project_id(api)
    service = _service(api, project, name)
    if not yes:
        if not sys.stdin.isatty():
            _usage(f"Add --yes to delete {service['name']} without a prompt (no terminal to ask).")
        if not typer.confirm(f"Delete {service['name']} ({service['hostname']})?"):
            raise typer.Exit(EXIT_USAGE)
    _call(lambda: api.send("DELETE", f"/projects/{project}/services/{service['id']}"))
    if options.as_json:
        _print_json({"deleted": service["dns_label"]})
        return
    out.print(f"Deleted {service['name']}; {service['hostname']} is released.")


@services_app.command("show")
def services_show(name: Annotated[str, typer.Argument(help="The service's name")]) -> None:
    """A service's hostname, ports, ClusterIP and connection strings (passwords masked)."""
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
            ("ClusterIP", service["cluster_ip"] or "pending"),
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
    """Test the connection: a probe in the project resolves NAME.internal and connects to
    each port, then says what it found. Exits 0 when every check passes, 1 when one fails."""
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
        ["NAME", "VERSION", "SERVICES", "ROTATION"],
        [
            (s["name"], s["version"], ", ".join(s["services"]) or "none", s["rotation_phase"])
            for s in found
        ],
    )


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
    """Rotate without downtime: accept new, send new, a grace window, retire old."""
    api = _api()
    project = _project_id(api)
    secret = _secret(api, project, name)
    base = f"/projects/{project}/secrets/{secret['id']}"
    progress = _call(lambda: api.send("POST", f"{base}/rotate"))
    if not wait:
        if options.as_json:
            _print_json(progress)
        else:
            out.print(f"Rotating {name}. Follow it with `stackblaze secrets rotate … --wait`.")
        return
    progress = _follow(api, f"{base}/rotation", progress, timeout=timeout, interval=interval)
    if options.as_json:
        _print_json(progress)
        return
    out.print(f"Rotated {name}: every receiving service now runs version {progress['version']}.")


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
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")] = False,
) -> None:
    """Disconnect an approved or active peering: both projects stop reaching each other at
    once. Asks first (the dashboard's revoke page does too)."""
    if not yes:
        if not sys.stdin.isatty():
            _usage(
                f"Add --yes to revoke peering #{peering_id} without a prompt (no terminal to ask)."
            )
        if not typer.confirm(
            f"Revoke peering #{peering_id}? Both projects stop reaching each other at once."
        ):
            raise typer.Exit(EXIT_USAGE)
    _transition(peering_id, "revoke", "Revoked")


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


def run() -> None:
    """The console script: anything unforeseen is a failure (exit 3), said in one line."""
    try:
        app()
    except Exception as error:  # typer's own exits are SystemExit and pass through
        err.print(f"Error: {error.__class__.__name__}: {error}")
        sys.exit(EXIT_FAILED)
