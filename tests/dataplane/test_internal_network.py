"""The spec, shown with packets: ``<service>.internal`` resolves to the ClusterIP the dashboard
shows and answers on its port, inside the project only; other projects get nothing.

Every isolation assertion has its negative control beside it: with the mechanism removed (the
isolation NetworkPolicy, the CoreDNS snippet), the same assertion fails.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from networking.cluster.desired import ISOLATION_POLICY
from networking.models import Project, Service
from tests.conftest import World
from tests.dataplane.conftest import (
    Call,
    ControlProcesses,
    DataPlane,
    applied,
    create_service,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_api_internal_resolves_to_the_clusterip_the_dashboard_shows_and_answers(
    dataplane: DataPlane, storefront: dict[str, Any], world: World
) -> None:
    namespace, api = storefront["project"].namespace, storefront["api"]
    page = world.client_for("owner").get(
        reverse("service-detail", args=[world.project.uid, world.api.pk])
    )
    assert api["cluster_ip"] in page.content.decode()

    assert dataplane.resolve(namespace, "client", "api.internal") == [api["cluster_ip"]]
    answer = dataplane.until(namespace, "client", "get", "http://api.internal:8080/")
    assert answer.data["status"] == 200
    assert f'"namespace":"{namespace}"' in answer.data["body"]
    assert '"service":"api"' in answer.data["body"]


def assert_isolated(
    dataplane: DataPlane, storefront: dict[str, Any], caller: tuple[str, str]
) -> None:
    """From ``caller`` (namespace, pod) in another project, Storefront's api is unreachable:
    by its ClusterIP and by each of its pods' addresses."""
    namespace = storefront["project"].namespace
    targets = [storefront["api"]["cluster_ip"], *dataplane.pod_ips(namespace, "api")]
    for address in targets:
        answer = dataplane.ask(*caller, "connect", f"{address}:8080", "-timeout", "2s")
        assert not answer.ok, f"{caller[0]} reached {address}:8080: {answer.output}"
        assert answer.data["outcome"] in ("refused", "timeout"), answer.output


def test_another_project_neither_resolves_nor_reaches_it(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    world: World,
    api_client: Call,
    globex_token: str,
    namespaces: list[str],
) -> None:
    analytics = world.other_project
    namespaces.append(analytics.namespace)
    # Analytics has an api of its own: api.internal there is that one, never Storefront's.
    own = create_service(api_client, globex_token, analytics, "api", "web")
    own = applied(api_client, globex_token, analytics, own)
    dataplane.deploy(analytics.namespace, "api", ports=[8080])
    caller = (analytics.namespace, dataplane.client_pod(analytics.namespace))

    assert dataplane.resolve(*caller, "api.internal") == [own["cluster_ip"]]
    assert own["cluster_ip"] != storefront["api"]["cluster_ip"]
    # A name only Storefront has does not resolve at all.
    answer = dataplane.ask(*caller, "resolve", "postgres.internal")
    assert not answer.ok and answer.data["not_found"], answer.output
    assert_isolated(dataplane, storefront, caller)
    # Its own api answers it, so the refusals above are the policy's, not a broken network.
    dataplane.until(*caller, "get", "http://api.internal:8080/")


def test_without_the_isolation_policy_the_other_project_gets_through(
    dataplane: DataPlane,
    dataplane_worker: ControlProcesses,
    storefront: dict[str, Any],
    world: World,
    namespaces: list[str],
) -> None:
    """The negative control: the assertion above fails once the policies are gone (the
    ingress policy selects web services' pods too, so it alone would still isolate them)."""
    analytics = world.other_project
    namespaces.append(analytics.namespace)
    dataplane.core.create_namespace({"metadata": {"name": analytics.namespace}})
    caller = (analytics.namespace, dataplane.client_pod(analytics.namespace))
    assert_isolated(dataplane, storefront, caller)

    namespace = storefront["project"].namespace
    # The watcher would see the policies go and the worker would put them back at once.
    with dataplane_worker.paused():
        policies = dataplane.networking.list_namespaced_network_policy(namespace).items
        assert ISOLATION_POLICY in {policy.metadata.name for policy in policies}
        for policy in policies:
            dataplane.networking.delete_namespaced_network_policy(policy.metadata.name, namespace)
        dataplane.until(*caller, "connect", f"{storefront['api']['cluster_ip']}:8080")
        with pytest.raises(AssertionError, match="reached"):
            assert_isolated(dataplane, storefront, caller)

    # Running again, the watcher sees what is missing and the worker puts it back.
    dataplane.until(
        *caller, "connect", f"{storefront['api']['cluster_ip']}:8080", succeeds=False, timeout=60
    )


def test_without_the_coredns_snippet_the_internal_name_does_not_resolve(
    dataplane: DataPlane, storefront: dict[str, Any]
) -> None:
    """The negative control of the resolution: CoreDNS without our rule answers nothing."""
    namespace, cluster_ip = storefront["project"].namespace, storefront["api"]["cluster_ip"]
    assert dataplane.resolve(namespace, "client", "api.internal") == [cluster_ip]
    dataplane.node.restart_coredns(snippet="")
    try:
        answer = dataplane.ask(namespace, "client", "resolve", "api.internal")
        assert not answer.ok and answer.data["not_found"], answer.output
        # The project's Service itself is still there under its cluster name.
        assert dataplane.resolve(namespace, "client", "api") == [cluster_ip]
    finally:
        dataplane.node.restart_coredns()
    assert dataplane.resolve(namespace, "client", "api.internal") == [cluster_ip]


