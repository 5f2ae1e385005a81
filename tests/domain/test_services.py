from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dashboard.service_list import PAGE_SIZE
from networking import naming
from networking.models import AuditEvent, Project, Service
from tests.conftest import World, make_service


def create_url(world: World) -> str:
    return reverse("service-create", args=[world.project.uid])


def post_service(client: Client, world: World, **data: str) -> tuple[int, str]:
    response = client.post(create_url(world), data, follow=True)
    return response.status_code, response.content.decode()


def test_it_creates_a_private_service_with_its_hostname(owner_client: Client, world: World) -> None:
    generation = world.project.generation
    status, page = post_service(
        owner_client, world, display_name="Background Worker", kind="private", ports="3000"
    )
    assert status == 200
    service = Service.objects.get(project=world.project, name="background-worker")
    assert service.display_name == "Background Worker"
    assert service.ports == [3000]
    assert "http://background-worker.internal:3000" in page
    assert "BACKGROUND_WORKER_URL=http://background-worker.internal:3000" in page
    overview = owner_client.get(reverse("project-overview", args=[world.project.uid]))
    assert "background-worker.internal:3000" in overview.content.decode()
    world.project.refresh_from_db()
    assert world.project.generation == generation + 1
    event = AuditEvent.objects.get(project=world.project, action=AuditEvent.Action.SERVICE_CREATED)
    assert (event.actor_label, event.target) == ("owner", "background-worker")


def test_a_web_service_defaults_to_8080(owner_client: Client, world: World) -> None:
    post_service(owner_client, world, display_name="Frontend", kind="web", ports="")
    assert Service.objects.get(name="frontend").ports == [8080]


def test_a_web_service_may_change_its_port(owner_client: Client, world: World) -> None:
    post_service(owner_client, world, display_name="Frontend", kind="web", ports="3000")
    assert Service.objects.get(name="frontend").ports == [3000]


@pytest.mark.parametrize(
    ("kind", "port"), [("postgresql", 5432), ("mysql", 3306), ("redis", 6379), ("mongodb", 27017)]
)
def test_a_database_gets_its_standard_port_and_credentials(
    owner_client: Client, world: World, kind: str, port: int
) -> None:
    # Another port is refused with the reason, not replaced unsaid (the page's script fills
    # in the standard one and makes the field read-only; a script or a browser without it
    # may send anything).
    _, page = post_service(owner_client, world, display_name="Main DB", kind=kind, ports="1234")
    assert f"always listens on port {port}: leave the ports out, or give that one." in page
    assert not Service.objects.filter(name="main-db").exists()
    for ports in ("", str(port)):
        post_service(owner_client, world, display_name="Main DB", kind=kind, ports=ports)
        service = Service.objects.get(name="main-db")
        assert service.ports == [port]
        service.delete()
    post_service(owner_client, world, display_name="Main DB", kind=kind, ports=str(port))
    service = Service.objects.get(name="main-db")
    assert service.ports == [port]
    assert service.database_password is not None
    assert len(service.database_password.reveal()) >= 24


def test_credentials_are_encrypted_at_rest(world: World) -> None:
    password = world.postgres.database_password
    assert password is not None
    plaintext = password.reveal()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT database_password FROM networking_service WHERE id = %s", [world.postgres.pk]
        )
        (stored,) = cursor.fetchone()
    assert plaintext not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token
    assert plaintext not in str(world.postgres.database_password)
    assert plaintext not in repr(world.postgres.__dict__)


