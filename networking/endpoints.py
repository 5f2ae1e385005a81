"""What a customer pastes into their code: internal URLs, connection strings, env lines.

Database passwords appear only when ``reveal=True``, which only the audited reveal view passes;
otherwise they are masked. User names and passwords are percent-encoded, so any character a
password may hold keeps the URL parseable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from networking.crypto import MASK
from networking.models import Service, SharedSecret
from networking.rotation import RESERVED_PREFIXES, environment_names

_SCHEMES = {
    Service.Kind.POSTGRESQL: "postgresql",
    Service.Kind.MYSQL: "mysql",
    Service.Kind.REDIS: "redis",
    Service.Kind.MONGODB: "mongodb",
}
_DATABASE_ENV_NAMES = {
    Service.Kind.POSTGRESQL: "DATABASE_URL",
    Service.Kind.MYSQL: "DATABASE_URL",
    Service.Kind.REDIS: "REDIS_URL",
    Service.Kind.MONGODB: "MONGODB_URL",
}


@dataclass(frozen=True)
class Endpoint:
    """One ready-to-paste value for a service."""

    label: str
    value: str
    env_name: str
    # True when ``value`` would contain a password; it is masked unless revealed.
    has_secret: bool = False

    @property
    def env_line(self) -> str:
        return f"{self.env_name}={self.value}"


def _userinfo(service: Service, *, reveal: bool) -> str:
    if service.database_password is None:
        password = ""
    elif reveal:
        password = quote(service.database_password.reveal(), safe="")
    else:
        password = MASK
    user = quote(service.database_user, safe="")
    return f"{user}:{password}"


def connection_string(service: Service, *, reveal: bool = False) -> str:
    """The spec's URL for a database, e.g. ``postgresql://user:pass@postgres.internal:5432/db``."""
    if not service.is_database:
        raise ValueError(f"{service.kind} services have no connection string")
    scheme = _SCHEMES[Service.Kind(service.kind)]
    address = f"{service.internal_hostname}:{service.primary_port}"
    userinfo = _userinfo(service, reveal=reveal)
    if service.kind == Service.Kind.REDIS:
        return f"{scheme}://{userinfo}@{address}"
    return f"{scheme}://{userinfo}@{address}/{quote(service.database_name, safe='')}"


def internal_url(service: Service, port: int) -> str:
    return f"http://{service.internal_hostname}:{port}"


def own_env_name(service: Service) -> str:
    """``BACKGROUND_WORKER_URL`` for a service named ``background-worker``.

    Always a name a container may be given: ``SVC_2FA_URL`` for ``2fa`` (not starting with a
    digit), ``SVC_KUBERNETES_PROXY_URL`` for ``kubernetes-proxy`` (Kubernetes sets every
    ``KUBERNETES_…`` variable itself).
    """
    name = re.sub(r"[^A-Z0-9]", "_", service.name.upper()) + "_URL"
    if name[:1].isdigit() or name.startswith(RESERVED_PREFIXES):
        name = "SVC_" + name
    return name


def suggested_env_names(services: Iterable[Service], taken: Iterable[str] = ()) -> dict[int, str]:
    """The variable name the dashboard suggests for each service, unique in its project.

    The first database of a kind (oldest first) gets the name libraries look for
    (``DATABASE_URL``, ``REDIS_URL``...); a second one gets its own, ``ORDERS_DB_URL`` for
    ``orders-db``, as does every web or private service. ``taken`` (a shared secret's
    variables) is never suggested.
    """
    used = set(taken)
    names = {}
    for service in sorted(services, key=lambda s: s.pk):
        own = own_env_name(service)
        candidates = [own]
        if service.is_database:
            candidates.insert(0, _DATABASE_ENV_NAMES[Service.Kind(service.kind)])
        chosen = next((name for name in candidates if name not in used), None)
        number = 2
        while chosen is None:
            numbered = f"{own.removesuffix('_URL')}_{number}_URL"
            chosen = numbered if numbered not in used else None
            number += 1
        used.add(chosen)
        names[service.pk] = chosen
    return names


def project_env_names(service: Service) -> dict[int, str]:
    """``suggested_env_names`` as the project's suggestions give it to ``service``."""
    return env_names_for(service.project_id, [service])


def _names_owning(env_name: str) -> set[str]:
    """The service names whose own variable (``own_env_name``) could be ``env_name``."""
    base = env_name.removesuffix("_URL").lower().replace("_", "-")
    names = {base}
    if base.startswith("svc-"):
        names.add(base.removeprefix("svc-"))  # a name given the SVC_ prefix
    return names