def test_the_ingress_controller_reaches_web_services_and_not_private_ones(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    world: World,
    api_client: Call,
    acme_token: str,
    namespaces: list[str],
    settings: Any,
) -> None:
    project = storefront["project"]
    private = create_service(
        api_client, acme_token, project, "Background Worker", "private", ports=[9000]
    )
    private = applied(api_client, acme_token, project, private)
    dataplane.deploy(project.namespace, "background-worker", ports=[9000])
    dataplane.until(project.namespace, "client", "connect", "background-worker.internal:9000")

    ingress = settings.INGRESS_NAMESPACE
    namespaces.append(ingress)
    dataplane.core.create_namespace({"metadata": {"name": ingress}})
    controller = (ingress, dataplane.client_pod(ingress))
    # (A new pod is admitted once the enforcer has learnt its address: a moment.)
    dataplane.until(*controller, "get", f"http://{storefront['api']['cluster_ip']}:8080/")
    refused = dataplane.ask(
        *controller, "connect", f"{private['cluster_ip']}:9000", "-timeout", "2s"
    )
    assert not refused.ok and refused.data["outcome"] in ("refused", "timeout"), refused.output


@pytest.fixture
def databases(
    storefront: dict[str, Any], api_client: Call, acme_token: str, dataplane: DataPlane
) -> dict[str, Service]:
    """Storefront's postgres (from the demo world) and a new Redis, each a real server run
    with the credentials the dashboard holds, as the deploy system would run it."""
    project = storefront["project"]
    cache = create_service(api_client, acme_token, project, "cache", "redis")
    applied(api_client, acme_token, project, cache)
    postgres = Service.objects.get(project=project, name="postgres")
    redis = Service.objects.get(pk=cache["id"])
    assert postgres.database_password is not None and redis.database_password is not None
    dataplane.deploy(
        project.namespace,
        "postgres",
        ports=[5432],
        image_name="postgres",
        run_as_user=999,
        env=[
            {"name": "POSTGRES_USER", "value": postgres.database_user},
            {"name": "POSTGRES_PASSWORD", "value": postgres.database_password.reveal()},
            {"name": "POSTGRES_DB", "value": postgres.database_name},
        ],
    )
    password = redis.database_password.reveal()
    dataplane.deploy(
        project.namespace,
        "cache",
        ports=[6379],
        image_name="redis",
        args=[
            "--port", "6379", "--save", "", "--appendonly", "no",
            "--user", "default", "off",
            "--user", redis.database_user, "on", f">{password}", "~*", "&*", "+@all",
        ],
    )  # fmt: skip
    return {"postgres": postgres, "cache": redis}


def revealed_connection_string(call: Call, token: str, project: Project, service: Service) -> str:
    """The connection string as the dashboard hands it out on the audited reveal."""
    response = call(token, "POST", f"/projects/{project.uid}/services/{service.pk}/reveal")
    assert response.status_code == 200, response.content
    (endpoint,) = [e for e in response.json()["endpoints"] if "://" in e["value"]]
    return str(endpoint["value"])


def test_databases_accept_connections_and_their_connection_strings_work_verbatim(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    databases: dict[str, Service],
    api_client: Call,
    acme_token: str,
) -> None:
    project = storefront["project"]
    namespace = project.namespace
    for address in ("postgres.internal:5432", "cache.internal:6379"):
        dataplane.until(namespace, "client", "connect", address)

    postgres_url = revealed_connection_string(
        api_client, acme_token, project, databases["postgres"]
    )
    assert postgres_url.startswith("postgresql://") and "@postgres.internal:5432/" in postgres_url
    # psql lives in the postgres image: it runs in the database's own pod and connects over
    # the network, through the hostname in the string, as any pod of the project would.
    (pod,) = dataplane.pods(namespace, "postgres")
    answer = dataplane.exec(
        namespace, pod.metadata.name, "psql", postgres_url, "-tAc", "select current_user"
    )
    assert answer.ok, answer.output
    assert answer.stdout.strip() == databases["postgres"].database_user

    redis_url = revealed_connection_string(api_client, acme_token, project, databases["cache"])
    assert redis_url.startswith("redis://") and redis_url.endswith("@cache.internal:6379")
    (pod,) = dataplane.pods(namespace, "cache")
    answer = dataplane.exec(namespace, pod.metadata.name, "redis-cli", "-u", redis_url, "PING")
    assert answer.ok and answer.stdout.strip() == "PONG", answer.output
    # A wrong password is refused: the server really checks what the string carries.
    wrong = redis_url.rsplit("@", 1)[0] + "x@cache.internal:6379"
    answer = dataplane.exec(namespace, pod.metadata.name, "redis-cli", "-u", wrong, "PING")
    assert "PONG" not in answer.stdout and "WRONGPASS" in answer.output, answer.output
