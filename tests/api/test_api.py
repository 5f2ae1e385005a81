"""The HTTP API: what a script sees. The same rules and words as the dashboard."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from networking import naming
from networking.forms import ServiceForm
from networking.models import (
    AuditEvent,
    Membership,
    Organization,
    PeeringRequest,
    Project,
    SecretRotation,
    Service,
    SharedSecret,
)
from tests.conftest import World, bearer


class Api:
    """A script holding one token."""

    def __init__(self, token: str | None, client: Client | None = None) -> None:
        self.client = client or Client()
        self.headers = bearer(token)

    def get(self, path: str, **headers: str) -> Any:
        return self.client.get("/api/v1" + path, headers={**self.headers, **headers})

    def send(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        data = body if isinstance(body, str | bytes) else json.dumps(body or {})
        return self.client.generic(
            method,
            "/api/v1" + path,
            data=data,
            content_type="application/json",
            headers={**self.headers, **headers},
        )


@pytest.fixture
def as_role(api_tokens: dict[str, str | None]) -> Any:
    return lambda role: Api(api_tokens[role])


def _request_digest(method: str, path: str, body: bytes) -> str:
    import hashlib

    hasher = hashlib.sha256()
    for part in (method, path, ""):
        hasher.update(part.encode() + b"\0")
    hasher.update(body)
    return hasher.hexdigest()


def is_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith("https://") and problem["title"] and problem["detail"]
    return problem


class TestDoneWhen:
    def test_a_members_script_creates_background_worker_and_reads_its_address(
        self, world: World, as_role: Any
    ) -> None:
        api = as_role("member")
        uid = world.project.uid
        created = api.send(
            "POST",
            f"/projects/{uid}/services",
            {"name": "Background Worker", "kind": "private", "ports": [3000]},
        )
        assert created.status_code == 201
        read = api.get(f"/projects/{uid}/services/{created.json()['id']}").json()
        assert read["address"] == "background-worker.internal:3000"
        assert read["hostname"] == "background-worker.internal"
        assert read["endpoints"][0]["env_line"] == (
            "BACKGROUND_WORKER_URL=http://background-worker.internal:3000"
        )

    def test_support_approves_a_peering_through_the_api(self, world: World, as_role: Any) -> None:
        queue = as_role("support").get("/support/peerings").json()
        assert [peering["id"] for peering in queue] == [world.other_peering.pk]
        approved = as_role("support").send(
            "POST", f"/support/peerings/{world.other_peering.pk}/approve"
        )
        assert approved.status_code == 200
        assert approved.json()["status"] == PeeringRequest.Status.APPROVED
        assert approved.json()["history"][-1]["by"] == "support via token support-token"
        event = AuditEvent.objects.get(
            action=AuditEvent.Action.PEERING_APPROVED, project__name="Analytics"
        )
        assert event.actor_display == "support via token support-token"

    def test_support_rejects_with_a_reason_and_needs_one(self, world: World, as_role: Any) -> None:
        path = f"/support/peerings/{world.other_peering.pk}/reject"
        problem = is_problem(as_role("support").send("POST", path, {"reason": " "}), 422)
        assert problem["errors"] == {"reason": ["Give the customer a reason for the rejection."]}
        rejected = as_role("support").send("POST", path, {"reason": "Not needed."})
        assert rejected.json()["decision_reason"] == "Not needed."


def form_errors(world: World, name: str, ports: str = "3000") -> dict[str, list[str]]:
    form = ServiceForm(
        {"display_name": name, "kind": "private", "ports": ports}, project=world.project
    )
    assert not form.is_valid()
    return {key: [str(message) for message in messages] for key, messages in form.errors.items()}


class TestTheFormsWords:
    @pytest.mark.parametrize(
        "name", ["Background_Worker!", "2fa", "-api", "café au lait?", "x" * 70, "  "]
    )
    def test_the_naming_rule_says_what_the_form_says(
        self, world: World, as_role: Any, name: str
    ) -> None:
        response = as_role("member").send(
            "POST",
            f"/projects/{world.project.uid}/services",
            {"name": name, "kind": "private", "ports": [3000]},
        )
        problem = is_problem(response, 422)
        assert problem["errors"]["name"] == form_errors(world, name)["display_name"]
        assert problem["detail"] == problem["errors"]["name"][0]

    def test_the_suggestion_is_kept(self, world: World, as_role: Any) -> None:
        response = as_role("member").send(
            "POST", f"/projects/{world.project.uid}/services", {"name": "Background_Worker!"}
        )
        assert "Try “background-worker”." in response.json()["errors"]["name"][0]

    @pytest.mark.parametrize(
        ("ports", "typed"), [([70000], "70000"), ([3000, 3000], "3000, 3000"), ([0], "0")]
    )
    def test_ports_say_what_the_form_says(
        self, world: World, as_role: Any, ports: list[int], typed: str
    ) -> None:
        response = as_role("member").send(
            "POST",
            f"/projects/{world.project.uid}/services",
            {"name": "worker", "kind": "private", "ports": ports},
        )
        problem = is_problem(response, 422)
        assert problem["errors"]["ports"] == form_errors(world, "worker", typed)["ports"]

    def test_each_field_error_is_said_once(self, world: World, as_role: Any) -> None:
        """The form's reason, and not also the model's "Enter the port…" for the empty list
        the refused ports left behind (nor Django's "This field is required." beside the
        naming rule's "Enter a name…")."""
        out_of_range = "Port 70000 is out of range: ports go from 1 to 65535."
        response = as_role("member").send(
            "POST", f"/projects/{world.project.uid}/services", {"name": "worker", "ports": [70000]}
        )
        assert is_problem(response, 422)["errors"] == {"ports": [out_of_range]}
        assert form_errors(world, "", "70000") == {
            "display_name": [naming.EMPTY_NAME],
            "ports": [out_of_range],
        }

    def test_a_databases_port_other_than_its_own_is_refused_with_the_reason(
        self, world: World, as_role: Any
    ) -> None:
        member = as_role("member")
        services = f"/projects/{world.project.uid}/services"
        refused = member.send(
            "POST", services, {"name": "db", "kind": "postgresql", "ports": [6000]}
        )
        problem = is_problem(refused, 422)
        assert problem["errors"]["ports"] == [
            "PostgreSQL always listens on port 5432: leave the ports out, or give that one."
        ]
        assert not Service.objects.filter(project=world.project, name="db").exists()
        # Left out, or the standard one: created on it.
        for name, body in (("db", {}), ("db-two", {"ports": [5432]})):
            created = member.send("POST", services, {"name": name, "kind": "postgresql", **body})
            assert created.status_code == 201, created.json()
            assert created.json()["ports"] == [5432]
        # And a database that exists keeps it, saying so: a conflict with what it is (the
        # document can't know a service's kind from a PATCH).
        changed = member.send("PATCH", f"{services}/{world.postgres.pk}", {"ports": [6000]})
        assert is_problem(changed, 409)["errors"]["ports"][0].startswith(
            "PostgreSQL always listens on port 5432"
        )
        assert Service.objects.get(pk=world.postgres.pk).ports == [5432]

    def test_a_name_another_service_has_is_a_conflict_naming_it(
        self, world: World, as_role: Any
    ) -> None:
        response = as_role("member").send(
            "POST", f"/projects/{world.project.uid}/services", {"name": "API", "ports": [80]}
        )
        problem = is_problem(response, 409)
        assert problem["errors"]["name"] == [
            "The service “api” already uses api.internal in this project. Choose another name, "
            "or rename that service first."
        ]

    def test_a_secret_name_taken_is_a_conflict(self, world: World, as_role: Any) -> None:
        response = as_role("owner").send(
            "POST", f"/projects/{world.project.uid}/secrets", {"name": "INTERNAL_API_SECRET"}
        )
        problem = is_problem(response, 409)
        assert problem["errors"]["name"] == [
            "This project already has a secret named INTERNAL_API_SECRET."
        ]

    def test_an_unknown_receiving_service_is_named(self, world: World, as_role: Any) -> None:
        response = as_role("owner").send(
            "POST",
            f"/projects/{world.project.uid}/secrets",
            {"name": "WEBHOOK_KEY", "services": ["api", "nope"]},
        )
        # A well-formed label, but the project has no such service: a conflict (409), not
        # invalid input, and not 404, which would say the project is not there.
        problem = is_problem(response, 409)
        assert problem["errors"]["services"][0].startswith(
            "This project has no service named “nope”."
        )

    def test_a_bad_secret_name_gets_the_forms_hint(self, world: World, as_role: Any) -> None:
        response = as_role("owner").send(
            "POST", f"/projects/{world.project.uid}/secrets", {"name": "webhook-key"}
        )
        assert "Try WEBHOOK_KEY." in is_problem(response, 422)["errors"]["name"][0]


class TestBadInput:
    """Never a 500: each is a clear problem document, and nothing changes."""

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            ("{not json", 400),
            (b"\xff\xfe", 400),
            ("[]", 422),
            ('"a string"', 422),
            ('{"name": 5, "ports": "3000"}', 422),
            ('{"name": "x", "ports": [true]}', 422),
            ('{"name": "x", "ports": [3000.5]}', 422),
            ('{"name": "a\\u0000b", "ports": [3000]}', 422),
            ('{"name": "x", "kind": "mainframe"}', 422),
        ],
    )
    def test_a_bad_body_is_refused_clearly(
        self, world: World, as_role: Any, body: str, status: int
    ) -> None:
        before = Service.objects.count()
        response = as_role("member").send("POST", f"/projects/{world.project.uid}/services", body)
        is_problem(response, status)
        assert Service.objects.count() == before

    def test_a_nul_byte_in_a_secrets_receivers_is_refused(self, world: World, as_role: Any) -> None:
        api = as_role("owner")
        base = f"/projects/{world.project.uid}/secrets"
        body = {"name": "FOO_SECRET", "services": ["a\u0000b"]}
        problem = is_problem(api.send("POST", base, body), 422)
        assert "is not a service’s DNS label" in problem["errors"]["services"][0]
        assert not SharedSecret.objects.filter(name="FOO_SECRET").exists()
        created = api.send("POST", base, {"name": "FOO_SECRET", "services": []})
        assert created.status_code == 201, created.content
        path = f"{base}/{created.json()['id']}"
        is_problem(api.send("PATCH", path, {"services": ["a\u0000b"]}), 422)

    def test_a_huge_body_is_refused(self, world: World, as_role: Any) -> None:
        body = json.dumps({"name": "x" * 3_000_000})
        response = as_role("member").send("POST", f"/projects/{world.project.uid}/services", body)
        is_problem(response, 413)

    def test_a_huge_body_with_an_idempotency_key_is_refused(
        self, world: World, as_role: Any
    ) -> None:
        body = json.dumps({"name": "x" * 3_000_000})
        path = f"/projects/{world.project.uid}/services"
        response = as_role("member").send("POST", path, body, **{"Idempotency-Key": "k"})
        is_problem(response, 413)

    @pytest.mark.parametrize(
        "path",
        [
            "/projects/NOT-AN-ID",
            "/projects/abc%00defghijk",
            "/projects/{uid}/services/0",
            "/projects/{uid}/services/99999999999999999999999",
            "/projects/{uid}/services/abc",
            "/projects/{uid}/audit?who=a%00b",
            "/projects/{uid}/audit?cursor=bm90LWEtY3Vyc29y",
            "/projects/{uid}/audit?cursor=%00",
            "/projects/{uid}/audit?cursor=1-2%0A",
            "/projects/{uid}/audit?since=yesterday",
            "/projects/{uid}/audit?since=0",
            "/projects/{uid}/audit?what=everything",
            "/projects/{uid}/services?limit=100000",
            "/projects/{uid}/services?name=%00",
            "/no-such-endpoint",
        ],
    )
    def test_a_bad_path_or_query_is_a_4xx(self, world: World, as_role: Any, path: str) -> None:
        response = as_role("member").get(path.format(uid=world.project.uid))
        assert 400 <= response.status_code < 500
        is_problem(response, response.status_code)

    @pytest.mark.parametrize(
        "query",
        [
            # Any position is one to continue from: the calendar's last moment and the
            # largest ID (past them: the same), and the first.
            "cursor=999999999999999999-9999999999999999999",
            "cursor=0-0",
            # A day with no day after it.
            "until=9999-12-31",
            "since=0001-01-01",
        ],
    )
    def test_what_the_document_takes_at_its_ends_is_answered(
        self, world: World, as_role: Any, query: str
    ) -> None:
        response = as_role("member").get(f"/projects/{world.project.uid}/audit?{query}")
        assert response.status_code == 200, response.content

    def test_a_method_the_endpoint_does_not_take_is_a_405_problem(
        self, world: World, as_role: Any
    ) -> None:
        response = as_role("member").send("PUT", f"/projects/{world.project.uid}/services")
        problem = is_problem(response, 405)
        assert "GET" in response["Allow"] and "GET" in problem["detail"]