@pytest.mark.parametrize(
    ("display_name", "message"),
    [
        ("", "Enter a name"),
        ("x" * 64, "the limit is 63"),
        ("9lives", "must start with a letter"),
        ("🚀🚀", "can’t be part of a hostname"),
        ("api/v1", "“/”"),
        ("<script>", "“&lt;”"),
    ],
)
def test_a_bad_name_is_refused_with_a_reason(
    owner_client: Client, world: World, display_name: str, message: str
) -> None:
    count = Service.objects.count()
    status, page = post_service(
        owner_client, world, display_name=display_name, kind="web", ports=""
    )
    assert status == 200
    assert message in page
    assert Service.objects.count() == count


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        ("0", "Port 0 is out of range"),
        ("70000", "Port 70000 is out of range"),
        ("abc", "“abc” is not a port number"),
        ("3000, 3000", "Port 3000 is listed twice"),
        ("-1", "“-1” is not a port number"),
        ("٣٠٠٠", "is not a port number"),
        ("", "Enter the port your service listens on"),
    ],
)
def test_a_bad_port_is_refused_with_a_reason(
    owner_client: Client, world: World, ports: str, message: str
) -> None:
    count = Service.objects.count()
    status, page = post_service(
        owner_client, world, display_name="Worker", kind="private", ports=ports
    )
    assert status == 200
    assert message in page
    assert Service.objects.count() == count


def test_each_field_error_is_said_once(owner_client: Client, world: World) -> None:
    """The form's reason for each field, shown once: not also Django's "This field is
    required." beside "Enter a name…", nor the model's "Enter the port…" beside the reason the
    ports were refused."""
    status, page = post_service(owner_client, world, display_name="", kind="web", ports="70000")
    assert status == 200
    assert re.findall(r'<p class="error" role="alert">(.*?)</p>', page) == [
        naming.EMPTY_NAME,
        "Port 70000 is out of range: ports go from 1 to 65535.",
    ]


def test_a_name_that_collides_names_the_existing_service(
    owner_client: Client, world: World
) -> None:
    _, page = post_service(owner_client, world, display_name="  API ", kind="web", ports="")
    assert "The service “api” already uses api.internal" in page
    assert Service.objects.filter(project=world.project, name="api").count() == 1


def test_the_same_name_in_another_project_is_fine(owner_client: Client, world: World) -> None:
    post_service(owner_client, world, display_name="Warehouse", kind="mysql")
    assert Service.objects.filter(name="warehouse").count() == 2


def test_a_tampered_kind_is_refused(owner_client: Client, world: World) -> None:
    _, page = post_service(owner_client, world, display_name="x", kind="kubernetes", ports="1")
    assert "Select a valid choice" in page
    assert not Service.objects.filter(name="x").exists()


def test_posting_to_another_tenants_project_changes_nothing(
    owner_client: Client, world: World
) -> None:
    url = reverse("service-create", args=[world.other_project.uid])
    response = owner_client.post(url, {"display_name": "evil", "kind": "web", "ports": "80"})
    assert response.status_code == 404
    assert not Service.objects.filter(name="evil").exists()


def test_it_renames_and_the_hostname_follows(owner_client: Client, world: World) -> None:
    url = reverse("service-edit", args=[world.project.uid, world.api.pk])
    response = owner_client.post(url, {"display_name": "Public API", "ports": "9000"}, follow=True)
    world.api.refresh_from_db()
    assert (world.api.name, world.api.ports) == ("public-api", [9000])
    assert "public-api.internal" in response.content.decode()
    renamed = AuditEvent.objects.get(action=AuditEvent.Action.SERVICE_RENAMED)
    assert (renamed.details["from"], renamed.details["to"]) == ("api", "public-api")
    # By default the old hostname keeps resolving for a day (tests/domain/test_aliases.py).
    assert "old_name_until" in renamed.details
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SERVICE_PORTS_CHANGED).exists()


def test_a_rename_onto_another_service_is_refused(owner_client: Client, world: World) -> None:
    url = reverse("service-edit", args=[world.project.uid, world.api.pk])
    response = owner_client.post(url, {"display_name": "Postgres", "ports": "8080"})
    assert "The service “postgres” already uses postgres.internal" in response.content.decode()
    world.api.refresh_from_db()
    assert world.api.name == "api"


def test_renaming_a_service_to_its_own_name_is_fine(owner_client: Client, world: World) -> None:
    url = reverse("service-edit", args=[world.project.uid, world.api.pk])
    response = owner_client.post(url, {"display_name": "API", "ports": "8080"})
    assert response.status_code == 302
    world.api.refresh_from_db()
    assert (world.api.display_name, world.api.name) == ("API", "api")


