"""A project's network in words, from its rows through the desired policies (with the database)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from networking.models import Organization, PeeringRequest, Project, Service
from networking.network_map import ProjectNetwork
from tests.conftest import World, make_service


def connect(first: Project, second: Project, status: str = PeeringRequest.Status.ACTIVE) -> None:
    PeeringRequest.objects.create(
        requester_project=first,
        target_project=second,
        justification="Reads events.",
        status=status,
        expires_at=timezone.now(),
    )


@pytest.fixture
def peered(world: World) -> World:
    world.peering.status = PeeringRequest.Status.ACTIVE
    world.peering.save()
    return world


def table(network: ProjectNetwork) -> list[tuple[str, str, list[str], str, str]]:
    return [
        (row.source_text, row.project_name, row.services, row.reason.text, row.reason.policy)
        for row in network.rows()
    ]


def test_a_project_alone_reaches_itself_and_the_ingress_controller_its_web_service(
    world: World,
) -> None:
    network = ProjectNetwork.load(world.project)
    assert table(network) == [
        (
            "every service in Storefront",
            "Storefront",
            ["api", "postgres"],
            "same project",
            "project-isolation",
        ),
        (
            "the ingress controller",
            "Storefront",
            ["api"],
            "ingress controller (public web service)",
            "allow-ingress-controller",
        ),
    ]
    assert network.rows()[0].every
    assert not network.rows()[1].every


def test_a_pending_peering_connects_nothing(world: World) -> None:
    assert world.peering.status == PeeringRequest.Status.PENDING_ACCEPTANCE
    network = ProjectNetwork.load(world.project)
    assert network.peers == []
    assert {row.reason.text for row in network.rows()} == {
        "same project",
        "ingress controller (public web service)",
    }


def test_an_active_peering_is_drawn_both_ways_from_each_sides_policy(peered: World) -> None:
    network = ProjectNetwork.load(peered.project)
    assert [peer.project.name for peer in network.peers] == ["Analytics"]
    rows = table(network)
    assert (
        "every service in Analytics",
        "Storefront",
        ["api", "postgres"],
        "peering with Analytics",
        f"peer-{peered.other_project.namespace}",
    ) in rows
    assert (
        "every service in Storefront",
        "Analytics",
        ["warehouse"],
        "peering with Analytics",
        f"peer-{peered.project.namespace}",
    ) in rows
    # Analytics' own isolation is Analytics' business: not a row on Storefront's page.
    assert not [
        row for row in rows if row[0] == "every service in Analytics" and row[1] == "Analytics"
    ]


def test_a_peers_other_peerings_stay_out_of_sight(peered: World) -> None:
    third = Project.objects.create(organization=peered.globex, name="Billing 2")
    make_service(third, "ledger", Service.Kind.PRIVATE, [9000])
    connect(peered.other_project, third)
    network = ProjectNetwork.load(peered.project)
    text = str(table(network))
    assert third.namespace not in text
    assert "ledger" not in text
    assert "Billing 2" not in text


def test_the_same_project_from_a_service_page(peered: World) -> None:
    network = ProjectNetwork.load(peered.project)
    assert [(line.text, [r.text for r in line.reasons]) for line in network.who_reaches("api")] == [
        ("every service in Storefront", ["same project"]),
        ("every service in Analytics", ["peering with Analytics"]),
        ("the ingress controller", ["ingress controller (public web service)"]),
    ]
    assert [(line.text, line.services) for line in network.reaches("postgres")] == [
        ("every service in Storefront (2)", ["api", "postgres"]),
        ("warehouse in Analytics", ["warehouse"]),
    ]
    assert not network.egress_limited("postgres")


def test_a_database_is_not_reached_by_the_ingress_controller(world: World) -> None:
    network = ProjectNetwork.load(world.project)
    assert [line.text for line in network.who_reaches("postgres")] == [
        "every service in Storefront"
    ]


def test_without_an_ingress_namespace_no_web_service_is_reached_from_outside(
    world: World, settings: Any
) -> None:
    settings.INGRESS_NAMESPACE = ""
    network = ProjectNetwork.load(world.project)
    assert [line.text for line in network.who_reaches("api")] == ["every service in Storefront"]


def test_loading_costs_the_same_few_queries_at_any_size(peered: World) -> None:
    for index in range(30):
        make_service(peered.project, f"extra {index}", Service.Kind.PRIVATE, [3000])
        make_service(peered.other_project, f"theirs {index}", Service.Kind.PRIVATE, [3000])
    project = Project.objects.get(pk=peered.project.pk)
    with CaptureQueriesContext(connection) as queries:
        network = ProjectNetwork.load(project)
        network.rows()
        network.who_reaches("api")
    assert len(queries) == 4
    assert len(network.reach.services[peered.other_project.namespace]) == 31


def test_drift_marks_what_rests_on_the_object_that_differs(world: World) -> None:
    world.project.report_drift(
        [
            {
                "kind": "NetworkPolicy",
                "name": "allow-ingress-controller",
                "text": "NetworkPolicy allow-ingress-controller differs",
            }
        ]
    )
    network = ProjectNetwork.load(Project.objects.get(pk=world.project.pk))
    drifted = {row.reason.policy: row.drifted for row in network.rows()}
    assert drifted == {"project-isolation": False, "allow-ingress-controller": True}
    assert network.policy_drifted("allow-ingress-controller")
    assert network.drift_about("api") == ["NetworkPolicy allow-ingress-controller differs"]
    assert network.drift_about("postgres") == []
    assert [line.drifted for line in network.who_reaches("api")] == [False, True]


def test_a_missing_service_marks_that_service_and_a_missing_namespace_everything(
    world: World,
) -> None:
    world.project.report_drift(
        [{"kind": "Service", "name": "postgres", "text": "Service postgres is missing"}]
    )
    network = ProjectNetwork.load(Project.objects.get(pk=world.project.pk))
    assert network.service_drifted("postgres")
    assert not network.service_drifted("api")
    assert network.drift_about("postgres") == ["Service postgres is missing"]
    world.project.report_drift(
        [{"kind": "Namespace", "name": world.project.namespace, "text": "Namespace is missing"}]
    )
    network = ProjectNetwork.load(Project.objects.get(pk=world.project.pk))
    assert all(row.drifted for row in network.rows())
    assert network.drift_texts == ["Service postgres is missing", "Namespace is missing"]


def test_a_policy_in_the_cluster_that_is_not_desired_concerns_every_service(world: World) -> None:
    world.project.report_drift(
        [
            {
                "kind": "NetworkPolicy",
                "name": "allow-all",
                "text": "NetworkPolicy allow-all is not desired",
            }
        ]
    )
    network = ProjectNetwork.load(Project.objects.get(pk=world.project.pk))
    assert network.drift_about("postgres") == ["NetworkPolicy allow-all is not desired"]


def test_a_peering_with_another_organization_names_the_peer(world: World) -> None:
    other = Organization.objects.create(name="Initrode", slug="initrode", plan="enterprise")
    theirs = Project.objects.create(organization=other, name="Reports")
    connect(theirs, world.project, PeeringRequest.Status.APPROVED)
    network = ProjectNetwork.load(world.project)
    assert [(peer.project.name, peer.project.organization.name) for peer in network.peers] == [
        ("Reports", "Initrode")
    ]
    # No services there yet: nothing to reach, but Reports reaches Storefront.
    assert [line.text for line in network.reaches("api")] == ["every service in Storefront (2)"]
    assert "every service in Reports" in [line.text for line in network.who_reaches("api")]


def service_view(network: ProjectNetwork, name: str) -> Any:
    def lines(found: Any) -> list[tuple[str, list[Any], bool]]:
        return [(line.text, line.reasons, line.drifted) for line in found]

    return (
        lines(network.who_reaches(name)),
        lines(network.reaches(name)),
        network.egress_limited(name),
        network.drift_about(name),
    )


@pytest.mark.parametrize(
    "shape",
    [
        "alone",
        "one service",
        "peered",
        "peered both ways",
        "a peer of one sort",
        "many of each sort",
        "drift on one of many",
    ],
)
def test_a_service_page_reads_the_same_reach_as_the_whole_projects(
    world: World, shape: str
) -> None:
    """``for_service`` (a service and one service of each sort per project, plus counts) says
    exactly what the whole project's network says about that service."""
    project = world.project
    if shape == "one service":
        project = Project.objects.create(organization=world.acme, name="Solo")
        make_service(project, "only", Service.Kind.WEB)
    if shape.startswith("peered"):
        world.peering.status = PeeringRequest.Status.ACTIVE
        world.peering.save()
        make_service(world.other_project, "events", Service.Kind.WEB)
    if shape == "peered both ways":
        connect(project, Project.objects.get(organization=world.globex, name="Billing"))
        make_service(Project.objects.get(name="Billing"), "invoices", Service.Kind.PRIVATE, [80])
    if shape == "a peer of one sort":  # two web services, nothing else
        world.peering.status = PeeringRequest.Status.ACTIVE
        world.peering.save()
        world.other_service.delete()
        make_service(world.other_project, "events", Service.Kind.WEB)
        make_service(world.other_project, "hooks", Service.Kind.WEB)
    drifting = "api"
    if shape == "drift on one of many":
        for n in range(4):
            make_service(project, f"web {n}", Service.Kind.WEB)
        drifting = "web-3"  # not one a service page would pick to stand for the web services
    if shape == "many of each sort":
        for n in range(6):
            make_service(project, f"web {n}", Service.Kind.WEB)
            make_service(project, f"worker {n}", Service.Kind.PRIVATE, [3000 + n])
        make_service(project, "cache", Service.Kind.REDIS)
    Project.objects.filter(pk=project.pk).update(
        drift=[{"kind": "Service", "name": drifting, "text": f"Service {drifting} differs"}]
    )
    project = Project.objects.get(pk=project.pk)
    whole = ProjectNetwork.load(project)
    for service in project.services.all():
        one = ProjectNetwork.for_service(project, service)
        assert service_view(one, service.name) == service_view(whole, service.name), service.name


def test_a_service_pages_reach_costs_the_same_queries_at_any_size(world: World) -> None:
    def queries() -> int:
        project = Project.objects.get(pk=world.project.pk)
        with CaptureQueriesContext(connection) as captured:
            ProjectNetwork.for_service(project, world.api).who_reaches("api")
        return len(captured)

    small = queries()
    for n in range(200):
        make_service(
            world.project,
            f"filler {n}",
            Service.Kind.WEB if n % 2 else Service.Kind.PRIVATE,
            [3000],
        )
    assert queries() == small