class TestSession:
    def test_a_signed_in_browser_may_read(self, world: World) -> None:
        response = world.client_for("member").get(f"/api/v1/projects/{world.project.uid}")
        assert response.status_code == 200

    def test_a_browsers_change_needs_the_csrf_token(self, world: World) -> None:
        client = Client(enforce_csrf_checks=True)
        member = world.users["member"]
        assert member is not None
        client.force_login(member)
        path = f"/projects/{world.project.uid}/services"
        refused = Api(None, client).send("POST", path, {"name": "Worker", "ports": [3000]})
        assert "CSRF" in is_problem(refused, 403)["detail"]
        assert not Service.objects.filter(name="worker").exists()
        client.get("/projects/")  # a page sets the csrftoken cookie, as the browser gets it
        token = client.cookies["csrftoken"].value
        done = Api(None, client).send(
            "POST", path, {"name": "Worker", "ports": [3000]}, **{"X-CSRFToken": token}
        )
        assert done.status_code == 201

    def test_a_token_call_needs_no_csrf_token(self, world: World, api_tokens: Any) -> None:
        client = Client(enforce_csrf_checks=True)
        response = Api(api_tokens["member"], client).send(
            "POST", f"/projects/{world.project.uid}/services", {"name": "Worker", "ports": [3000]}
        )
        assert response.status_code == 201


