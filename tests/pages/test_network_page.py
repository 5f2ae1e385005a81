"""The Network page (map and table) and what a service's page says about who reaches it."""

from __future__ import annotations

import re
from xml.etree import ElementTree

import pytest
from django.test import Client
from django.urls import reverse

from networking.models import PeeringRequest, Project, Service
from tests.conftest import World, make_service

SVG = "{http://www.w3.org/2000/svg}"


def network_page(client: Client, project: Project, **headers: str) -> str:
    response = client.get(reverse("project-network", args=[project.uid]), **headers)  # type: ignore[arg-type]
    assert response.status_code == 200
    return response.content.decode()


def the_map(html: str) -> ElementTree.Element:
    match = re.search(r"<svg .*?</svg>", html, re.S)
    assert match is not None
    return ElementTree.fromstring(match.group(0).replace("<svg ", f'<svg xmlns="{SVG[1:-1]}" ', 1))


def texts(svg: ElementTree.Element) -> list[str]:
    return ["".join(element.itertext()).strip() for element in svg.iter(f"{SVG}text")]


def table_rows(html: str) -> list[str]:
    body = re.search(r'<table class="stack reach">.*?</table>', html, re.S)
    assert body is not None
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(0), re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in rows[1:]]


@pytest.fixture
def peered(world: World) -> World:
    world.peering.status = PeeringRequest.Status.ACTIVE
    world.peering.save()
    return world


