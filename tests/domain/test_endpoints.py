from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from networking import endpoints
from networking.crypto import MASK, SecretText
from networking.models import Project, Service, SharedSecret
from networking.rotation import environment_names
from tests.conftest import World, make_service


def service(kind: str, name: str, ports: list[int] | None = None, **credentials: str) -> Service:
    result = Service(
        display_name=name,
        name=name,
        kind=kind,
        ports=ports if ports is not None else Service.default_ports(kind),
        database_user=credentials.get("user", ""),
        database_name=credentials.get("database", ""),
    )
    if "password" in credentials:
        result.database_password = SecretText.seal(credentials["password"])
    return result


@pytest.mark.parametrize(
    ("svc", "expected"),
    [
        (
            service("postgresql", "postgres", user="user", password="pass", database="dbname"),
            "postgresql://user:pass@postgres.internal:5432/dbname",
        ),
        (
            service("mysql", "name", user="user", password="pass", database="db"),
            "mysql://user:pass@name.internal:3306/db",
        ),
        (service("redis", "cache", password="password"), "redis://:password@cache.internal:6379"),
        (
            service("mongodb", "name", user="user", password="pass", database="db"),
            "mongodb://user:pass@name.internal:27017/db",
        ),
    ],
)
def test_connection_strings_match_the_spec(svc: Service, expected: str) -> None:
    assert endpoints.connection_string(svc, reveal=True) == expected


def test_password_is_masked_unless_revealed() -> None:
    svc = service("postgresql", "postgres", user="user", password="hunter2", database="db")
    masked = endpoints.connection_string(svc)
    assert "hunter2" not in masked
    assert masked == f"postgresql://user:{MASK}@postgres.internal:5432/db"
    assert all("hunter2" not in e.value for e in endpoints.endpoints(svc))


def test_reserved_characters_are_percent_encoded() -> None:
    password = "p@ss:w/rd?#[]%! &="
    svc = service("postgresql", "postgres", user="us:er@x", password=password, database="d b")
    url = endpoints.connection_string(svc, reveal=True)
    parts = urlsplit(url)
    assert parts.hostname == "postgres.internal"
    assert parts.port == 5432
    assert unquote(parts.username or "") == "us:er@x"
    assert unquote(parts.password or "") == password
    assert unquote(parts.path) == "/d b"


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_any_credentials_survive_a_round_trip(user: str, password: str) -> None:
    svc = service("mysql", "db", user=user, password=password, database="app")
    parts = urlsplit(endpoints.connection_string(svc, reveal=True))
    assert parts.hostname == "db.internal"
    assert parts.port == 3306
    assert unquote(parts.username or "") == user
    assert unquote(parts.password or "") == password


def test_web_and_private_services_get_http_urls_and_env_lines() -> None:
    worker = service("private", "background-worker", [3000])
    [endpoint] = endpoints.endpoints(worker)
    assert endpoint.value == "http://background-worker.internal:3000"
    assert endpoint.env_line == "BACKGROUND_WORKER_URL=http://background-worker.internal:3000"
    api = service("web", "api")
    assert endpoints.endpoints(api)[0].value == "http://api.internal:8080"


def test_every_port_gets_its_own_url() -> None:
    svc = service("private", "grpc", [3000, 9090])
    assert [e.env_line for e in endpoints.endpoints(svc)] == [
        "GRPC_URL=http://grpc.internal:3000",
        "GRPC_9090_URL=http://grpc.internal:9090",
    ]


@pytest.mark.parametrize(
    ("kind", "env_name"),
    [
        ("postgresql", "DATABASE_URL"),
        ("mysql", "DATABASE_URL"),
        ("redis", "REDIS_URL"),
        ("mongodb", "MONGODB_URL"),
    ],
)
def test_database_env_names(kind: str, env_name: str) -> None:
    svc = service(kind, "db", user="u", password="p", database="d")
    assert endpoints.endpoints(svc)[0].env_line.startswith(f"{env_name}={kind}://")


def test_code_snippet_calls_the_internal_url() -> None:
    snippets = endpoints.code_snippets(service("private", "worker", [3000]))
    assert "fetch('http://worker.internal:3000/'" in snippets["Node.js"]
    assert '"http://worker.internal:3000/"' in snippets["Python"]
    assert endpoints.code_snippets(service("redis", "cache", password="x")) == {}


def numbered(*services: Service) -> list[Service]:
    for pk, svc in enumerate(services, start=1):
        svc.pk = pk
    return list(services)


def test_suggested_variable_names_are_unique_in_a_project() -> None:
    found = endpoints.suggested_env_names(
        numbered(
            service("postgresql", "postgres"),
            service("postgresql", "orders-db"),
            service("mysql", "legacy"),
            service("web", "database"),
            service("redis", "cache"),
        )
    )
    assert found == {
        1: "DATABASE_URL",  # the first database libraries look for
        2: "ORDERS_DB_URL",
        3: "LEGACY_URL",
        4: "DATABASE_2_URL",  # its own name was the first database's
        5: "REDIS_URL",
    }
    assert len(set(found.values())) == len(found)