def env_names_for(project_id: int, wanted: Iterable[Service]) -> dict[int, str]:
    """The project's suggestions (``suggested_env_names``) for ``wanted``, reading only the
    services whose names could stand in their way, so the cost does not grow with the project.

    A service's suggestion can only be taken by: a shared secret's variable; the oldest
    database of the libraries' name (``DATABASE_URL``...); the service whose own name is that
    variable (a web service called ``database``); or, for a numbered name (``API_2_URL``), a
    service called ``api-2``. Those, and theirs in turn, are fetched by name (a few indexed
    queries), and the suggestions worked out among them as among every service.
    """
    taken = [
        variable
        for name in SharedSecret.objects.filter(project_id=project_id).values_list(
            "name", flat=True
        )
        for variable, _ in environment_names(name)
    ]
    fields = ("pk", "name", "kind", "project_id")
    known: dict[int, Service] = {service.pk: service for service in wanted}
    looked_up: set[str] = set()
    generics_done: set[str] = set()
    # Per service, the numbered names looked up so far (``stem-2`` to ``stem-<upper>``).
    upper: dict[int, int] = {}
    frontier = list(known.values())
    while frontier:
        names: set[str] = set()
        generics: set[str] = set()
        for service in frontier:
            own = own_env_name(service)
            names |= _names_owning(own)
            numbered = re.fullmatch(r"(.+)_[0-9]+_URL", own)
            if numbered:  # ``api-2``'s API_2_URL is ``api``'s second choice
                names |= _names_owning(numbered.group(1) + "_URL")
            # Its own numbered names (the own names of ``api-2``, ``api-3``... and, past the
            # SVC_ prefix, of ``svc-kubernetes-proxy-2``), a few at a time.
            start = upper.get(service.pk, 1) + 1
            upper[service.pk] = start + len(taken) + 2
            stem = own.removesuffix("_URL")
            for n in range(start, upper[service.pk] + 1):
                names |= _names_owning(f"{stem}_{n}_URL")
            if service.is_database:
                generics.add(_DATABASE_ENV_NAMES[Service.Kind(service.kind)])
            generics |= {generic for generic in _DATABASE_ENV_NAMES.values() if own == generic}
        generics -= generics_done
        generics_done |= generics
        for generic in generics:
            names |= _names_owning(generic)
        found = list(
            Service.objects.filter(project_id=project_id, name__in=sorted(names - looked_up)).only(
                *fields
            )
        )
        looked_up |= names
        for generic in sorted(generics):
            kinds = [kind for kind, name in _DATABASE_ENV_NAMES.items() if name == generic]
            oldest = (
                Service.objects.filter(project_id=project_id, kind__in=kinds)
                .order_by("pk")
                .only(*fields)
                .first()
            )
            if oldest is not None:
                found.append(oldest)
        frontier = [service for service in found if service.pk not in known]
        known.update((service.pk, service) for service in frontier)
        # A service each of whose numbered names so far is taken: look further.
        occupied = {own_env_name(service) for service in known.values()} | set(taken)
        frontier += [
            service
            for service in known.values()
            if service not in frontier
            and all(
                f"{own_env_name(service).removesuffix('_URL')}_{n}_URL" in occupied
                for n in range(2, upper[service.pk] + 1)
            )
        ]
    suggested = suggested_env_names(known.values(), taken)
    return {service.pk: suggested[service.pk] for service in wanted}


def service_suggested(project_id: int, variable: str) -> Service | None:
    """The service of the project whose suggested variable is ``variable``, if any (found among
    the few services that could have it, as ``env_names_for`` does)."""
    names = _names_owning(variable)
    numbered = re.fullmatch(r"(.+)_[0-9]+_URL", variable)
    if numbered:
        names |= _names_owning(numbered.group(1) + "_URL")
    candidates = list(Service.objects.filter(project_id=project_id, name__in=sorted(names)))
    kinds = [kind for kind, name in _DATABASE_ENV_NAMES.items() if name == variable]
    if kinds:
        oldest = Service.objects.filter(project_id=project_id, kind__in=kinds).order_by("pk")
        candidates += [service for service in oldest[:1] if service not in candidates]
    suggested = env_names_for(project_id, candidates)
    return next((s for s in candidates if suggested[s.pk] == variable), None)


def env_name_for(service: Service, names: dict[int, str] | None = None) -> str:
    """The variable the dashboard suggests for ``service`` (see ``suggested_env_names``)."""
    if names is not None and service.pk in names:
        return names[service.pk]
    if service.is_database:
        return _DATABASE_ENV_NAMES[Service.Kind(service.kind)]
    return own_env_name(service)


