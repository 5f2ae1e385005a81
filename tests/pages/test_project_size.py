"""A service page, its forms and the API's list of services cost the same in a project of 40
services or of 1,000: choices of services are searched, not listed whole, and the suggested
variable names are worked out from the few services that could take them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from networking.models import Project, ReferenceVariable, Service
from tests.conftest import World, make_service

pytestmark = pytest.mark.django_db


def grow(project: Project, count: int) -> None:
    """``count`` more web services (the bulk insert the benchmarks use)."""
    start = project.services.count()
    Service.objects.bulk_create(
        Service(
            project=project,
            display_name=f"filler {n}",
            name=f"filler-{n}",
            kind=Service.Kind.WEB,
            ports=[8080],
        )
        for n in range(start, start + count)
    )


def measured(client: Any, url: str, **headers: str) -> tuple[int, int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, headers=headers)
    assert response.status_code == 200, response.content[:500]
    return len(queries), len(response.content), response.content.decode()


PAGES = {
    "service page": lambda world: reverse(
        "service-detail", args=[world.project.uid, world.postgres.pk]
    ),
    "new secret": lambda world: reverse("secret-create", args=[world.project.uid]),
    "secret receivers": lambda world: reverse(
        "secret-edit", args=[world.project.uid, world.secret.pk]
    ),
    "API list": lambda world: f"/api/v1/projects/{world.project.uid}/services?limit=20",
    "API read": lambda world: f"/api/v1/projects/{world.project.uid}/services/{world.api.pk}",
}


@pytest.mark.parametrize("page", PAGES)
def test_the_same_queries_and_about_the_same_bytes_at_40_and_1000_services(
    world: World, page: str
) -> None:
    owner = world.client_for("owner")
    url = PAGES[page](world)
    grow(world.project, 40)
    small_queries, small_bytes, _ = measured(owner, url)
    grow(world.project, 960)
    queries, size, _ = measured(owner, url)
    assert queries <= small_queries
    assert size < small_bytes * 1.05 + 500


def test_a_large_projects_service_page_offers_a_search_instead_of_every_service(
    world: World,
) -> None:
    grow(world.project, 200)
    owner = world.client_for("owner")
    _, _, page = measured(owner, PAGES["service page"](world))
    assert 'id="picker-consumers-search"' in page
    assert page.count('name="consumers"') <= 20
    search = reverse("service-choices", args=[world.project.uid])
    found = owner.get(
        search, {"field": "consumers", "exclude": str(world.postgres.pk), "q": "filler 17"}
    ).content.decode()
    assert re.findall(r"filler-17\d*\.internal", found)[:3] == [
        "filler-17.internal",
        "filler-170.internal",
        "filler-171.internal",
    ]
    assert "postgres.internal" not in found  # the source itself is not offered
    # A chosen service stays chosen whatever is searched next.
    kept = owner.get(
        search, {"field": "consumers", "consumers": [str(world.api.pk)], "q": "filler 5"}
    ).content.decode()
    assert re.search(rf'value="{world.api.pk}" checked', kept)
    # Another tenant's services are neither found nor kept.
    foreign = owner.get(
        search, {"field": "consumers", "consumers": [str(world.other_service.pk)], "q": "ware"}
    ).content.decode()
    assert "warehouse" not in foreign


def test_a_service_chosen_from_the_search_receives_the_reference(world: World) -> None:
    grow(world.project, 200)
    chosen = Service.objects.get(project=world.project, name="filler-42")
    response = world.client_for("owner").post(
        reverse("service-reference-add", args=[world.project.uid, world.postgres.pk]),
        {"consumers": [chosen.pk], "variable": ""},
    )
    assert response.status_code == 302, response.content[:500]
    assert ReferenceVariable.objects.filter(source=world.postgres, consumer=chosen).exists()


def test_the_suggested_names_do_not_change_as_the_project_grows(world: World) -> None:
    """The API's name for each service is the project's (two databases: the older one gets
    DATABASE_URL), however many services there are."""
    second = make_service(world.project, "orders-db", Service.Kind.POSTGRESQL)
    grow(world.project, 300)
    owner = world.client_for("owner")
    for service, variable in ((world.postgres, "DATABASE_URL"), (second, "ORDERS_DB_URL")):
        url = f"/api/v1/projects/{world.project.uid}/services/{service.pk}"
        found = owner.get(url).json()
        assert variable in str(found), found


def test_a_service_page_counts_its_neighbours_up_to_a_thousand(world: World) -> None:
    owner = world.client_for("owner")
    url = PAGES["service page"](world)
    grow(world.project, 998)  # with api and postgres: 1,000
    assert "Every service in Storefront (1,000)" in owner.get(url).content.decode()
    grow(world.project, 1)
    assert "Every service in Storefront (more than 1,000)" in owner.get(url).content.decode()


def test_a_secrets_receivers_stay_above_the_search_and_are_not_offered_again(
    world: World,
) -> None:
    grow(world.project, 200)
    receivers = list(Service.objects.filter(project=world.project, name__startswith="filler-1"))
    world.secret.services.add(*receivers)
    owner = world.client_for("owner")
    _, _, page = measured(owner, PAGES["secret receivers"](world))
    chosen = page.split('class="picker-chosen', 1)[1].split('id="picker-services-search"', 1)[0]
    assert chosen.count("checked") == len(receivers) + 1  # api received it already
    listed = page.split('id="picker-services-matches"', 1)[1]
    assert "checked" not in listed.split("</div>", 1)[0]
    found = owner.get(
        reverse("service-choices", args=[world.project.uid]),
        {"field": "services", "secret": str(world.secret.pk), "q": "filler 1"},
    ).content.decode()
    assert "filler-1.internal" not in found  # a receiver, listed above
    assert "filler-2.internal" not in found  # no match
    assert "filler-21.internal" not in found