class TestReveal:
    def test_credentials_are_masked_except_in_the_audited_reveal(
        self, world: World, as_role: Any
    ) -> None:
        password = world.postgres.database_password
        assert password is not None
        path = f"/projects/{world.project.uid}/services/{world.postgres.pk}"
        shown = as_role("member").get(path)
        assert password.reveal() not in shown.content.decode()
        assert shown.json()["endpoints"][0]["masked"] is True
        revealed = as_role("member").send("POST", path + "/reveal")
        assert revealed.status_code == 200
        assert "no-store" in revealed["Cache-Control"]
        assert revealed.json()["password"] == password.reveal()
        assert quote(password.reveal(), safe="") in revealed.json()["endpoints"][0]["value"]
        assert AuditEvent.objects.filter(action=AuditEvent.Action.CREDENTIALS_REVEALED).count() == 1

    def test_a_web_service_has_nothing_to_reveal(self, world: World, as_role: Any) -> None:
        path = f"/projects/{world.project.uid}/services/{world.api.pk}/reveal"
        # Nothing wrong with the request: the service is not a database (409).
        problem = is_problem(as_role("member").send("POST", path), 409)
        assert problem["detail"] == "api has no credentials to reveal: only databases have them."

    def test_a_secret_value_is_revealed_to_owners_only_and_audited(
        self, world: World, as_role: Any
    ) -> None:
        path = f"/projects/{world.project.uid}/secrets/{world.secret.pk}"
        value = SharedSecret.objects.get(pk=world.secret.pk).value
        assert value is not None
        assert value.reveal() not in as_role("owner").get(path).content.decode()
        is_problem(as_role("member").send("POST", path + "/reveal"), 403)
        revealed = as_role("owner").send("POST", path + "/reveal")
        assert revealed.json()["values"] == {"INTERNAL_API_SECRET": value.reveal()}
        assert "no-store" in revealed["Cache-Control"]
        assert AuditEvent.objects.filter(action=AuditEvent.Action.SECRET_REVEALED).count() == 1