def test_a_database_keeps_its_kind_and_port_on_edit(owner_client: Client, world: World) -> None:
    url = reverse("service-edit", args=[world.project.uid, world.postgres.pk])
    owner_client.post(url, {"display_name": "postgres", "kind": "web", "ports": "80"})
    world.postgres.refresh_from_db()
    assert (world.postgres.kind, world.postgres.ports) == ("postgresql", [5432])


def test_it_deletes_a_service(owner_client: Client, world: World) -> None:
    url = reverse("service-delete", args=[world.project.uid, world.api.pk])
    response = owner_client.post(url, follow=True)
    assert "api.internal is released" in response.content.decode()
    assert not Service.objects.filter(pk=world.api.pk).exists()
    assert AuditEvent.objects.filter(
        action=AuditEvent.Action.SERVICE_DELETED, target="api"
    ).exists()


class TestNamePreview:
    def preview(self, client: Client, world: World, name: str, service: str = "") -> str:
        url = reverse("service-name-preview", args=[world.project.uid])
        response = client.get(
            url, {"display_name": name, "service": service}, HTTP_HX_REQUEST="true"
        )
        assert response.status_code == 200
        return response.content.decode()

    def test_it_shows_the_hostname(self, owner_client: Client, world: World) -> None:
        html = self.preview(owner_client, world, "Background Worker")
        assert "background-worker.internal" in html
        assert "<html" not in html  # only the partial

    def test_it_shows_why_a_name_is_invalid(self, owner_client: Client, world: World) -> None:
        assert "must start with a letter" in self.preview(owner_client, world, "1st")

    def test_it_flags_a_collision(self, owner_client: Client, world: World) -> None:
        assert "already uses api.internal" in self.preview(owner_client, world, "API")

    def test_a_service_does_not_collide_with_itself(
        self, owner_client: Client, world: World
    ) -> None:
        html = self.preview(owner_client, world, "API", service=str(world.api.pk))
        assert "already uses" not in html
        assert "api.internal" in html

    def test_garbage_service_id_is_ignored(self, owner_client: Client, world: World) -> None:
        assert "already uses" in self.preview(owner_client, world, "api", service="1 OR 1=1")


class TestReveal:
    def reveal_url(self, world: World) -> str:
        return reverse("service-reveal", args=[world.project.uid, world.postgres.pk])

    def password(self, world: World) -> str:
        assert world.postgres.database_password is not None
        return world.postgres.database_password.reveal()

    def test_the_password_is_masked_on_every_page(self, owner_client: Client, world: World) -> None:
        for url in (
            reverse("service-detail", args=[world.project.uid, world.postgres.pk]),
            reverse("project-overview", args=[world.project.uid]),
            reverse("audit-log", args=[world.project.uid]),
        ):
            assert self.password(world) not in owner_client.get(url).content.decode()

    def test_reveal_shows_it_and_is_audited(self, owner_client: Client, world: World) -> None:
        response = owner_client.post(self.reveal_url(world), HTTP_HX_REQUEST="true")
        html = response.content.decode()
        assert self.password(world) in html
        assert f"@postgres.internal:5432/{world.postgres.database_name}" in html
        assert "<html" not in html  # htmx gets the endpoints panel only
        assert "no-store" in response["Cache-Control"]
        event = AuditEvent.objects.get(action=AuditEvent.Action.CREDENTIALS_REVEALED)
        assert (event.actor_label, event.target) == ("owner", "postgres")
        assert self.password(world) not in str(event.details)

    def test_reveal_without_htmx_renders_the_page(self, owner_client: Client, world: World) -> None:
        html = owner_client.post(self.reveal_url(world)).content.decode()
        assert "<html" in html and self.password(world) in html

    def test_a_viewer_cannot_reveal(self, viewer_client: Client, world: World) -> None:
        response = viewer_client.post(self.reveal_url(world))
        assert response.status_code == 403
        assert self.password(world) not in response.content.decode()
        assert not AuditEvent.objects.filter(action=AuditEvent.Action.CREDENTIALS_REVEALED).exists()

    def test_reveal_is_post_only(self, owner_client: Client, world: World) -> None:
        assert owner_client.get(self.reveal_url(world)).status_code == 405

    def test_a_web_service_has_nothing_to_reveal(self, owner_client: Client, world: World) -> None:
        url = reverse("service-reveal", args=[world.project.uid, world.api.pk])
        assert owner_client.post(url).status_code == 400