def endpoints(
    service: Service, *, reveal: bool = False, names: dict[int, str] | None = None
) -> list[Endpoint]:
    """``names``: the project's suggestions (``project_env_names``), unique across it."""
    if service.is_database:
        return [
            Endpoint(
                label="Connection string",
                value=connection_string(service, reveal=reveal),
                env_name=env_name_for(service, names),
                has_secret=service.database_password is not None,
            )
        ]
    base_env_name = env_name_for(service, names)
    result = []
    for index, port in enumerate(service.ports):
        suffix = "" if index == 0 else f"_{port}"
        result.append(
            Endpoint(
                label=f"Internal URL (port {port})",
                value=internal_url(service, port),
                env_name=base_env_name.removesuffix("_URL") + suffix + "_URL",
            )
        )
    return result


# The path the verifiers we hand out guard (``rotation.verifier_snippets``): a caller that sends
# a shared secret sends it there.
INTERNAL_PATH = "/internal/"


def code_snippets(service: Service, secret_name: str | None = None) -> dict[str, str]:
    """Code that calls a web or private service from another service, runnable as shown.

    With ``secret_name`` (a shared secret the called service receives), the call sends it in
    the header the verifiers check, to the path they guard; without, a plain call to ``/``.
    Node.js 18 or newer (built-in fetch) and Python's standard library: nothing to install.
    """
    if service.is_database or not service.ports:
        return {}
    base = internal_url(service, service.ports[0])
    if secret_name is None:
        url, node_headers, python_headers = f"{base}/", "", ""
    else:
        url = f"{base}{INTERNAL_PATH}"
        node_headers = f"  headers: {{ 'x-internal-secret': process.env.{secret_name} ?? '' }},\n"
        python_headers = (
            f'    headers={{"X-Internal-Secret": os.environ.get("{secret_name}", "")}},\n'
        )
    return {
        "Node.js": (
            f"// Call {service.name} over the private network (Node.js 18+: fetch is built in)\n"
            f"fetch('{url}', {{\n"
            f"{node_headers}"
            "  signal: AbortSignal.timeout(10000),\n"
            "})\n"
            "  .then(async (response) => console.log(response.status, await response.text()))\n"
            "  .catch((error) => {\n"
            "    console.error(error)\n"
            "    process.exitCode = 1\n"
            "  })\n"
        ),
        "Python": (
            ("import os\n" if secret_name is not None else "") + "import urllib.error\n"
            "import urllib.request\n\n"
            f"# Call {service.name} over the private network (standard library only)\n"
            "request = urllib.request.Request(\n"
            f'    "{url}",\n'
            f"{python_headers}"
            ")\n"
            "try:\n"
            "    with urllib.request.urlopen(request, timeout=10) as response:\n"
            "        print(response.status, response.read().decode())\n"
            "except urllib.error.HTTPError as error:\n"
            "    print(error.code, error.read().decode())\n"
        ),
    }


# -- What trips people up, next to the address --------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """Where a note's claim is documented: the server's or the driver's own pages."""

    title: str
    url: str


@dataclass(frozen=True)
class Gotcha:
    """Something true of connecting to a kind of service that people trip on.

    ``text`` marks code with backticks (the page renders it as code); ``example`` is code to
    paste, if any, where ``{hostname}`` and ``{port}`` stand for the service's. Each claim is
    the documentation's in ``references``.
    """

    key: str
    title: str
    text: str
    references: tuple[Reference, ...]
    example: str = ""


