"""The project as a file: ``stackblaze export``, ``plan`` and ``apply``.

A ``stackblaze.yaml`` names a project and describes what it should hold: its services (name,
kind, ports), shared secrets (names and receivers, never values), reference variables and
peerings. ``plan`` compares the file with the project as the API shows it and lists each change,
resource by resource; ``apply`` makes exactly those changes through the API, in an order that
never refers to something not made yet, and a second apply finds nothing to do.

The file is checked whole before anything is sent: every error at once, each with its line and
key. ``SCHEMA`` is the same rules as a JSON Schema (``stackblaze schema``), for editors.

Services are matched by hostname: a name in the file is the service whose DNS label the server
derives from it (asked of the API, which owns the naming rule). ``was:`` names the service a
renamed one had, so a rename is a rename (its old hostname keeps resolving for a day), not a
deletion and a creation. What the project holds and the file does not name is left alone unless
``--prune`` is given; peerings are never pruned (revoking disconnects another organization's
project: ``stackblaze peering revoke`` does it, and asks).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from stackblaze_cli.client import Api

KINDS = ("web", "private", "postgresql", "mysql", "redis", "mongodb")
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "redis": 6379, "mongodb": 27017}
PROJECT_ID = r"^[abcdefghijkmnpqrstuvwxyz23456789]{12}$"
VARIABLE = r"^[A-Z_][A-Z0-9_]*$"
# What each pattern asks, in words.
SAYS = {
    PROJECT_ID: "a project ID is 12 letters and digits, as on the project's Settings page",
    VARIABLE: "use upper-case letters, digits and underscores, not starting with a digit, "
    "like INTERNAL_API_SECRET",
}
MAX_PORTS = 10
KEEP_OLD_NAME_SECONDS = 24 * 3600

_SERVICE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "description": "As you would say it; becomes the hostname: “Email Sender” → "
            "email-sender.internal",
        },
        "kind": {"enum": list(KINDS), "default": "web"},
        "ports": {
            "type": "array",
            "maxItems": MAX_PORTS,
            "uniqueItems": True,
            "items": {"type": "integer", "minimum": 1, "maximum": 65535},
            "description": "Web services default to 8080; a database always uses its standard "
            "port; left out, the ports stay as they are",
        },
        "was": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "description": "The name it had: renamed, its old hostname keeps resolving for 24 h",
        },
    },
}
_SECRET: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": VARIABLE, "maxLength": 100},
        "services": {
            "type": "array",
            "uniqueItems": True,
            "items": {"type": "string", "minLength": 1},
            "description": "The services that receive it, by name or hostname label",
        },
        "generate": {
            "type": "boolean",
            "description": "Create it with a generated 256-bit value if the project has none "
            "(values never go in the file)",
        },
        "rotate_every_days": {"type": ["integer", "null"], "minimum": 1, "maximum": 365},
    },
}
_REFERENCE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["from", "to"],
    "properties": {
        "from": {"type": "string", "minLength": 1, "description": "Whose address is given"},
        "to": {"type": "string", "minLength": 1, "description": "The service that receives it"},
        "variable": {
            "type": "string",
            "pattern": VARIABLE,
            "maxLength": 100,
            "description": "Left out: the usual name (DATABASE_URL, REDIS_URL, API_URL…)",
        },
    },
}
_PEERING: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["project", "justification"],
    "properties": {
        "project": {"type": "string", "pattern": PROJECT_ID, "description": "Its project ID"},
        "justification": {"type": "string", "minLength": 1, "maxLength": 2000},
    },
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://docs.stackblaze.cloud/schemas/stackblaze.yaml.json",
    "title": "Stackblaze project file (stackblaze.yaml)",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "project": {
            "type": "string",
            "pattern": PROJECT_ID,
            "description": "The project's ID, as on its Settings page (--project overrides it)",
        },
        "services": {"type": "array", "items": _SERVICE},
        "secrets": {"type": "array", "items": _SECRET},
        "references": {"type": "array", "items": _REFERENCE},
        "peerings": {"type": "array", "items": _PEERING},
    },
}


# -- The file ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    kind: str
    ports: tuple[int, ...] | None
    was: str | None
    line: int


@dataclass(frozen=True)
class SecretSpec:
    name: str
    services: tuple[str, ...]
    generate: bool
    rotate_every_days: int | None
    line: int
    # Whether the file says rotate_every_days at all (null is "never").
    schedules: bool = False


@dataclass(frozen=True)
class ReferenceSpec:
    source: str
    consumer: str
    variable: str | None
    line: int


@dataclass(frozen=True)
class PeeringSpec:
    project: str
    justification: str
    line: int


@dataclass
class ProjectFile:
    source: str
    project: str | None = None
    services: list[ServiceSpec] = field(default_factory=list)
    secrets: list[SecretSpec] = field(default_factory=list)
    references: list[ReferenceSpec] = field(default_factory=list)
    peerings: list[PeeringSpec] = field(default_factory=list)


class FileInvalid(Exception):
    """The file's errors, every one, each ``file:line: key: message``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} error{'s' if len(errors) != 1 else ''} in the file")
        self.errors = sorted(errors, key=_line_of)