class TestTheNetworkPage:
    def test_it_is_a_tab_of_every_project_page(self, owner_client: Client, world: World) -> None:
        overview = owner_client.get(reverse("project-overview", args=[world.project.uid]))
        url = reverse("project-network", args=[world.project.uid])
        assert f'<a href="{url}" >Network</a>' in overview.content.decode()
        assert f'<a href="{url}" aria-current="page">Network</a>' in network_page(
            owner_client, world.project
        )

    def test_the_map_is_an_image_with_a_title_and_a_description(
        self, viewer_client: Client, world: World
    ) -> None:
        html = network_page(viewer_client, world.project)
        svg = the_map(html)
        assert svg.get("role") == "img"
        assert svg.get("aria-labelledby") == "network-map-title network-map-desc"
        assert svg.get("viewBox", "").startswith("0 0 400 ")
        assert svg.findtext(f"{SVG}title") == "Who can reach whom in Storefront"
        description = svg.findtext(f"{SVG}desc") or ""
        assert "Every service in Storefront can reach every service in Storefront." in description
        assert "The ingress controller can reach api in Storefront." in description
        labels = texts(svg)
        assert {"Storefront", "Ingress controller", "api", "postgres"} <= set(labels)
        assert {"Web service · public", "PostgreSQL"} <= set(labels)

    def test_the_table_beside_it_says_who_reaches_what_and_why(
        self, owner_client: Client, peered: World
    ) -> None:
        rows = table_rows(network_page(owner_client, peered.project))
        analytics = peered.other_project.namespace
        storefront = peered.project.namespace
        assert rows == [
            "Every service in Storefront Every service in Storefront: api , postgres "
            "Same project · project-isolation",
            "Every service in Analytics Every service in Storefront: api , postgres "
            f"Peering with Analytics · peer-{analytics}",
            "The ingress controller Storefront: api "
            "Ingress controller (public web service) · allow-ingress-controller",
            f"Every service in Storefront Analytics: warehouse Peering with Analytics · "
            f"peer-{storefront}",
        ]

    def test_an_active_peering_is_drawn_with_the_peers_services(
        self, owner_client: Client, peered: World
    ) -> None:
        labels = texts(the_map(network_page(owner_client, peered.project)))
        assert "Analytics (Globex)" in labels
        assert "warehouse" in labels
        assert "to warehouse" in labels and "to every service" in labels

    def test_a_pending_peering_is_not_drawn(self, owner_client: Client, world: World) -> None:
        labels = texts(the_map(network_page(owner_client, world.project)))
        assert "warehouse" not in labels
        assert "Analytics (Globex)" not in labels

    def test_many_services_are_counted_on_the_map_and_all_listed_in_the_table(
        self, owner_client: Client, world: World
    ) -> None:
        for index in range(40):
            make_service(world.project, f"worker {index:02}", Service.Kind.PRIVATE, [3000])
        html = network_page(owner_client, world.project)
        labels = texts(the_map(html))
        drawn = [label for label in labels if label.startswith("worker-")]
        assert len(drawn) == 27  # 30 places: api, postgres, 27 workers, and the count
        assert "and 13 more" in labels
        same_project = table_rows(html)[0]
        assert all(f"worker-{index:02}" in same_project for index in range(40))

    def test_a_long_name_is_cut_on_the_map_and_whole_in_its_tooltip(
        self, owner_client: Client, world: World
    ) -> None:
        name = "a" * 63
        make_service(world.project, name, Service.Kind.PRIVATE, [3000])
        svg = the_map(network_page(owner_client, world.project))
        assert f"{'a' * 21}…" in texts(svg)
        assert f"{name} (Private service / worker)" in [
            (title.text or "") for title in svg.iter(f"{SVG}title")
        ]

    def test_drift_is_marked_on_the_map_and_in_the_table(
        self, owner_client: Client, world: World
    ) -> None:
        world.project.report_drift(
            [
                {
                    "kind": "NetworkPolicy",
                    "name": "project-isolation",
                    "text": "NetworkPolicy project-isolation differs",
                }
            ]
        )
        html = network_page(owner_client, world.project)
        assert "The cluster differs from this map right now;" in html
        assert "<li>NetworkPolicy project-isolation differs</li>" in html
        labels = texts(the_map(html))
        assert "⚠ Each service here reaches every other · project-isolation" in labels
        rows = table_rows(html)
        assert "differs in the cluster; being repaired" in rows[0]
        assert "differs in the cluster" not in rows[1]

    def test_a_missing_namespace_marks_the_whole_project(
        self, owner_client: Client, world: World
    ) -> None:
        namespace = world.project.namespace
        world.project.report_drift(
            [{"kind": "Namespace", "name": namespace, "text": f"Namespace {namespace} is missing"}]
        )
        svg = the_map(network_page(owner_client, world.project))
        project = next(g for g in svg.iter(f"{SVG}g") if "box-project" in (g.get("class") or ""))
        assert "is-drifted" in (project.get("class") or "")
        nodes = [g for g in project.iter(f"{SVG}g") if "node" in (g.get("class") or "")]
        assert nodes and all("is-drifted" in (node.get("class") or "") for node in nodes)

    def test_htmx_gets_the_map_and_table_alone(self, owner_client: Client, world: World) -> None:
        part = network_page(owner_client, world.project, HTTP_HX_REQUEST="true")
        assert part.lstrip().startswith('<div id="network"')
        assert "<svg" in part and "<table" in part
        assert "<html" not in part and 'id="live"' not in part

    def test_an_empty_project_says_so(self, owner_client: Client, world: World) -> None:
        project = Project.objects.create(organization=world.acme, name="Empty")
        html = network_page(owner_client, project)
        assert "No services yet: nothing to reach." in html
        assert "No services yet" in texts(the_map(html))

    def test_another_tenants_project_is_a_404(self, owner_client: Client, world: World) -> None:
        url = reverse("project-network", args=[world.other_project.uid])
        assert owner_client.get(url).status_code == 404

    def test_a_peers_other_peerings_are_not_shown(
        self, owner_client: Client, peered: World
    ) -> None:
        third = Project.objects.create(organization=peered.globex, name="Secret Lab")
        make_service(third, "vault", Service.Kind.PRIVATE, [8200])
        PeeringRequest.objects.create(
            requester_project=peered.other_project,
            target_project=third,
            justification="x",
            status=PeeringRequest.Status.ACTIVE,
            expires_at=peered.peering.expires_at,
        )
        html = network_page(owner_client, peered.project)
        assert "Secret Lab" not in html and "vault" not in html and third.namespace not in html