LISTEN_ON_EVERY_INTERFACE = Gotcha(
    key="bind",
    title="Listen on every interface",
    text=(
        "Other services reach this one at its ClusterIP, never over loopback: bind to "
        "`0.0.0.0`, or to `::` if the ClusterIP above is IPv6 (on most systems `::` takes IPv4 "
        "too), not to `127.0.0.1` or `localhost`. gunicorn binds `127.0.0.1:8000` unless `PORT` "
        "is set or you pass `--bind`, uvicorn `127.0.0.1` unless you pass `--host`; Node's "
        "`server.listen(port)` with no host already takes every interface."
    ),
    example=(
        "gunicorn --bind 0.0.0.0:{port} app:app\n"
        "uvicorn app:app --host 0.0.0.0 --port {port}\n"
        "server.listen({port})  // Node.js: every interface"
    ),
    references=(
        Reference(
            "Node.js: server.listen()",
            "https://nodejs.org/api/net.html#serverlistenport-host-backlog-callback",
        ),
        Reference("gunicorn: bind", "https://docs.gunicorn.org/en/stable/settings.html#bind"),
        Reference("uvicorn: socket binding", "https://www.uvicorn.org/settings/#socket-binding"),
    ),
)
NODE_EITHER_FAMILY = Gotcha(
    key="node-dns",
    title="Calling it from Node.js",
    text=(
        "Node's resolver (`dns.lookup()`, behind `fetch`, `http` and most clients) returns "
        "whichever address family the name has unless a client pins `family: 4`: don't, as the "
        "ClusterIP is IPv6 on an IPv6 cluster. `--dns-result-order=ipv4first` and "
        "`dns.setDefaultResultOrder()` only reorder the answers (since Node 17 the default is "
        "`verbatim`, the resolver's order); neither drops a family."
    ),
    references=(
        Reference(
            "Node.js: dns.lookup()",
            "https://nodejs.org/api/dns.html#dnslookuphostname-options-callback",
        ),
        Reference(
            "Node.js: dns.setDefaultResultOrder()",
            "https://nodejs.org/api/dns.html#dnssetdefaultresultorderorder",
        ),
        Reference(
            "Node.js: --dns-result-order", "https://nodejs.org/api/cli.html#--dns-result-orderorder"
        ),
    ),
)
POSTGRES_SSLMODE = Gotcha(
    key="sslmode",
    title="sslmode inside the private network",
    text=(
        "Traffic to this hostname never leaves the cluster, so TLS is optional here. libpq and "
        "the clients built on it (psql, psycopg, Ruby's pg) default to `sslmode=prefer`: TLS if "
        "the server offers it, plain otherwise. `sslmode=require`, which some frameworks and "
        "hosting templates add, refuses to connect when the server offers no TLS: inside the "
        "project, leave `sslmode` at its default."
    ),
    references=(
        Reference(
            "PostgreSQL: libpq sslmode",
            "https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNECT-SSLMODE",
        ),
        Reference(
            "PostgreSQL: what each sslmode protects against",
            "https://www.postgresql.org/docs/current/libpq-ssl.html#LIBPQ-SSL-SSLMODE-STATEMENTS",
        ),
    ),
)
IOREDIS_FAMILY = Gotcha(
    key="ioredis-family",
    title="ioredis and IPv6",
    text=(
        "ioredis before 5.8.2 looks hosts up as IPv4 only (its `family` option defaulted to "
        "`4`), so on an IPv6 cluster it cannot resolve this hostname. Pass `family: 0` to accept "
        "either address family (the default from 5.8.2 on), in the options object."
    ),
    example="const redis = new Redis(process.env.REDIS_URL, { family: 0 })",
    references=(
        Reference(
            "ioredis 5.8.2: the family defaults to 0",
            "https://github.com/redis/ioredis/releases/tag/v5.8.2",
        ),
        Reference(
            "Node.js: net.connect() family",
            "https://nodejs.org/api/net.html#socketconnectoptions-connectlistener",
        ),
    ),
)
MONGODB_DIRECT_CONNECTION = Gotcha(
    key="direct-connection",
    title="One node: directConnection",
    text=(
        "If this single node runs as a replica set, add `directConnection=true` to the "
        "connection string's options. Drivers otherwise (their default is `false`) read the "
        "set's configuration and connect to its members by the host names written there, which "
        "other pods may not resolve; with it they talk to this hostname alone. A standalone "
        "server accepts it too."
    ),
    example="mongodb://…@{hostname}:{port}/…?directConnection=true",
    references=(
        Reference(
            "MongoDB: connection string options, directConnection",
            "https://www.mongodb.com/docs/manual/reference/connection-string-options/"
            "#mongodb-urioption-urioption.directConnection",
        ),
    ),
)

_GOTCHAS: dict[str, tuple[Gotcha, ...]] = {
    Service.Kind.WEB: (LISTEN_ON_EVERY_INTERFACE, NODE_EITHER_FAMILY),
    Service.Kind.PRIVATE: (LISTEN_ON_EVERY_INTERFACE, NODE_EITHER_FAMILY),
    Service.Kind.POSTGRESQL: (POSTGRES_SSLMODE,),
    Service.Kind.MYSQL: (),
    Service.Kind.REDIS: (IOREDIS_FAMILY,),
    Service.Kind.MONGODB: (MONGODB_DIRECT_CONNECTION,),
}


def gotchas(kind: str) -> tuple[Gotcha, ...]:
    """The notes that are true, and matter, for connecting to a service of ``kind``.

    Web and private services run the customer's code: how it listens decides whether anyone
    reaches it, and how Node callers resolve its name. Databases run ours: only what their
    drivers get wrong. MySQL's drivers need nothing said.
    """
    return _GOTCHAS.get(kind, ())


@dataclass(frozen=True)
class Note:
    """A gotcha as shown on one service's page, its example filled in for that service."""

    gotcha: Gotcha
    example: str


def notes(service: Service) -> list[Note]:
    """``gotchas`` for ``service``, with its hostname and port in the examples."""
    port = str(service.primary_port or "")
    return [
        Note(
            gotcha,
            gotcha.example.replace("{hostname}", service.internal_hostname).replace("{port}", port),
        )
        for gotcha in gotchas(service.kind)
    ]