def test_a_viewer_sees_everything_but_no_controls(viewer_client: Client, world: World) -> None:
    overview = viewer_client.get(reverse("project-overview", args=[world.project.uid]))
    detail = viewer_client.get(
        reverse("service-detail", args=[world.project.uid, world.postgres.pk])
    )
    html = overview.content.decode() + detail.content.decode()
    assert "api.internal:8080" in html and "postgres.internal" in html
    for control in ("New service", "Reveal password", "Rename or change ports", ">Delete<"):
        assert control not in html
    assert "Viewers can’t reveal credentials" in html


def test_the_project_list_shows_only_my_organizations(client_for: object, world: World) -> None:
    html = world.client_for("owner").get(reverse("project-list")).content.decode()
    assert world.project.name in html
    assert world.other_project.name not in html
    html = world.client_for("support").get(reverse("project-list")).content.decode()
    assert world.project.name not in html


def test_the_overview_needs_the_same_queries_for_10_and_100_services(
    owner_client: Client, world: World
) -> None:
    url = reverse("project-overview", args=[world.project.uid])

    def queries_with(total: int) -> int:
        existing = world.project.services.count()
        Service.objects.bulk_create(
            Service(
                project=world.project,
                display_name=f"svc {i}",
                name=f"svc-{i}",
                kind="web",
                ports=[8080],
            )
            for i in range(existing, total)
        )
        with CaptureQueriesContext(connection) as context:
            response = owner_client.get(url)
        # A page shows at most PAGE_SIZE services, whatever the project holds.
        shown = response.content.decode().count('<tr id="service-')
        assert shown == min(total, PAGE_SIZE)
        return len(context.captured_queries)

    small = queries_with(10)
    assert small > 0
    assert queries_with(100) == small


def test_project_rename_moves_nothing(owner_client: Client, world: World) -> None:
    namespace = world.project.namespace
    response = owner_client.post(
        reverse("project-settings", args=[world.project.uid]), {"name": "Shop"}, follow=True
    )
    assert "Project renamed" in response.content.decode()
    project = Project.objects.get(pk=world.project.pk)
    assert (project.name, project.namespace) == ("Shop", namespace)