class TestSecrets:
    def test_create_with_a_given_value_and_receivers(self, world: World, as_role: Any) -> None:
        response = as_role("owner").send(
            "POST",
            f"/projects/{world.project.uid}/secrets",
            {"name": "WEBHOOK_KEY", "value": "a-pasted-value-of-24-chars", "services": ["api"]},
        )
        assert response.status_code == 201
        assert response.json()["services"] == ["api"]
        assert "a-pasted-value" not in response.content.decode()
        stored = SharedSecret.objects.get(name="WEBHOOK_KEY").value
        assert stored is not None and stored.reveal() == "a-pasted-value-of-24-chars"

    def test_rotate_starts_phase_one_and_a_second_is_a_conflict(
        self, world: World, as_role: Any
    ) -> None:
        path = f"/projects/{world.project.uid}/secrets/{world.secret.pk}"
        started = as_role("owner").send("POST", path + "/rotate")
        assert started.status_code == 202
        assert started.json()["phase"] == SharedSecret.Phase.ACCEPT_NEW
        assert [step["state"] for step in started.json()["steps"]] == [
            "current",
            "pending",
            "pending",
            "pending",
        ]
        again = is_problem(as_role("owner").send("POST", path + "/rotate"), 409)
        assert "is already being rotated" in again["detail"]
        progress = as_role("viewer").get(path + "/rotation").json()
        assert progress["rotating"] is True
        assert progress["latest"]["started_by"] == "owner via token owner-token"
        assert progress["receivers"] == [
            {"service": "api", "version": None, "has_workload": False, "rolled_out": False}
        ]

    def test_a_completed_rotation_reports_every_step_done(self, world: World, as_role: Any) -> None:
        path = f"/projects/{world.project.uid}/secrets/{world.secret.pk}/rotation"
        never = as_role("viewer").get(path).json()
        assert never["latest"] is None
        assert {step["state"] for step in never["steps"]} == {"pending"}
        started = as_role("owner").send("POST", path.removesuffix("/rotation") + "/rotate")
        assert started.status_code == 202
        # As the worker leaves it once the last phase has passed.
        SharedSecret.objects.filter(pk=world.secret.pk).update(rotation_phase="", grace_until=None)
        SecretRotation.objects.filter(secret=world.secret).update(
            result=SecretRotation.Result.COMPLETED, finished_at=timezone.now()
        )
        done = as_role("viewer").get(path).json()
        assert done["rotating"] is False and done["latest"]["result"] == "completed"
        assert {step["state"] for step in done["steps"]} == {"done"}

    def test_change_receivers(self, world: World, as_role: Any) -> None:
        path = f"/projects/{world.project.uid}/secrets/{world.secret.pk}"
        response = as_role("owner").send("PATCH", path, {"services": ["postgres"]})
        assert response.json()["services"] == ["postgres"]


