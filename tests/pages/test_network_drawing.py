"""Where the Network page's map puts things (pure: built from rows in memory, no database)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from dashboard import network_drawing
from networking.cluster.desired import ISOLATION_POLICY, DesiredState, ServiceSpec
from networking.cluster.reachability import reachability
from networking.models import Organization, PeeringRequest, Project, Service
from networking.network_map import Peer, ProjectNetwork
from tests.reconcile.test_reachability import SETTINGS, replace_policy, state

ACME = Organization(name="Acme", slug="acme")
GLOBEX = Organization(name="Globex", slug="globex")


def project(name: str, uid: str, organization: Organization = ACME) -> Project:
    return Project(organization=organization, name=name, uid=uid)


def services(of: Project, *specs: ServiceSpec) -> list[Service]:
    return [
        Service(pk=index + 1, project=of, name=spec.name, kind=spec.kind, ports=list(spec.ports))
        for index, spec in enumerate(sorted(specs, key=lambda spec: spec.name))
    ]


API = ServiceSpec("api", "web", (8080,), public=True)
WORKER = ServiceSpec("worker", "private", (3000,))
DB = ServiceSpec("db", "postgresql", (5432,))
WAREHOUSE = ServiceSpec("warehouse", "mysql", (3306,))


def network(
    own: Project,
    own_state: DesiredState,
    rows: list[Service],
    peers: Sequence[tuple[Peer, DesiredState]] = (),
) -> ProjectNetwork:
    return ProjectNetwork(
        project=own,
        services=rows,
        peers=[peer for peer, _ in peers],
        reach=reachability(own_state, [desired for _, desired in peers], settings=SETTINGS),
    )


def boxes(drawing: network_drawing.Drawing, role: str) -> list[network_drawing.Box]:
    return [box for box in drawing.boxes if box.role == role]


def test_a_project_alone_is_one_box_under_the_ingress_controller() -> None:
    shop = project("Shop", "shop")
    drawing = network_drawing.draw(
        network(shop, state("prj-shop", API, DB), services(shop, API, DB))
    )
    [ingress] = boxes(drawing, "ingress")
    [box] = boxes(drawing, "project")
    assert ingress.subtitle == "namespace ingress-nginx"
    assert box.caption == "Each service here reaches every other · project-isolation"
    assert [(node.label, node.tags) for node in box.nodes] == [("api", ["public"]), ("db", [])]
    [arrow] = drawing.arrows
    assert (arrow.role, arrow.label) == ("ingress", "to api")
    assert arrow.y1 == ingress.y + ingress.height and arrow.y2 < box.y
    assert drawing.height > box.y + box.height


def test_without_isolation_anyone_is_drawn_and_every_service_is_marked_open() -> None:
    shop = project("Shop", "shop")
    desired = state("prj-shop", WORKER, DB)
    replace_policy(desired, ISOLATION_POLICY, None)
    drawing = network_drawing.draw(network(shop, desired, services(shop, WORKER, DB)))
    [anyone] = boxes(drawing, "anywhere")
    assert anyone.title == "Anyone"
    [arrow] = drawing.arrows
    assert arrow.role == "open"
    [box] = boxes(drawing, "project")
    assert box.caption == "No service here may reach another"
    assert all(node.open and node.tags == ["open to all"] for node in box.nodes)


def test_more_than_three_outside_sources_are_counted() -> None:
    shop = project("Shop", "shop")
    desired = state("prj-shop", API)
    replace_policy(
        desired,
        "from-many",
        {
            "podSelector": {},
            "ingress": [
                {"from": [{"ipBlock": {"cidr": f"10.{index}.0.0/16"}} for index in range(4)]}
            ],
        },
    )
    drawing = network_drawing.draw(network(shop, desired, services(shop, API)))
    outside = [box for box in drawing.boxes if box.role not in ("project", "peer")]
    assert [box.title for box in outside] == ["Ingress controller", "Addresses", "Addresses"]
    assert outside[-1].subtitle == "and 2 more, in the table"


def test_a_peer_is_drawn_below_with_an_arrow_each_way_that_holds() -> None:
    shop = project("Shop", "shop")
    data = project("Data", "data", GLOBEX)
    peering = PeeringRequest(
        requester_project=shop, target_project=data, status=PeeringRequest.Status.ACTIVE
    )
    peer = Peer(data, peering, services(data, WAREHOUSE))
    # Data admits Shop; Shop does not admit Data (yet).
    drawing = network_drawing.draw(
        network(
            shop,
            state("prj-shop", API, DB),
            services(shop, API, DB),
            [(peer, state("prj-data", WAREHOUSE, peers=("prj-shop",)))],
        )
    )
    [box] = boxes(drawing, "peer")
    assert box.title == "Data (Globex)"
    assert box.subtitle == "peered · prj-data · Active"
    [down] = [arrow for arrow in drawing.arrows if arrow.role == "peer"]
    assert down.y1 < down.y2 == box.y - 2
    assert down.label == "to warehouse"


def test_a_project_with_many_services_draws_thirty_places() -> None:
    shop = project("Shop", "shop")
    specs = [ServiceSpec(f"svc-{index:03}", "private", (3000,)) for index in range(200)]
    drawing = network_drawing.draw(network(shop, state("prj-shop", *specs), services(shop, *specs)))
    [box] = boxes(drawing, "project")
    assert len(box.nodes) == network_drawing.MAX_NODES
    assert box.nodes[-1].more and box.nodes[-1].label == "and 171 more"
    assert "more in the table" not in drawing.description  # one row: every service
    assert drawing.height < 1200


def test_the_description_points_at_the_table_past_a_dozen_rows() -> None:
    shop = project("Shop", "shop")
    desired = state("prj-shop", API)
    replace_policy(
        desired,
        "from-offices",
        {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": f"10.{i}.0.0/16"}} for i in range(15)]}],
        },
    )
    drawing = network_drawing.draw(network(shop, desired, services(shop, API)))
    assert drawing.description.endswith("5 more in the table.")
    assert drawing.description.startswith("Every service in Shop can reach api in Shop.")


def test_text_that_would_overflow_is_squeezed_to_its_box() -> None:
    shop = project("A project name long enough to run out of its box, surely", "shop")
    wide = ServiceSpec("m" * 40, "private", (3000,))
    drawing = network_drawing.draw(
        network(shop, state("prj-shop", wide, WORKER), services(shop, wide, WORKER))
    )
    [box] = boxes(drawing, "project")
    assert box.title_length == box.width - 2 * network_drawing.PADDING
    long, short = box.nodes
    assert long.label == f"{'m' * 21}…"
    assert long.label_length == long.width - 20
    assert short.label_length is None


def test_the_builders_objects_are_left_alone() -> None:
    desired = state("prj-shop", API)
    before = copy.deepcopy(desired.objects)
    shop = project("Shop", "shop")
    network_drawing.draw(network(shop, desired, services(shop, API)))
    assert desired.objects == before