class TestAServicePage:
    def detail(self, client: Client, service: Service, **headers: str) -> str:
        url = reverse("service-detail", args=[service.project.uid, service.pk])
        response = client.get(url, **headers)  # type: ignore[arg-type]
        assert response.status_code == 200
        return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())

    def test_it_says_who_can_reach_it_and_what_it_can_reach(
        self, viewer_client: Client, peered: World
    ) -> None:
        text = self.detail(viewer_client, peered.api)
        assert "Who can reach api" in text
        assert "Every service in Storefront (same project, project-isolation )" in text
        assert (
            "Every service in Analytics (peering with Analytics, "
            f"peer-{peered.other_project.namespace} )"
        ) in text
        assert (
            "The ingress controller (ingress controller (public web service), "
            "allow-ingress-controller )"
        ) in text
        assert "What api can reach" in text
        assert "Every service in Storefront (2)" in text
        assert "Warehouse in Analytics (peering with Analytics" in text
        assert "No policy limits the connections it opens" in text

    def test_a_database_is_not_reached_from_outside(
        self, viewer_client: Client, world: World
    ) -> None:
        text = self.detail(viewer_client, world.postgres)
        who = text[text.index("Who can reach postgres") : text.index("What postgres can reach")]
        assert "ingress controller" not in who
        assert "Every service in Storefront" in who

    def test_drift_that_concerns_the_service_is_said(
        self, viewer_client: Client, world: World
    ) -> None:
        world.project.report_drift(
            [
                {
                    "kind": "NetworkPolicy",
                    "name": "allow-ingress-controller",
                    "text": "NetworkPolicy allow-ingress-controller differs",
                }
            ]
        )
        assert (
            "The cluster differs from this right now: NetworkPolicy allow-ingress-controller "
            "differs. The worker is repairing it."
        ) in self.detail(viewer_client, world.api)
        assert "The cluster differs" not in self.detail(viewer_client, world.postgres)

    def test_htmx_refreshes_the_reach_card_on_its_own(
        self, viewer_client: Client, world: World
    ) -> None:
        url = reverse("service-detail", args=[world.project.uid, world.api.pk])
        html = viewer_client.get(url).content.decode()
        listener = re.search(r'<section class="card" id="reach"[^>]*>', html, re.S)
        assert listener is not None
        assert 'hx-trigger="project-changed from:body"' in listener.group(0)
        assert f'hx-get="{url}?part=reach"' in listener.group(0)
        part = viewer_client.get(url, {"part": "reach"}, HTTP_HX_REQUEST="true").content.decode()
        assert part.lstrip().startswith('<section class="card" id="reach"')
        assert "Private networking" not in part
        endpoints = viewer_client.get(url, HTTP_HX_REQUEST="true").content.decode()
        assert 'id="endpoints"' in endpoints and 'id="reach"' not in endpoints

    @pytest.mark.parametrize(
        ("kind", "present", "absent"),
        [
            (Service.Kind.WEB, ["note-bind", "note-node-dns"], ["note-sslmode"]),
            (Service.Kind.PRIVATE, ["note-bind", "note-node-dns"], ["note-ioredis-family"]),
            (Service.Kind.POSTGRESQL, ["note-sslmode"], ["note-bind", "note-node-dns"]),
            (Service.Kind.REDIS, ["note-ioredis-family"], ["note-bind", "note-sslmode"]),
            (Service.Kind.MONGODB, ["note-direct-connection"], ["note-bind"]),
            (Service.Kind.MYSQL, [], ["note-bind", "note-sslmode", "note-direct-connection"]),
        ],
    )
    def test_the_notes_beside_the_address_are_those_of_its_kind(
        self, viewer_client: Client, world: World, kind: str, present: list[str], absent: list[str]
    ) -> None:
        service = make_service(
            world.project, f"the {kind}", kind, [3000] if kind == Service.Kind.PRIVATE else None
        )
        url = reverse("service-detail", args=[world.project.uid, service.pk])
        html = viewer_client.get(url).content.decode()
        for key in present:
            assert f'id="{key}"' in html
        for key in absent:
            assert f'id="{key}"' not in html
        assert ("Before you connect" in html) == bool(present)

    def test_a_notes_code_is_code_and_its_sources_are_links(
        self, viewer_client: Client, world: World
    ) -> None:
        url = reverse("service-detail", args=[world.project.uid, world.postgres.pk])
        html = viewer_client.get(url).content.decode()
        assert "<code>sslmode=prefer</code>" in html
        assert (
            '<a href="https://www.postgresql.org/docs/current/libpq-connect.html'
            '#LIBPQ-CONNECT-SSLMODE" rel="noopener noreferrer">PostgreSQL: libpq sslmode</a>'
        ) in html
        web = viewer_client.get(
            reverse("service-detail", args=[world.project.uid, world.api.pk])
        ).content.decode()
        assert "gunicorn --bind 0.0.0.0:8080 app:app" in web
