"""The audit log reads as sentences, filters by who, what and when, and exports to CSV."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from django.test import Client
from django.urls import reverse
from django.utils import timezone

from networking import peering
from networking.models import AuditEvent
from tests.conftest import World


def page(client: Client, world: World, **query: str) -> str:
    return client.get(reverse("audit-log", args=[world.project.uid]), query).content.decode()


def test_details_read_as_words_not_python(owner_client: Client, world: World) -> None:
    world.api.ports = [80, 443]
    world.api.save_changes(actor=None)
    html = page(owner_client, world)
    assert "ports 8080 → 80, 443" in html
    assert "[8080]" not in html and "[80, 443]" not in html
    # An absolute time, with the relative one beside it.
    assert timezone.now().strftime("%Y-%m-%d") in html and " ago)" in html


def test_a_peering_event_names_the_other_project_once(owner_client: Client, world: World) -> None:
    peering.cancel(world.peering, actor=world.users["owner"], project=world.project)
    html = page(owner_client, world)
    assert "peering request</strong>" not in html
    assert f"Cancelled a peering request <strong>with {world.other_project.name}</strong>" in html
    assert "peering peering" not in html


def rows(html: str) -> int:
    return html.count("<tr>") - 1  # less the header


def test_filters_by_who_what_and_when(owner_client: Client, world: World) -> None:
    world.api.ports = [81]
    world.api.save_changes(actor=world.users["member"])
    peering.cancel(world.peering, actor=world.users["owner"], project=world.project)
    world.api.ports = [82]
    world.api.save_changes(actor=world.users["owner"])
    events = AuditEvent.objects.filter(project=world.project)
    oldest = events.order_by("id").first()
    assert oldest is not None
    AuditEvent.objects.filter(pk=oldest.pk).update(created_at=timezone.now() - timedelta(days=10))
    assert events.count() >= 3

    by_member = page(owner_client, world, who="member")
    assert rows(by_member) == 1 and "Changed a service’s ports" in by_member
    services = page(owner_client, world, what="service")
    assert rows(services) == events.filter(action__startswith="service.").count()
    assert "Cancelled a peering request" not in services
    today = timezone.now().date().isoformat()
    assert rows(page(owner_client, world, since=today)) == events.count() - 1
    assert rows(page(owner_client, world, until=today)) == events.count()
    # Filters survive in the export link and the pager.
    assert "export.csv?who=member" in by_member


def test_the_export_is_every_matching_row_as_csv(owner_client: Client, world: World) -> None:
    world.api.ports = [81]
    world.api.save_changes(actor=world.users["member"])
    response = owner_client.get(
        reverse("audit-log-csv", args=[world.project.uid]), {"who": "member"}
    )
    assert response["Content-Type"] == "text/csv"
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.getvalue().decode())))
    assert rows[0] == ["time (UTC)", "who", "what", "target", "details"]
    assert rows[1][1:] == ["member", "changed a service’s ports", "api", "ports 8080 → 81"]
    assert len(rows) == 2


def test_a_cell_that_looks_like_a_formula_is_defused(owner_client: Client, world: World) -> None:
    AuditEvent.objects.create(
        organization=world.acme,
        project=world.project,
        actor_label="=HYPERLINK(1)",
        action=AuditEvent.Action.SERVICE_CREATED,
        target="@sum",
    )
    response = owner_client.get(reverse("audit-log-csv", args=[world.project.uid]))
    body = response.getvalue().decode()
    assert "'=HYPERLINK(1)" in body and "'@sum" in body


def test_a_date_that_cant_be_read_is_said_beside_its_field(
    owner_client: Client, world: World
) -> None:
    response = owner_client.get(
        reverse("audit-log", args=[world.project.uid]),
        {"who": "owner", "what": "service", "since": "2026-02-30", "until": "yesterday"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    since = html[html.index('id="filter-since"') : html.index('id="filter-until"')]
    start = html.index('id="filter-until"')
    until = html[start : html.index("</form>", start)]
    assert "Give a day as YYYY-MM-DD, like 2025-01-31." in since
    assert "Give a day as YYYY-MM-DD, like 2025-01-31." in until
    assert 'aria-invalid="true"' in since and 'aria-invalid="true"' in until
    # What was typed stays, and so do the other filters.
    assert 'value="2026-02-30"' in html and 'value="yesterday"' in html
    assert '<option value="service" selected>' in html
    # No list passes for a filtered one.
    assert rows(html) == 1 and "Fix the dates above to see the log." in html


def test_from_after_to_is_said_not_answered_with_an_empty_list(
    owner_client: Client, world: World
) -> None:
    html = page(owner_client, world, since="2026-12-08", until="2026-12-07")
    assert "“From” must be on or before “To”" in html
    assert "Nothing matches these filters." not in html
    # The same day at both ends is a day, not an error.
    today = timezone.now().date().isoformat()
    same_day = page(owner_client, world, since=today, until=today)
    assert "must be on or before" not in same_day and rows(same_day) >= 1


def test_the_export_refuses_dates_it_cant_filter_by(owner_client: Client, world: World) -> None:
    url = reverse("audit-log-csv", args=[world.project.uid])
    for query, words in [
        ({"since": "12/07/2026"}, "From (since): Give a day as YYYY-MM-DD, like 2025-01-31."),
        ({"until": "2026-13-01"}, "To (until): Give a day as YYYY-MM-DD, like 2025-01-31."),
        ({"since": "2026-12-08", "until": "2026-12-07"}, "must be on or before"),
    ]:
        response = owner_client.get(url, query)
        assert response.status_code == 400, query
        assert words in response.content.decode()
    assert owner_client.get(url, {"since": "2026-12-07"}).status_code == 200