class TestPeering:
    def test_an_unknown_target_is_refused_in_the_pages_words(
        self, world: World, as_role: Any
    ) -> None:
        response = as_role("owner").send(
            "POST",
            f"/projects/{world.project.uid}/peerings",
            {"target": "zzzzzzzzzzzz", "justification": "Reads orders."},
        )
        # A well-formed ID of no project it can peer with: a conflict, in the pages' words.
        assert is_problem(response, 409)["detail"].startswith(
            "No Enterprise project has the ID “zzzzzzzzzzzz”."
        )

    def test_a_token_learns_no_more_of_another_organization_than_a_stranger(
        self, world: World, as_role: Any
    ) -> None:
        """The page names the plan of a project of the person's other organization (they see
        it on their project list); a token reaches its own organization only, so it is told
        what a stranger is, even when its holder also belongs to the other one."""
        initech = Organization.objects.get(slug="initech")
        side = Project.objects.create(organization=initech, name="Side project")
        path = f"/projects/{world.project.uid}/peerings"
        payload = {"target": side.uid, "justification": "Reads orders."}
        stranger = is_problem(as_role("owner").send("POST", path, payload), 409)["detail"]
        assert stranger.startswith(f"No Enterprise project has the ID “{side.uid}”.")
        owner = world.users["owner"]
        assert owner is not None
        Membership.objects.create(user=owner, organization=initech, role="viewer")
        member = is_problem(as_role("owner").send("POST", path, payload), 409)["detail"]
        assert member == stranger

    def test_a_second_request_for_the_pair_is_a_conflict(self, world: World, as_role: Any) -> None:
        response = as_role("owner").send(
            "POST",
            f"/projects/{world.project.uid}/peerings",
            {"target": world.other_project.uid, "justification": "Reads orders."},
        )
        assert "already pending" in is_problem(response, 409)["detail"]

    def test_accept_then_list_with_history(self, world: World, as_role: Any) -> None:
        path = f"/projects/{world.project.uid}/peerings"
        accepted = as_role("owner").send("POST", f"{path}/{world.peering.pk}/accept")
        assert accepted.json()["status"] == PeeringRequest.Status.PENDING_SUPPORT
        listed = as_role("viewer").get(path).json()
        assert [entry["status"] for entry in listed[0]["history"]] == ["pending_support"]
        assert listed[0]["history"][-1]["by"] == "owner via token owner-token"