def test_a_shared_secrets_variables_are_never_suggested() -> None:
    found = endpoints.suggested_env_names(
        numbered(service("postgresql", "postgres"), service("web", "api")),
        taken=["DATABASE_URL", "API_URL"],
    )
    assert found == {1: "POSTGRES_URL", 2: "API_2_URL"}


# -- The notes next to each address -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "keys"),
    [
        ("web", ["bind", "node-dns"]),
        ("private", ["bind", "node-dns"]),
        ("postgresql", ["sslmode"]),
        ("mysql", []),
        ("redis", ["ioredis-family"]),
        ("mongodb", ["direct-connection"]),
    ],
)
def test_each_kind_gets_exactly_its_notes(kind: str, keys: list[str]) -> None:
    assert [gotcha.key for gotcha in endpoints.gotchas(kind)] == keys


def test_every_kind_is_decided() -> None:
    assert {kind for kind, _ in Service.Kind.choices} == set(endpoints._GOTCHAS)


def test_an_unknown_kind_gets_no_note() -> None:
    assert endpoints.gotchas("carrier-pigeon") == ()


@pytest.mark.parametrize("kind", [kind for kind, _ in Service.Kind.choices])
def test_every_note_cites_the_documentation_over_https(kind: str) -> None:
    for gotcha in endpoints.gotchas(kind):
        assert gotcha.references, gotcha.key
        for reference in gotcha.references:
            assert urlsplit(reference.url).scheme == "https", reference.url
            assert reference.title


def test_each_note_says_what_to_do() -> None:
    texts = {gotcha.key: gotcha.text for kind, _ in Service.Kind.choices
             for gotcha in endpoints.gotchas(kind)}  # fmt: skip
    assert "`0.0.0.0`" in texts["bind"] and "`::`" in texts["bind"]
    assert "`127.0.0.1`" in texts["bind"]
    assert "`sslmode=prefer`" in texts["sslmode"] and "`sslmode=require`" in texts["sslmode"]
    assert "`family: 0`" in texts["ioredis-family"] and "5.8.2" in texts["ioredis-family"]
    assert "`directConnection=true`" in texts["direct-connection"]
    assert "`--dns-result-order=ipv4first`" in texts["node-dns"]
    assert "`dns.setDefaultResultOrder()`" in texts["node-dns"]


def test_the_examples_use_the_services_own_port_and_hostname() -> None:
    web = service("web", "api", [3000])
    [bind, node] = endpoints.notes(web)
    assert "0.0.0.0:3000" in bind.example and "--port 3000" in bind.example
    assert node.example == ""
    [direct] = endpoints.notes(service("mongodb", "events"))
    assert direct.example == "mongodb://…@events.internal:27017/…?directConnection=true"
    [family] = endpoints.notes(service("redis", "cache"))
    assert family.example == "const redis = new Redis(process.env.REDIS_URL, { family: 0 })"
    assert endpoints.notes(service("mysql", "orders")) == []


NAMES = [
    "api",
    "api-2",
    "api-3",
    "database",
    "redis",
    "cache",
    "kubernetes-proxy",
    "kubernetes-proxy-2",
    "svc-kubernetes-proxy",
    "svc-kubernetes-proxy-2",
    "orders-db",
]
KINDS = ["web", "private", "postgresql", "mysql", "redis", "mongodb"]


@pytest.mark.django_db
@examples(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(NAMES), st.sampled_from(KINDS)), unique_by=lambda r: r[0]
    ),
    secrets=st.lists(
        st.sampled_from(
            ["API_URL", "DATABASE_URL", "API_2_URL", "REDIS_URL", "SVC_KUBERNETES_PROXY_URL"]
        )
    ),
)
def test_a_services_suggestion_read_from_its_neighbours_is_the_projects(
    world: World, rows: list[tuple[str, str]], secrets: list[str]
) -> None:
    """What a page or the API works out for one service, from the few services that could take
    its name, is what the whole project's suggestions give it."""
    project = Project.objects.create(organization=world.acme, name=f"P{Project.objects.count()}")
    for name in sorted(set(secrets)):
        SharedSecret.objects.create(project=project, name=name, value=SecretText.seal("x"))
    services = [
        make_service(project, name, kind, [3000] if kind == "private" else None)
        for name, kind in rows
    ]
    everyone = endpoints.suggested_env_names(
        Service.objects.filter(project=project),
        [variable for name in set(secrets) for variable, _ in environment_names(name)],
    )
    for service in services:
        assert endpoints.env_names_for(project.pk, [service]) == {service.pk: everyone[service.pk]}
    assert endpoints.env_names_for(project.pk, services) == everyone
    # The secret form's check: which service a variable is suggested for, if any.
    for service in services:
        found = endpoints.service_suggested(project.pk, everyone[service.pk])
        assert found is not None and found.pk == service.pk
    for variable in ("API_3_URL", "SVC_KUBERNETES_PROXY_3_URL", "MONGODB_URL"):
        owner = next((pk for pk, name in everyone.items() if name == variable), None)
        found = endpoints.service_suggested(project.pk, variable)
        assert (found.pk if found else None) == owner