def plain(text: str) -> bool:
    """No control character (C0, DEL or C1): what the API refuses in a name."""
    return not any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text)


def _line_of(error: str) -> int:
    """The line an error is about (``file:line: …``), to list them in the file's order."""
    parts = error.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdecimal() else 0


class _Reader:
    """Walks the YAML node tree, collecting every error with its line and key."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []
        self._constructor = SafeConstructor()

    def error(self, node: Node, key: str, message: str) -> None:
        where = f"{self.source}:{node.start_mark.line + 1}"
        self.errors.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    def value(self, node: Node) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except ConstructorError as error:
            self.error(node, "", str(error.problem))
            return None

    def mapping(
        self, node: Node, key: str, allowed: dict[str, Any], required: tuple[str, ...] = ()
    ) -> dict[str, tuple[Node, Any]] | None:
        if not isinstance(node, MappingNode):
            self.error(node, key, "expected a mapping of keys to values")
            return None
        found: dict[str, tuple[Node, Any]] = {}
        for key_node, value_node in node.value:
            name = self.value(key_node)
            if not isinstance(name, str):
                self.error(key_node, key, f"a key must be text, not {name!r}")
                continue
            path = f"{key}.{name}" if key else name
            if name not in allowed:
                self.error(key_node, path, f"unknown key (known: {', '.join(allowed)})")
                continue
            if name in found:
                self.error(key_node, path, "given twice")
                continue
            found[name] = (value_node, self.value(value_node))
        for name in required:
            if name not in found:
                self.error(node, f"{key}.{name}" if key else name, "missing")
        return found

    def items(self, node: Node, key: str) -> Iterator[tuple[int, Node]]:
        if not isinstance(node, SequenceNode):
            if not (isinstance(node, ScalarNode) and self.value(node) is None):
                self.error(node, key, "expected a list")
            return
        yield from enumerate(node.value)

    def text(
        self,
        found: dict[str, tuple[Node, Any]],
        name: str,
        key: str,
        *,
        pattern: str = "",
        limit: int = 100,
    ) -> str | None:
        if name not in found:
            return None
        node, value = found[name]
        path = f"{key}.{name}"
        if not isinstance(value, str) or not value.strip():
            self.error(node, path, "expected text")
            return None
        if not plain(value):
            self.error(node, path, "can’t contain control characters")
            return None
        if len(value) > limit:
            self.error(node, path, f"keep it to {limit} characters (it has {len(value)})")
            return None
        if pattern and not re.match(pattern, value):
            self.error(node, path, f"“{value}”: {SAYS[pattern]}")
            return None
        return value


def load(text: str, source: str = "stackblaze.yaml") -> ProjectFile:
    """The file, checked whole: ``FileInvalid`` with every error if anything is wrong."""
    reader = _Reader(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"{mark.line + 1}" if mark is not None else "1"
        problem = getattr(error, "problem", None) or str(error)
        raise FileInvalid([f"{source}:{line}: not valid YAML: {problem}"]) from None
    result = ProjectFile(source=source)
    if root is None:
        raise FileInvalid([f"{source}:1: the file is empty"])
    top = reader.mapping(root, "", dict.fromkeys(SCHEMA["properties"]))
    if top is None:
        raise FileInvalid(reader.errors)
    result.project = (
        reader.text(top, "project", "", pattern=PROJECT_ID) if "project" in top else None
    )
    if "services" in top:
        result.services = _services(reader, top["services"][0])
    if "secrets" in top:
        result.secrets = _secrets(reader, top["secrets"][0])
    if "references" in top:
        result.references = _references(reader, top["references"][0])
    if "peerings" in top:
        result.peerings = _peerings(reader, top["peerings"][0])
    if reader.errors:
        raise FileInvalid(reader.errors)
    return result


def _services(reader: _Reader, node: Node) -> list[ServiceSpec]:
    specs = []
    for index, item in reader.items(node, "services"):
        key = f"services[{index}]"
        found = reader.mapping(item, key, _SERVICE["properties"], required=("name",))
        if found is None:
            continue
        name = reader.text(found, "name", key)
        was = reader.text(found, "was", key)
        kind = "web"
        if "kind" in found:
            kind_node, kind = found["kind"]
            if kind not in KINDS:
                # Said; the service still counts, so what refers to it is not refused too.
                reader.error(kind_node, f"{key}.kind", f"{kind!r} is not one of {', '.join(KINDS)}")
                kind = "web"
        ports = _ports(reader, found, key, kind)
        if name is not None:
            specs.append(ServiceSpec(name.strip(), kind, ports, was and was.strip(), _line(item)))
    return specs


def _ports(
    reader: _Reader, found: dict[str, tuple[Node, Any]], key: str, kind: str
) -> tuple[int, ...] | None:
    if "ports" not in found:
        return None
    node, _ = found["ports"]
    ports: list[int] = []
    for index, item in reader.items(node, f"{key}.ports"):
        port = reader.value(item)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            reader.error(item, f"{key}.ports[{index}]", f"{port!r} is not a port (1 to 65535)")
        elif port in ports:
            reader.error(item, f"{key}.ports[{index}]", f"{port} is listed twice")
        else:
            ports.append(port)
    if len(ports) > MAX_PORTS:
        reader.error(node, f"{key}.ports", f"a service can expose at most {MAX_PORTS} ports")
    standard = DATABASE_PORTS.get(kind)
    if standard is not None and ports and ports != [standard]:
        reader.error(
            node,
            f"{key}.ports",
            f"a {kind} database always listens on port {standard}: leave the ports out, or "
            "give that one",
        )
    return tuple(ports)


def _names(
    reader: _Reader, found: dict[str, tuple[Node, Any]], name: str, key: str
) -> tuple[str, ...]:
    if name not in found:
        return ()
    node, _ = found[name]
    names = []
    for index, item in reader.items(node, f"{key}.{name}"):
        value = reader.value(item)
        if not isinstance(value, str) or not value.strip():
            reader.error(item, f"{key}.{name}[{index}]", "expected a service's name")
        elif not plain(value) or len(value) > 100:
            reader.error(item, f"{key}.{name}[{index}]", "no service has such a name")
        else:
            names.append(value.strip())
    return tuple(names)


def _secrets(reader: _Reader, node: Node) -> list[SecretSpec]:
    specs = []
    for index, item in reader.items(node, "secrets"):
        key = f"secrets[{index}]"
        found = reader.mapping(item, key, _SECRET["properties"], required=("name",))
        if found is None:
            continue
        name = reader.text(found, "name", key, pattern=VARIABLE)
        generate = False
        if "generate" in found:
            generate_node, generate = found["generate"]
            if not isinstance(generate, bool):
                reader.error(generate_node, f"{key}.generate", "expected true or false")
        days = None
        if "rotate_every_days" in found:
            days_node, days = found["rotate_every_days"]
            if days is not None and (
                isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365
            ):
                reader.error(days_node, f"{key}.rotate_every_days", "expected 1 to 365 days")
                days = None
        services = _names(reader, found, "services", key)
        if name is not None:
            specs.append(
                SecretSpec(
                    name,
                    services,
                    bool(generate),
                    days,
                    _line(item),
                    schedules="rotate_every_days" in found,
                )
            )
    return specs


def _references(reader: _Reader, node: Node) -> list[ReferenceSpec]:
    specs = []
    for index, item in reader.items(node, "references"):
        key = f"references[{index}]"
        found = reader.mapping(item, key, _REFERENCE["properties"], required=("from", "to"))
        if found is None:
            continue
        source = reader.text(found, "from", key)
        consumer = reader.text(found, "to", key)
        variable = reader.text(found, "variable", key, pattern=VARIABLE)
        if source is not None and consumer is not None:
            specs.append(ReferenceSpec(source.strip(), consumer.strip(), variable, _line(item)))
    return specs


def _peerings(reader: _Reader, node: Node) -> list[PeeringSpec]:
    specs = []
    for index, item in reader.items(node, "peerings"):
        key = f"peerings[{index}]"
        found = reader.mapping(
            item, key, _PEERING["properties"], required=("project", "justification")
        )
        if found is None:
            continue
        project = reader.text(found, "project", key, pattern=PROJECT_ID)
        justification = reader.text(found, "justification", key, limit=2000)
        if project is not None and justification is not None:
            specs.append(PeeringSpec(project, justification.strip(), _line(item)))
    return specs


def _line(node: Node) -> int:
    return node.start_mark.line + 1


# -- What the project holds --------------------------------------------------------------------


@dataclass
class Current:
    """The project as the API shows it."""

    project: dict[str, Any]
    services: list[dict[str, Any]]
    secrets: list[dict[str, Any]]
    references: list[dict[str, Any]]
    peerings: list[dict[str, Any]]

    def service(self, label: str) -> dict[str, Any] | None:
        return next((s for s in self.services if s["dns_label"] == label), None)

    def renamed(self, moved: dict[str, str]) -> Current:
        """The secrets' receivers and the references as they will be once the services in
        ``moved`` (old label: new) are renamed."""
        if not moved:
            return self
        return replace(
            self,
            secrets=[
                {**s, "services": [moved.get(name, name) for name in s["services"]]}
                for s in self.secrets
            ],
            references=[
                {
                    **r,
                    "source": moved.get(r["source"], r["source"]),
                    "consumer": moved.get(r["consumer"], r["consumer"]),
                }
                for r in self.references
            ],
        )


def read_project(api: Api, project_id: str) -> Current:
    base = f"/projects/{project_id}"
    services: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = api.get(f"{base}/services", limit=200, offset=offset)
        services.extend(page["items"])
        offset = page["next_offset"]
    return Current(
        project=api.get(base),
        services=services,
        secrets=api.get(f"{base}/secrets"),
        references=api.get(f"{base}/references"),
        peerings=api.get(f"{base}/peerings"),
    )


def export(current: Current) -> str:
    """The project as a file: applied to an empty project, it makes the same project."""
    project = current.project
    lines = [
        f"# {project['name']}, as `stackblaze export` wrote it. `stackblaze plan -f` shows what",
        "# applying it would change. Editors check it with the schema `stackblaze schema`",
        "# prints (yaml-language-server reads the line below).",
        "# yaml-language-server: $schema=stackblaze.schema.json",
    ]
    document: dict[str, Any] = {"project": project["id"]}
    document["services"] = [
        {"name": s["name"], "kind": s["kind"], "ports": list(s["ports"])}
        for s in sorted(current.services, key=lambda s: s["dns_label"])
    ]
    document["secrets"] = [
        {
            "name": s["name"],
            "services": sorted(s["services"]),
            "generate": True,
            **({"rotate_every_days": s["rotate_every_days"]} if s["rotate_every_days"] else {}),
        }
        for s in sorted(current.secrets, key=lambda s: s["name"])
    ]
    document["references"] = [
        {"from": r["source"], "to": r["consumer"], "variable": r["variable"]}
        for r in sorted(current.references, key=lambda r: (r["source"], r["consumer"]))
    ]
    document["peerings"] = [
        {"project": other["id"], "justification": p["justification"]}
        for p, other in _live_peerings(current)
    ]
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(lines) + "\n" + body


# Requested, waiting for someone, or connected: a file naming that peering has it.
_LIVE_PEERING = ("pending_acceptance", "pending_support", "approved", "active")


def _live_peerings(current: Current) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    found = []
    for peering in current.peerings:
        if peering["status"] not in _LIVE_PEERING:
            continue
        mine = peering["requester"]["id"] == current.project["id"]
        found.append((peering, peering["target"] if mine else peering["requester"]))
    return found


# -- The plan ----------------------------------------------------------------------------------


@dataclass
class Change:
    """One change, in words, and the API calls that make it."""

    sign: str  # + add, ~ change, - delete, ! left alone (not applied)
    what: str
    detail: str
    calls: list[Callable[[Api], Any]] = field(default_factory=list)

    def describe(self) -> str:
        return f"  {self.sign} {self.what}" + (f": {self.detail}" if self.detail else "")


@dataclass
class Plan:
    project: dict[str, Any]
    changes: list[Change]

    @property
    def actions(self) -> list[Change]:
        return [change for change in self.changes if change.sign != "!"]

    @property
    def empty(self) -> bool:
        return not self.actions

    def summary(self) -> str:
        counts = {sign: sum(1 for c in self.actions if c.sign == sign) for sign in "+~-"}
        return f"Plan: {counts['+']} to add, {counts['~']} to change, {counts['-']} to delete."


def _ports_text(ports: list[int] | tuple[int, ...]) -> str:
    return ", ".join(map(str, ports)) if ports else "no ports"


class _Labels:
    """What the server derives from each name in the file: its DNS label, or why none."""

    def __init__(self, api: Api, project_id: str, names: set[str]) -> None:
        self.labels: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        ordered = sorted(names)
        for start in range(0, len(ordered), 100):
            batch = ordered[start : start + 100]
            for answer in api.get(f"/projects/{project_id}/service-names", name=batch):
                if answer["dns_label"]:
                    self.labels[answer["name"]] = answer["dns_label"]
                else:
                    self.errors[answer["name"]] = answer["error"]


def make_plan(api: Api, spec: ProjectFile, project_id: str, *, prune: bool) -> Plan:
    """What applying ``spec`` to the project would change. ``FileInvalid`` for what the file
    asks that cannot be (a name the naming rule refuses, a reference to no service…)."""
    current = read_project(api, project_id)
    base = f"/projects/{project_id}"
    names = {s.name for s in spec.services} | {s.was for s in spec.services if s.was}
    names |= {n for secret in spec.secrets for n in secret.services}
    names |= {n for r in spec.references for n in (r.source, r.consumer)}
    labels = _Labels(api, project_id, names)
    errors: list[str] = []

    # A renamed service's old name still names it (its old hostname still resolves).
    # (Unless the file also has a service of that name.)
    in_file = {labels.labels.get(service.name) for service in spec.services}
    renamed: dict[str, str] = {}
    for service in spec.services:
        old = labels.labels.get(service.was or "")
        if old is not None and old not in in_file and service.name in labels.labels:
            renamed[old] = labels.labels[service.name]

    def label(name: str, line: int, key: str) -> str | None:
        if name in labels.errors:
            errors.append(f"{spec.source}:{line}: {key}: “{name}”: {labels.errors[name]}")
            return None
        return labels.labels[name]

    def target(name: str, line: int, key: str) -> str | None:
        """A service the secrets and references name: by its name, or the one it had."""
        own = label(name, line, key)
        return renamed.get(own, own) if own is not None else None

    changes: list[Change] = []
    wanted: dict[str, ServiceSpec] = {}
    # The project's services the file keeps by name or takes by a rename (label: by whom).
    claimed: dict[str, str] = {
        kept: f"“{service.name}” (line {service.line})"
        for service in spec.services
        if (kept := labels.labels.get(service.name)) is not None
        and current.service(kept) is not None
    }
    kept_by_rename: set[str] = set()
    # The project's services the plan renames: what receives a secret or a reference now
    # goes on receiving it under the new name (the same service).
    moved: dict[str, str] = {}
    for service in spec.services:
        own = label(service.name, service.line, "name")
        if own is None:
            continue
        if own in wanted:
            errors.append(
                f"{spec.source}:{service.line}: name: “{service.name}” is {own}.internal, "
                f"as “{wanted[own].name}” (line {wanted[own].line}) is"
            )
            continue
        wanted[own] = service
        existing = current.service(own)
        old = label(service.was, service.line, "was") if service.was else None
        renamed_from = current.service(old) if old and existing is None else None
        if renamed_from is not None and old is not None and old in claimed:
            errors.append(
                f"{spec.source}:{service.line}: was: {old}.internal is already {claimed[old]}: "
                "one service can become only one"
            )
            continue
        if renamed_from is not None and old is not None:
            claimed[old] = f"“{service.name}” (line {service.line})"
            kept_by_rename.add(old)
            moved[old] = own
            changes.append(_rename(base, renamed_from, service, own))
            existing = {**renamed_from, "name": service.name, "dns_label": own}
        if existing is None:
            changes.append(_create(base, service, own))
            continue
        if existing["kind"] != service.kind:
            errors.append(
                f"{spec.source}:{service.line}: kind: {own}.internal is a {existing['kind']} "
                f"service; a kind can’t change (delete it and create another)"
            )
            continue
        update: dict[str, Any] = {}
        if renamed_from is None and existing["name"] != service.name:
            update["name"] = service.name
        if (
            service.ports is not None
            and service.kind not in DATABASE_PORTS
            and list(service.ports) != list(existing["ports"])
        ):
            update["ports"] = list(service.ports)
        if update:
            changes.append(_update(base, existing, update))
    for held in current.services:
        if held["dns_label"] in wanted or held["dns_label"] in kept_by_rename:
            continue
        changes.append(_delete_service(base, held, prune=prune))

    current = current.renamed(moved)
    changes += _plan_secrets(spec, current, base, wanted, target, errors, prune=prune)
    changes += _plan_references(spec, current, base, wanted, target, errors, prune=prune)
    changes += _plan_peerings(spec, current, base, project_id)
    if errors:
        raise FileInvalid(errors)
    order = {"rename": 0, "+service": 1, "~service": 2, "secret": 4, "reference": 5}
    changes.sort(key=lambda change: _stage(change, order))
    return Plan(project=current.project, changes=changes)


def _stage(change: Change, order: dict[str, int]) -> int:
    """Apply order: renames, new services, changed services, secrets, references, peerings;
    deletions last, references before what they refer to."""
    kind = change.what.split(" ", 1)[0]
    if change.sign == "-":
        # A reference goes before any is made: a replaced one frees its variable name.
        return {"reference": 3, "secret": 11, "service": 12}.get(kind, 13)
    if change.sign == "!":
        return 20
    if kind == "service":
        return order["rename"] if "→" in change.what else order[f"{change.sign}service"]
    return order.get(kind, 5)


def _send(method: str, path: str, body: dict[str, Any] | None = None) -> Callable[[Api], Any]:
    """One API call of a change, made when it is applied."""
    return lambda api: api.send(method, path, body)


def _create(base: str, service: ServiceSpec, label: str) -> Change:
    body: dict[str, Any] = {"name": service.name, "kind": service.kind}
    if service.ports is not None and service.kind not in DATABASE_PORTS:
        body["ports"] = list(service.ports)
    ports = service.ports if service.ports is not None else ()
    shown = (
        [DATABASE_PORTS[service.kind]]
        if service.kind in DATABASE_PORTS
        else list(ports)
        if service.ports is not None
        else [8080]
        if service.kind == "web"
        else []
    )
    return Change(
        "+",
        f"service “{service.name}”",
        f"{label}.internal, {service.kind}, {_ports_text(shown)}",
        [lambda api: api.send("POST", f"{base}/services", body)],
    )


def _rename(base: str, existing: dict[str, Any], service: ServiceSpec, label: str) -> Change:
    body: dict[str, Any] = {
        "name": service.name,
        "keep_old_name_for_seconds": KEEP_OLD_NAME_SECONDS,
    }
    return Change(
        "~",
        f"service “{existing['name']}” → “{service.name}”",
        f"renamed to {label}.internal; {existing['hostname']} keeps resolving to it for 24 h",
        [lambda api: api.send("PATCH", f"{base}/services/{existing['id']}", body)],
    )


def _update(base: str, existing: dict[str, Any], update: dict[str, Any]) -> Change:
    said = []
    if "name" in update:
        said.append(f"named “{existing['name']}” → “{update['name']}”")
    if "ports" in update:
        said.append(f"ports {_ports_text(existing['ports'])} → {_ports_text(update['ports'])}")
    return Change(
        "~",
        f"service “{existing['name']}”",
        f"{existing['hostname']}: {'; '.join(said)}",
        [lambda api: api.send("PATCH", f"{base}/services/{existing['id']}", update)],
    )


def _delete_service(base: str, service: dict[str, Any], *, prune: bool) -> Change:
    if not prune:
        return Change(
            "!",
            f"service “{service['name']}”",
            f"{service['hostname']} is not in the file: kept (--prune deletes it)",
        )
    return Change(
        "-",
        f"service “{service['name']}”",
        f"{service['hostname']} is deleted and its hostname released",
        [lambda api: api.send("DELETE", f"{base}/services/{service['id']}")],
    )


LabelOf = Callable[[str, int, str], "str | None"]


def _plan_secrets(
    spec: ProjectFile,
    current: Current,
    base: str,
    wanted: dict[str, ServiceSpec],
    label: LabelOf,
    errors: list[str],
    *,
    prune: bool,
) -> list[Change]:
    changes = []
    existing = {s["name"]: s for s in current.secrets}
    named = set()
    for secret in spec.secrets:
        if secret.name in named:
            errors.append(f"{spec.source}:{secret.line}: name: {secret.name} is named twice")
            continue
        named.add(secret.name)
        receivers = []
        for name in secret.services:
            own = label(name, secret.line, "services")
            if own is None:
                continue
            if own not in wanted:
                errors.append(
                    f"{spec.source}:{secret.line}: services: “{name}” is no service of the file"
                )
                continue
            receivers.append(own)
        found = existing.get(secret.name)
        if found is not None and not prune:
            # A service the file leaves alone keeps what it receives (--prune takes it).
            receivers += [name for name in found["services"] if name not in wanted]
        receivers = sorted(set(receivers))
        if found is None:
            if not secret.generate:
                errors.append(
                    f"{spec.source}:{secret.line}: generate: the project has no "
                    f"{secret.name} and values never go in the file: add `generate: true` to "
                    "create it with a generated value, or create it first with "
                    "`stackblaze secrets create … --value-from-stdin`"
                )
                continue
            body: dict[str, Any] = {"name": secret.name, "services": receivers}
            if secret.rotate_every_days:
                body["rotate_every_days"] = secret.rotate_every_days
            changes.append(
                Change(
                    "+",
                    f"secret {secret.name}",
                    f"a generated value, given to {', '.join(receivers) or 'no service yet'}",
                    [_send("POST", f"{base}/secrets", body)],
                )
            )
            continue
        days = secret.rotate_every_days if secret.schedules else found["rotate_every_days"]
        if sorted(found["services"]) != receivers or days != found["rotate_every_days"]:
            said = []
            if sorted(found["services"]) != receivers:
                said.append(
                    f"given to {', '.join(sorted(found['services'])) or 'no service'} → "
                    f"{', '.join(receivers) or 'no service'}"
                )
            if days != found["rotate_every_days"]:
                said.append(
                    f"rotated every {found['rotate_every_days'] or 'never'} → "
                    f"{days or 'never'} days"
                )
            body = {"services": receivers, "rotate_every_days": days}
            path = f"{base}/secrets/{found['id']}"
            changes.append(
                Change(
                    "~",
                    f"secret {secret.name}",
                    "; ".join(said),
                    [_send("PATCH", path, body)],
                )
            )
    for name, found in existing.items():
        if name in named:
            continue
        if prune:
            path = f"{base}/secrets/{found['id']}"
            changes.append(
                Change(
                    "-",
                    f"secret {name}",
                    "deleted; its receivers restart without it",
                    [_send("DELETE", path)],
                )
            )
        else:
            changes.append(
                Change("!", f"secret {name}", "not in the file: kept (--prune deletes it)")
            )
    return changes


def _plan_references(
    spec: ProjectFile,
    current: Current,
    base: str,
    wanted: dict[str, ServiceSpec],
    label: LabelOf,
    errors: list[str],
    *,
    prune: bool,
) -> list[Change]:
    changes: list[Change] = []
    existing = {(r["source"], r["consumer"]): r for r in current.references}
    named: set[tuple[str, str]] = set()
    for reference in spec.references:
        source = label(reference.source, reference.line, "from")
        consumer = label(reference.consumer, reference.line, "to")
        if source is None or consumer is None:
            continue
        unknown = [
            name
            for name, own in ((reference.source, source), (reference.consumer, consumer))
            if own not in wanted
        ]
        if unknown:
            errors.append(
                f"{spec.source}:{reference.line}: {'from' if source not in wanted else 'to'}: "
                f"“{unknown[0]}” is no service of the file"
            )
            continue
        if source == consumer:
            errors.append(
                f"{spec.source}:{reference.line}: to: a service can’t be given its own address"
            )
            continue
        if (source, consumer) in named:
            errors.append(
                f"{spec.source}:{reference.line}: {reference.consumer} gets "
                f"{reference.source}'s address twice"
            )
            continue
        named.add((source, consumer))
        found = existing.get((source, consumer))
        if found is not None and reference.variable in (None, found["variable"]):
            continue
        calls: list[Callable[[Api], Any]] = []
        detail = f"{source}'s address given to {consumer}"
        if found is not None:
            detail += f" as {reference.variable}, not {found['variable']}"
            calls.append(_unlink(base, found))
        body: dict[str, Any] = {"consumers": [consumer]}
        if reference.variable:
            body["variable"] = reference.variable
            if found is None:
                detail += f" as {reference.variable}"
        calls.append(_link(base, source, body))
        changes.append(
            Change(
                "~" if found else "+",
                f"reference {reference.variable or 'variable'} on {consumer}",
                detail,
                calls,
            )
        )
    for (source, consumer), found in existing.items():
        if (source, consumer) in named:
            continue
        what = f"reference {found['variable']} on {consumer}"
        if prune:
            changes.append(
                Change("-", what, f"{consumer} restarts without it", [_unlink(base, found)])
            )
        else:
            changes.append(Change("!", what, "not in the file: kept (--prune removes it)"))
    return changes


def _link(base: str, source: str, body: dict[str, Any]) -> Callable[[Api], Any]:
    def call(api: Api) -> Any:
        found = api.get(f"{base}/services", name=source)["items"]
        return api.send("POST", f"{base}/services/{found[0]['id']}/references", body)

    return call


def _unlink(base: str, reference: dict[str, Any]) -> Callable[[Api], Any]:
    def call(api: Api) -> Any:
        found = api.get(f"{base}/services", name=reference["consumer"])["items"]
        path = f"{base}/services/{found[0]['id']}/references/{reference['id']}"
        return api.send("DELETE", path)

    return call


def _plan_peerings(spec: ProjectFile, current: Current, base: str, project_id: str) -> list[Change]:
    live = {other["id"]: peering for peering, other in _live_peerings(current)}
    changes = []
    for peering in spec.peerings:
        if peering.project in live or peering.project == project_id:
            continue
        body = {"target": peering.project, "justification": peering.justification}
        changes.append(
            Change(
                "+",
                f"peering with {peering.project}",
                "requested: the other project's owners accept, then support approves",
                [_send("POST", f"{base}/peerings", body)],
            )
        )
    named = {peering.project for peering in spec.peerings}
    for other, held in live.items():
        if other not in named:
            changes.append(
                Change(
                    "!",
                    f"peering with {other}",
                    f"{held['status_label'].lower()}, not in the file: kept (peerings are "
                    "never pruned; `stackblaze peering revoke` disconnects)",
                )
            )
    return changes


def apply(api: Api, plan: Plan, on_done: Callable[[Change], None]) -> None:
    """Make the plan's changes, in its order; each one's calls in turn."""
    for change in plan.actions:
        for call in change.calls:
            call(api)
        on_done(change)