class TestPagination:
    def test_services_page_by_limit_and_offset(self, world: World, as_role: Any) -> None:
        from tests.conftest import make_service

        for number in range(7):
            make_service(world.project, f"worker {number}", Service.Kind.PRIVATE, [3000])
        path = f"/projects/{world.project.uid}/services?limit=4"
        names: list[str] = []
        offset: int | None = 0
        while offset is not None:
            page = as_role("viewer").get(path + f"&offset={offset}").json()
            assert page["count"] == 9 and len(page["items"]) <= 4
            names += [s["dns_label"] for s in page["items"]]
            offset = page["next_offset"]
        assert names == sorted(names) and len(set(names)) == 9

    def test_services_filter_by_kind_and_name(self, world: World, as_role: Any) -> None:
        base = f"/projects/{world.project.uid}/services"
        by_kind = as_role("viewer").get(base + "?kind=postgresql").json()["items"]
        by_name = as_role("viewer").get(base + "?name=API").json()["items"]
        assert [s["dns_label"] for s in by_kind] == ["postgres"]
        assert [s["dns_label"] for s in by_name] == ["api"]

    def test_the_audit_log_pages_by_cursor_without_gaps(self, world: World, as_role: Any) -> None:
        for number in range(23):
            world.project.audit(
                actor=world.users["owner"],
                action=AuditEvent.Action.SECRET_REVEALED,
                target=f"S{number}",
            )
        seen: list[int] = []
        cursor = ""
        while True:
            page = (
                as_role("viewer")
                .get(
                    f"/projects/{world.project.uid}/audit?limit=5"
                    + (f"&cursor={cursor}" if cursor else "")
                )
                .json()
            )
            seen += [event["id"] for event in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        expected = list(
            AuditEvent.objects.filter(project=world.project)
            .order_by("-created_at", "-id")
            .values_list("id", flat=True)
        )
        assert seen == expected

    def test_the_audit_log_filters(self, world: World, as_role: Any) -> None:
        as_role("member").send(
            "POST", f"/projects/{world.project.uid}/services", {"name": "worker", "ports": [1]}
        )
        events = (
            as_role("viewer")
            .get(f"/projects/{world.project.uid}/audit?who=member&what=service")
            .json()["items"]
        )
        assert [(e["actor"], e["action"]) for e in events] == [
            ("member via token member-token", "service.created")
        ]


class TestThrottling:
    def test_too_many_requests_get_429_with_retry_after(
        self, world: World, as_role: Any, settings: Any
    ) -> None:
        settings.API_THROTTLE_PER_MINUTE = 3
        api = as_role("viewer")
        statuses = [api.get("/me").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        throttled = api.get("/me")
        is_problem(throttled, 429)
        assert 1 <= int(throttled["Retry-After"]) <= 60
        # Per token: another token is not held back.
        assert as_role("member").get("/me").status_code == 200


class TestIdempotency:
    def create(self, api: Api, world: World, key: str, name: str = "Worker") -> Any:
        return api.send(
            "POST",
            f"/projects/{world.project.uid}/services",
            {"name": name, "ports": [3000]},
            **{"Idempotency-Key": key},
        )

    def test_a_retry_gets_the_first_answer_and_acts_once(self, world: World, as_role: Any) -> None:
        api = as_role("member")
        first = self.create(api, world, "create-worker-1")
        again = self.create(api, world, "create-worker-1")
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json()
        assert again["Idempotent-Replayed"] == "true"
        assert Service.objects.filter(name="worker").count() == 1
        assert AuditEvent.objects.filter(action=AuditEvent.Action.SERVICE_CREATED).count() == 1

    def test_the_same_key_for_another_request_is_refused(self, world: World, as_role: Any) -> None:
        api = as_role("member")
        self.create(api, world, "k1")
        problem = is_problem(self.create(api, world, "k1", name="Other"), 422)
        assert "already used for a different request" in problem["detail"]

    def test_a_refused_request_does_not_keep_its_key(self, world: World, as_role: Any) -> None:
        api = as_role("member")
        is_problem(self.create(api, world, "k2", name="bad!"), 422)
        Service.objects.filter(name="api").update(name="old-api")
        assert self.create(api, world, "k2", name="bad!").status_code == 422

    def test_answers_are_forgotten_after_a_day(self, world: World, as_role: Any) -> None:
        from datetime import timedelta

        from django.utils import timezone

        from api.models import IdempotencyRecord
        from api.tasks import forget_idempotency_keys

        api = as_role("member")
        self.create(api, world, "old-key")
        IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
        assert forget_idempotency_keys.apply().get() == 1
        assert not IdempotencyRecord.objects.exists()

    def test_a_revoked_token_gets_no_stored_answer(self, world: World, as_role: Any) -> None:
        from django.utils import timezone

        from api.models import ApiToken

        api = as_role("member")
        assert self.create(api, world, "before-revoke").status_code == 201
        ApiToken.objects.filter(role="member").update(revoked_at=timezone.now())
        again = self.create(api, world, "before-revoke")
        assert "was revoked" in is_problem(again, 401)["detail"]
        assert not again.has_header("Idempotent-Replayed")

    def test_a_throttled_caller_gets_no_stored_answer(
        self, world: World, as_role: Any, settings: Any
    ) -> None:
        settings.API_THROTTLE_PER_MINUTE = 1
        api = as_role("member")
        assert self.create(api, world, "throttled").status_code == 201
        again = self.create(api, world, "throttled")
        is_problem(again, 429)
        assert not again.has_header("Idempotent-Replayed")

    def test_a_key_whose_request_died_is_taken_over(self, world: World, as_role: Any) -> None:
        from datetime import timedelta

        from django.utils import timezone

        from api.idempotency import ABANDONED_AFTER
        from api.models import ApiToken, IdempotencyRecord

        api = as_role("member")
        body = json.dumps({"name": "Worker", "ports": [3000]}).encode()
        scope = f"token:{ApiToken.objects.get(name='member-token').digest}"
        digest = _request_digest("POST", f"/api/v1/projects/{world.project.uid}/services", body)
        # What a process killed mid-request leaves: the key claimed, no answer.
        IdempotencyRecord.objects.create(scope=scope, key="died", request_digest=digest)
        IdempotencyRecord.objects.update(
            created_at=timezone.now() - ABANDONED_AFTER - timedelta(seconds=1)
        )
        response = self.create(api, world, "died")
        assert response.status_code == 201, response.content
        assert not response.has_header("Idempotent-Replayed")
        assert Service.objects.filter(name="worker").count() == 1

    def test_a_signed_in_browser_posting_a_form_with_a_key_gets_an_answer(
        self, world: World
    ) -> None:
        """The session's CSRF check parses a form body: the key's digest was read before."""
        member = world.users["member"]
        assert member is not None
        client = Client(enforce_csrf_checks=True)
        client.force_login(member)
        client.get(reverse("project-overview", args=[world.project.uid]))  # the CSRF cookie
        response = client.post(
            f"/api/v1/projects/{world.project.uid}/services",
            # Multipart, as a form sends it, with the form's CSRF field.
            {"name": "Worker", "csrfmiddlewaretoken": client.cookies["csrftoken"].value},
            headers={"Idempotency-Key": "form-post"},
        )
        assert response.status_code < 500
        is_problem(response, response.status_code)

    def test_keys_are_per_caller(self, world: World, as_role: Any) -> None:
        self.create(as_role("member"), world, "shared")
        other = self.create(as_role("owner"), world, "shared")
        assert other.status_code == 409  # acted (and found the name taken): not a replay
        assert not other.has_header("Idempotent-Replayed")


class TestDocument:
    def test_the_openapi_document_describes_errors_idempotency_and_links(
        self, client: Client
    ) -> None:
        schema = client.get("/api/v1/openapi.json").json()
        assert schema["openapi"].startswith("3.")
        create = schema["paths"]["/api/v1/projects/{project_id}/services"]["post"]
        assert "application/problem+json" in create["responses"]["422"]["content"]
        assert "Retry-After" in create["responses"]["429"]["headers"]
        assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
        assert set(create["responses"]["201"]["links"]) == {
            "GetService",
            "UpdateService",
            "DeleteService",
        }
        reveal = schema["paths"]["/api/v1/projects/{project_id}/secrets/{secret_id}/reveal"]
        assert not any(p["name"] == "Idempotency-Key" for p in reveal["post"].get("parameters", []))

    def test_the_docs_page_uses_only_our_own_static_files(self, client: Client) -> None:
        page = client.get("/api/v1/docs").content.decode()
        assert "/static/ninja/swagger-ui-bundle.js" in page
        assert "cdn" not in page.lower() and "https://" not in page


def test_projects_list_and_sync(world: World, as_role: Any) -> None:
    listed = as_role("viewer").get("/projects").json()
    assert [(p["name"], p["role"]) for p in listed] == [("Storefront", "viewer")]
    sync = as_role("viewer").get(f"/projects/{world.project.uid}/sync").json()
    assert sync["state"] == Project.SyncState.QUEUED and sync["attempts"] == []
    retried = as_role("member").send("POST", f"/projects/{world.project.uid}/sync/retry")
    assert retried.status_code == 202