def test_a_rename_of_a_project_deleted_meanwhile_says_so(
    owner_client: Client, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboard import views

    found = views.get_project_for_user  # type: ignore[attr-defined]

    def deleted_meanwhile(request: Any, project_uid: str) -> Any:
        access = found(request, project_uid)
        Project.objects.filter(pk=access.project.pk).delete()  # another owner, a moment ago
        return access

    monkeypatch.setattr(views, "get_project_for_user", deleted_meanwhile)
    response = owner_client.post(
        reverse("project-settings", args=[world.project.uid]), {"name": "Shop"}, follow=True
    )
    assert response.status_code == 200
    assert "Storefront was deleted meanwhile: nothing was renamed." in response.content.decode()
    assert not Project.objects.filter(name="Shop").exists()


def test_an_owner_creates_a_project(owner_client: Client, world: World) -> None:
    response = owner_client.post(
        reverse("project-create", args=[world.acme.slug]), {"name": "Billing"}, follow=True
    )
    assert response.status_code == 200
    project = Project.objects.get(name="Billing", organization=world.acme)
    assert project.organization == world.acme
    assert project.namespace == f"prj-{project.uid}"


def test_the_audit_log_lists_who_did_what(owner_client: Client, world: World) -> None:
    make_service(world.project, "cache", "redis")
    post_service(owner_client, world, display_name="Jobs", kind="private", ports="3000")
    html = owner_client.get(reverse("audit-log", args=[world.project.uid])).content.decode()
    assert "Created a service <strong>jobs</strong>" in html
    assert "owner" in html


@pytest.mark.parametrize("page", ["project-overview", "service-detail"])
def test_pages_that_htmx_refreshes_vary_on_hx_request(
    owner_client: Client, world: World, page: str
) -> None:
    # The page and its htmx partial share a URL: the browser must not serve one for the other
    # (Back after a live refresh would show the bare partial).
    args = [world.project.uid] + ([world.api.pk] if page == "service-detail" else [])
    response = owner_client.get(reverse(page, args=args))
    assert "HX-Request" in response["Vary"]


@pytest.mark.parametrize(
    ("backend", "said"),
    [
        ("manifests", "the manifests backend), which assign no addresses"),
        ("kubernetes", "Assigned when the cluster applies this service"),
    ],
)
def test_a_missing_clusterip_is_explained_for_the_backend_in_use(
    owner_client: Client, world: World, settings: Any, backend: str, said: str
) -> None:
    settings.CLUSTER_BACKEND = backend
    Service.objects.filter(pk=world.api.pk).update(cluster_ip=None)
    page = owner_client.get(reverse("service-detail", args=[world.project.uid, world.api.pk]))
    assert said in page.content.decode()
    overview = owner_client.get(reverse("project-overview", args=[world.project.uid]))
    assert ("not assigned by manifests" in overview.content.decode()) == (backend == "manifests")


def test_the_edit_form_says_when_a_rename_stops_the_old_hostname(
    owner_client: Client, world: World
) -> None:
    edit = reverse("service-edit", args=[world.project.uid, world.api.pk])
    assert "<code>api.internal</code> stops resolving once the time chosen below is up" in (
        owner_client.get(edit).content.decode()
    )
    preview = reverse("service-name-preview", args=[world.project.uid])
    renamed = owner_client.get(
        preview, {"display_name": "Public API", "service": str(world.api.pk)}
    )
    html = renamed.content.decode()
    assert "public-api.internal" in html
    assert "<code>api.internal</code> keeps resolving only for the time chosen below" in html
    # Typing the same name (another case) warns of nothing.
    same = owner_client.get(preview, {"display_name": "API", "service": str(world.api.pk)})
    assert "keeps resolving" not in same.content.decode()
    # A new service has no old hostname.
    new = owner_client.get(preview, {"display_name": "Public API"})
    assert "keeps resolving" not in new.content.decode()


def test_a_database_can_be_renamed_in_the_dashboard(owner_client: Client, world: World) -> None:
    """Its ports field is disabled: the form cleans the stored list, not a typed text."""
    url = reverse("service-edit", args=[world.project.uid, world.postgres.pk])
    response = owner_client.post(url, {"display_name": "Main DB"})
    assert response.status_code == 302
    world.postgres.refresh_from_db()
    assert world.postgres.name == "main-db"
    assert world.postgres.ports == [5432]


class TestTheOverviewList:
    """Search, filters, sorting and pages of the overview, all in the query string."""

    def page(self, client: Client, world: World, **params: str) -> str:
        url = reverse("project-overview", args=[world.project.uid])
        return client.get(url, params).content.decode()

    def test_a_hostname_or_an_address_finds_its_service(
        self, owner_client: Client, world: World
    ) -> None:
        for query in ("api", "API", "api.internal", "api.internal:8080"):
            html = self.page(owner_client, world, q=query)
            assert f'id="service-{world.api.pk}"' in html, query
            assert f'id="service-{world.postgres.pk}"' not in html, query

    def test_kind_and_status_narrow_the_list(self, owner_client: Client, world: World) -> None:
        Service.objects.filter(pk=world.api.pk).update(cluster_ip="10.96.0.7")
        html = self.page(owner_client, world, kind="postgresql")
        assert f'id="service-{world.postgres.pk}"' in html
        assert f'id="service-{world.api.pk}"' not in html
        html = self.page(owner_client, world, status="live")
        assert f'id="service-{world.api.pk}"' in html
        assert f'id="service-{world.postgres.pk}"' not in html
        assert "1 of 2 services match" in html
        html = self.page(owner_client, world, status="applied")
        assert f'id="service-{world.postgres.pk}"' in html
        assert f'id="service-{world.api.pk}"' not in html
        # A change on its way to the cluster: pending until the worker applies it.
        world.postgres.display_name = "Main DB"
        world.postgres.full_clean()
        world.postgres.save_changes(actor=None)
        html = self.page(owner_client, world, status="pending")
        assert f'id="service-{world.postgres.pk}"' in html
        assert f'id="service-{world.api.pk}"' not in html

    def test_unknown_choices_fall_back_instead_of_failing(
        self, owner_client: Client, world: World
    ) -> None:
        html = self.page(owner_client, world, kind="nope", sort="'; drop", page="x", status="?")
        assert f'id="service-{world.api.pk}"' in html
        assert f'id="service-{world.postgres.pk}"' in html

    def test_sorting_links_keep_the_filters_and_say_which_way(
        self, owner_client: Client, world: World
    ) -> None:
        html = self.page(owner_client, world, q="p", sort="kind")
        assert 'aria-sort="ascending"' in html
        assert "?q=p&amp;sort=-kind" in html
        first, second = world.postgres.pk, world.api.pk  # postgresql before web
        assert html.index(f'id="service-{first}"') < html.index(f'id="service-{second}"')

    def test_a_page_at_a_time(self, owner_client: Client, world: World) -> None:
        Service.objects.bulk_create(
            Service(
                project=world.project,
                display_name=f"s{i}",
                name=f"s{i:03}",
                kind="private",
                ports=[3000],
            )
            for i in range(PAGE_SIZE + 10)
        )
        first = self.page(owner_client, world)
        assert first.count('<tr id="service-') == PAGE_SIZE
        assert "page 1 of 2" in first
        second = self.page(owner_client, world, page="2")
        assert second.count('<tr id="service-') == 12


def test_a_race_no_view_foresaw_is_a_clear_answer_not_a_500(world: World) -> None:
    """The last line: something deleted meanwhile is a 404 that says so; a lost write race is
    a 409 that says to reload."""
    from django.contrib.auth.models import AnonymousUser
    from django.contrib.messages.storage.fallback import FallbackStorage
    from django.db import IntegrityError
    from django.test import RequestFactory

    from dashboard.middleware import ConcurrentChangeMiddleware
    from networking.contention import CONFLICT, GONE

    request = RequestFactory().post("/projects/x/")
    request.user = AnonymousUser()
    request.session = {}  # type: ignore[assignment]
    request._messages = FallbackStorage(request)  # type: ignore[attr-defined]
    middleware = ConcurrentChangeMiddleware(lambda request: None)  # type: ignore[arg-type,return-value]
    gone = middleware.process_exception(request, Service.DoesNotExist("gone"))
    assert gone is not None and gone.status_code == 404
    assert GONE in gone.content.decode()
    clash = middleware.process_exception(request, IntegrityError("duplicate key"))
    assert clash is not None and clash.status_code == 409
    assert CONFLICT.split(",")[0] in clash.content.decode()
    assert middleware.process_exception(request, ValueError("a bug")) is None  # still a 500


def test_an_edit_keeps_what_the_worker_recorded_meanwhile(world: World) -> None:
    """The edit page read the row before the worker recorded the ClusterIP and the workload:
    saving the new port must not put the old blanks back."""
    seen = Service.objects.get(pk=world.api.pk)
    workload = {"kind": "Deployment", "name": "api", "ready": True}
    Service.objects.filter(pk=world.api.pk).update(cluster_ip="10.96.0.50", workload=workload)
    seen.ports = [9090]
    assert seen.save_changes(actor=None) == ["ports"]
    stored = Service.objects.get(pk=world.api.pk)
    assert (stored.ports, stored.cluster_ip, stored.workload) == ([9090], "10.96.0.50", workload)
