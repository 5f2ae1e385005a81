"""Mutual TLS over the API: its state, turning it on, rotating the CA and who may call whom,
with the dashboard's rules (owners change it, every role reads it, another organization's
project is not found) and never a private key in an answer."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from django.conf import settings
from django.utils import timezone

from networking import mtls
from networking.models import (
    AuditEvent,
    CertificateAuthority,
    MutualTLS,
    Project,
    Service,
    ServiceCertificate,
)
from networking.passes import reconcile
from tests.api.test_api import Api, is_problem
from tests.conftest import World, issue_token, make_service, user


@pytest.fixture
def as_role(api_tokens: dict[str, str | None]) -> Any:
    return lambda role: Api(api_tokens[role])


def _path(world: World, rest: str = "") -> str:
    return f"/projects/{world.project.uid}/mtls{rest}"


def _callers_path(world: World, service: Service) -> str:
    return f"/projects/{world.project.uid}/services/{service.pk}/callers"


def _pass(project: Project) -> None:
    """What the worker does next: issue the certificates and write the project's files."""
    assert reconcile(project.pk).status in ("applied", "in_sync")


def _finish_phase(project: Project) -> None:
    """The CA rotation's current phase applied, and its files given time to reach every pod."""
    planned = mtls.planned(project)
    assert planned is not None
    now = timezone.now()
    mtls.after_apply(project, planned, now=now)
    later = now + timedelta(seconds=settings.MTLS_PROPAGATION_SECONDS + 1)
    mtls.after_apply(project, planned, now=later)


def _steps(state: dict[str, Any]) -> list[str]:
    return [step["state"] for step in state["rotation"]["steps"]]


class TestReading:
    def test_a_project_without_it_reads_as_off_with_nothing_listed(
        self, world: World, as_role: Any
    ) -> None:
        response = as_role("viewer").get(_path(world))
        assert response.status_code == 200
        state = response.json()
        assert state["enabled"] is False
        assert state["enabled_at"] is None and state["enabled_by"] is None
        assert state["authorities"] == [] and state["certificates"] == []
        assert state["pending"] == 0
        assert state["rotation"]["rotating"] is False
        assert _steps(state) == ["pending", "pending", "pending"]

    @pytest.mark.parametrize("role", ["viewer", "member", "owner"])
    def test_every_role_reads_the_certificates(
        self, world: World, as_role: Any, role: str, manifests: Path
    ) -> None:
        mtls.enable(world.project, actor=user(world, "owner"))
        _pass(world.project)
        state = as_role(role).get(_path(world)).json()
        assert [certificate["service"] for certificate in state["certificates"]] == [
            "api",
            "postgres",
        ]

    @pytest.mark.parametrize("role", ["anonymous", "outsider", "support"])
    def test_nobody_else_reads_it(self, world: World, as_role: Any, role: str) -> None:
        mtls.enable(world.project, actor=user(world, "owner"))
        status = 401 if role == "anonymous" else 404
        is_problem(as_role(role).get(_path(world)), status)
        is_problem(as_role(role).get(_callers_path(world, world.api)), status)

    def test_another_organizations_project_is_not_found(self, world: World, as_role: Any) -> None:
        mtls.enable(world.other_project, actor=None)
        other = f"/projects/{world.other_project.uid}"
        is_problem(as_role("owner").get(other + "/mtls"), 404)
        is_problem(as_role("owner").send("POST", other + "/mtls/rotate-ca"), 404)
        is_problem(as_role("owner").get(f"{other}/services/{world.other_service.pk}/callers"), 404)
        # Another project's service under this project's ID: not found either.
        is_problem(as_role("owner").get(_callers_path(world, world.other_service)), 404)
        assert MutualTLS.objects.get(project=world.other_project).rotation_phase == ""


class TestTurningItOn:
    def test_an_owner_turns_it_on_and_a_second_time_finds_it_on(
        self, world: World, as_role: Any
    ) -> None:
        generation = world.project.generation
        first = as_role("owner").send("POST", _path(world))
        assert first.status_code == 201, first.content
        state = first.json()
        assert state["enabled"] is True
        assert state["enabled_by"] == "owner via token owner-token"
        assert state["certificate_hours"] == settings.MTLS_CERTIFICATE_HOURS
        assert [authority["generation"] for authority in state["authorities"]] == [1]
        assert state["authorities"][0]["trusted"] is True
        # The worker issues the certificates on its next pass: both services wait for one.
        assert state["certificates"] == [] and state["pending"] == 2
        world.project.refresh_from_db()
        assert world.project.generation == generation + 1  # a pass is due

        again = as_role("owner").send("POST", _path(world))
        assert again.status_code == 200, again.content
        assert again.json()["enabled_at"] == state["enabled_at"]
        assert CertificateAuthority.objects.filter(project=world.project).count() == 1
        assert AuditEvent.objects.filter(action=AuditEvent.Action.MTLS_ENABLED).count() == 1

    def test_a_retry_with_the_same_key_gets_the_first_answer(
        self, world: World, as_role: Any
    ) -> None:
        owner = as_role("owner")
        first = owner.send("POST", _path(world), **{"Idempotency-Key": "enable-1"})
        retry = owner.send("POST", _path(world), **{"Idempotency-Key": "enable-1"})
        assert first.status_code == retry.status_code == 201
        assert retry["Idempotent-Replayed"] == "true"
        assert retry.json() == first.json()
        assert AuditEvent.objects.filter(action=AuditEvent.Action.MTLS_ENABLED).count() == 1

    @pytest.mark.parametrize("role", ["viewer", "member"])
    def test_only_owners_turn_it_on(self, world: World, as_role: Any, role: str) -> None:
        problem = is_problem(as_role(role).send("POST", _path(world)), 403)
        assert "role" in problem["detail"]
        assert not MutualTLS.objects.filter(project=world.project).exists()

    def test_an_owners_viewer_token_only_reads(self, world: World) -> None:
        token = issue_token(user(world, "owner"), world.acme, "viewer", "read-only")
        api = Api(token)
        assert api.get(_path(world)).status_code == 200
        is_problem(api.send("POST", _path(world)), 403)
        is_problem(api.send("PUT", _callers_path(world, world.api), {"any": True}), 403)
        assert not MutualTLS.objects.filter(project=world.project).exists()

    def test_too_many_services_is_refused_saying_why(
        self, world: World, as_role: Any, settings: Any
    ) -> None:
        settings.MTLS_MAX_SERVICES = 1
        problem = is_problem(as_role("owner").send("POST", _path(world)), 409)
        assert problem["detail"] == (
            "Mutual TLS is available for projects of up to 1 services; this one has 2. Split it "
            "into projects, or contact support."
        )
        assert not MutualTLS.objects.filter(project=world.project).exists()

    def test_with_the_broker_down_it_is_on_and_the_worker_catches_up_later(
        self,
        transactional_db: None,
        world: World,
        as_role: Any,
        broker_down: None,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        response = as_role("owner").send("POST", _path(world))
        assert response.status_code == 201, response.content
        assert MutualTLS.objects.filter(project=world.project).exists()
        assert "Worker queue unreachable" in caplog.text
        sync = as_role("owner").get(f"/projects/{world.project.uid}/sync").json()
        assert sync["generation"] > sync["applied_generation"]


class TestCertificates:
    def test_each_service_has_its_identity_and_hostnames_after_a_pass(
        self, world: World, as_role: Any, manifests: Path
    ) -> None:
        mtls.enable(world.project, actor=user(world, "owner"))
        _pass(world.project)
        state = as_role("viewer").get(_path(world)).json()
        assert state["pending"] == 0
        api = state["certificates"][0]
        assert api["service"] == "api"
        assert api["identity"] == (
            f"spiffe://stackblaze.cloud/project/{world.project.uid}/service/api"
        )
        assert api["hostnames"] == ["api.internal"]
        assert api["authority"] == 1
        stored = ServiceCertificate.objects.get(service=world.api)
        assert api["serial"] == stored.serial
        assert api["not_after"].startswith(f"{stored.not_after:%Y-%m-%dT%H:%M}")
        # The CA's certificate is the public one every service's ca.pem holds.
        ca = x509.load_pem_x509_certificate(state["authorities"][0]["certificate"].encode())
        assert stored.authority.certificate == state["authorities"][0]["certificate"]
        assert ca.subject == x509.load_pem_x509_certificate(stored.certificate.encode()).issuer

    def test_a_new_service_waits_for_its_certificate(
        self, world: World, as_role: Any, manifests: Path
    ) -> None:
        mtls.enable(world.project, actor=user(world, "owner"))
        _pass(world.project)
        make_service(world.project, "worker", Service.Kind.PRIVATE, [3000])
        assert as_role("viewer").get(_path(world)).json()["pending"] == 1


def _key_lines(world: World) -> list[str]:
    """Lines of every private key the project has (its CA's, its services'), sealed in the
    database: none may appear in an answer."""
    keys = [
        authority.key.reveal()
        for authority in CertificateAuthority.objects.filter(project=world.project)
        if authority.key is not None
    ]
    keys += [row.key.reveal() for row in ServiceCertificate.objects.all() if row.key is not None]
    assert keys
    # Whole base64 lines of 64 characters: a short last line could turn up anywhere by chance.
    lines = [line for key in keys for line in key.splitlines() if len(line) == 64]
    assert len(lines) >= 2 * len(keys)
    return lines


def test_no_answer_ever_holds_a_private_key(world: World, as_role: Any, manifests: Path) -> None:
    owner = as_role("owner")
    answers = [owner.send("POST", _path(world))]
    _pass(world.project)
    answers += [
        owner.get(_path(world)),
        as_role("viewer").get(_path(world)),
        owner.send("POST", _path(world, "/rotate-ca")),
        owner.send("PUT", _callers_path(world, world.api), {"any": False, "callers": ["api"]}),
        owner.get(_callers_path(world, world.api)),
        owner.get(f"/projects/{world.project.uid}/services/{world.api.pk}"),
        owner.get(f"/projects/{world.project.uid}/audit"),
    ]
    _pass(world.project)  # the rotation's first phase: both CAs' certificates are out
    answers.append(owner.get(_path(world)))
    lines = _key_lines(world)
    for answer in answers:
        assert answer.status_code < 300, answer.content
        body = answer.content.decode()
        assert "PRIVATE KEY" not in body
        assert not any(line in body for line in lines)
    # The negative control: the certificates are there, and the same check finds a key.
    assert "BEGIN CERTIFICATE" in answers[-1].content.decode()
    some_key = CertificateAuthority.objects.filter(project=world.project).first()
    assert some_key is not None and some_key.key is not None
    assert "PRIVATE KEY" in some_key.key.reveal()


class TestRotatingTheCA:
    def test_it_is_refused_while_mtls_is_off(self, world: World, as_role: Any) -> None:
        problem = is_problem(as_role("owner").send("POST", _path(world, "/rotate-ca")), 409)
        assert problem["detail"] == "Mutual TLS is off for this project: turn it on first."
        assert not CertificateAuthority.objects.filter(project=world.project).exists()

    @pytest.mark.parametrize("role", ["viewer", "member"])
    def test_only_owners_rotate(self, world: World, as_role: Any, role: str) -> None:
        mtls.enable(world.project, actor=user(world, "owner"))
        is_problem(as_role(role).send("POST", _path(world, "/rotate-ca")), 403)
        assert MutualTLS.objects.get(project=world.project).rotating is False

    def test_an_owner_rotates_it_through_its_three_phases(
        self, world: World, as_role: Any, manifests: Path
    ) -> None:
        mtls.enable(world.project, actor=user(world, "owner"))
        _pass(world.project)
        started = as_role("owner").send("POST", _path(world, "/rotate-ca"))
        assert started.status_code == 202, started.content
        state = started.json()
        assert state["rotation"]["rotating"] is True
        assert state["rotation"]["phase"] == "trust_new"
        assert state["rotation"]["phase_label"] == (
            "Every service trusts the new CA beside the old"
        )
        assert _steps(state) == ["current", "pending", "pending"]
        assert [step["title"] for step in state["rotation"]["steps"]] == [
            "Trust the new CA",
            "Issue from the new CA",
            "Retire the old CA",
        ]
        assert [(ca["generation"], ca["trusted"]) for ca in state["authorities"]] == [
            (1, True),
            (2, True),
        ]
        again = is_problem(as_role("owner").send("POST", _path(world, "/rotate-ca")), 409)
        assert "already being rotated" in again["detail"]
        assert CertificateAuthority.objects.filter(project=world.project).count() == 2

        _finish_phase(world.project)  # every service trusts both: certificates from the new
        _pass(world.project)
        state = as_role("viewer").get(_path(world)).json()
        assert _steps(state) == ["done", "current", "pending"]
        assert {certificate["authority"] for certificate in state["certificates"]} == {2}

        _finish_phase(world.project)  # nobody presents the old one: it leaves every ca.pem
        state = as_role("viewer").get(_path(world)).json()
        assert _steps(state) == ["done", "done", "current"]
        first, second = state["authorities"]
        assert first["trusted"] is False and first["retired_at"] is None  # on its way out
        assert second["trusted"] is True

        _pass(world.project)
        _finish_phase(world.project)
        state = as_role("viewer").get(_path(world)).json()
        assert state["rotation"]["rotating"] is False and state["rotation"]["phase"] == ""
        assert state["rotation"]["last_rotated_at"] is not None
        assert _steps(state) == ["done", "done", "done"]
        first, second = state["authorities"]
        assert first["trusted"] is False and first["retired_at"] is not None  # gone everywhere
        # Done: another may start.
        assert as_role("owner").send("POST", _path(world, "/rotate-ca")).status_code == 202


class TestCallers:
    def test_every_service_may_call_by_default(self, world: World, as_role: Any) -> None:
        response = as_role("viewer").get(_callers_path(world, world.api))
        assert response.status_code == 200
        assert response.json() == {"any": True, "callers": []}

    def test_an_owner_restricts_and_opens_them_again(self, world: World, as_role: Any) -> None:
        worker = make_service(world.project, "worker", Service.Kind.PRIVATE, [3000])
        path = _callers_path(world, world.postgres)
        restricted = as_role("owner").send(
            "PUT", path, {"any": False, "callers": ["worker", "api", "api"]}
        )
        assert restricted.status_code == 200, restricted.content
        assert restricted.json() == {"any": False, "callers": ["api", "worker"]}
        assert as_role("viewer").get(path).json() == {"any": False, "callers": ["api", "worker"]}
        world.postgres.refresh_from_db()
        assert world.postgres.accepts_any_caller is False
        assert set(world.postgres.accepts_calls_from.all()) == {world.api, worker}
        event = AuditEvent.objects.get(action=AuditEvent.Action.MTLS_CALLERS_CHANGED)
        assert event.target == "postgres" and event.details["callers"] == ["api", "worker"]

        # Nobody at all is refused, as on the page: every call to it would be.
        nobody = is_problem(as_role("owner").send("PUT", path, {"any": False, "callers": []}), 409)
        assert nobody["detail"].startswith("Choose the services that may call postgres")
        assert as_role("viewer").get(path).json() == {"any": False, "callers": ["api", "worker"]}
        opened = as_role("owner").send("PUT", path, {"any": True})
        assert opened.json() == {"any": True, "callers": []}
        world.postgres.refresh_from_db()
        assert world.postgres.accepts_any_caller is True
        assert not world.postgres.accepts_calls_from.exists()

    def test_the_same_choice_again_changes_nothing(self, world: World, as_role: Any) -> None:
        path = _callers_path(world, world.postgres)
        body = {"any": False, "callers": ["api"]}
        as_role("owner").send("PUT", path, body)
        generation = Project.objects.get(pk=world.project.pk).generation
        assert as_role("owner").send("PUT", path, body).json() == {"any": False, "callers": ["api"]}
        assert Project.objects.get(pk=world.project.pk).generation == generation
        assert AuditEvent.objects.filter(action=AuditEvent.Action.MTLS_CALLERS_CHANGED).count() == 1

    @pytest.mark.parametrize("role", ["viewer", "member"])
    def test_only_owners_choose(self, world: World, as_role: Any, role: str) -> None:
        path = _callers_path(world, world.postgres)
        is_problem(as_role(role).send("PUT", path, {"any": False, "callers": ["api"]}), 403)
        world.postgres.refresh_from_db()
        assert world.postgres.accepts_any_caller is True

    def test_callers_that_would_outgrow_the_secret_are_a_conflict(
        self, world: World, as_role: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(mtls, "SECRET_BUDGET", mtls.projected_size(world.project) + 10)
        path = _callers_path(world, world.postgres)
        problem = is_problem(
            as_role("owner").send("PUT", path, {"any": False, "callers": ["api"]}), 409
        )
        assert problem["detail"].startswith("postgres cannot accept 1 named callers")
        assert problem["errors"]["callers"] == [problem["detail"]]
        world.postgres.refresh_from_db()
        assert world.postgres.accepts_any_caller is True

    def test_a_service_the_project_does_not_have_is_named(self, world: World, as_role: Any) -> None:
        path = _callers_path(world, world.postgres)
        problem = is_problem(
            as_role("owner").send("PUT", path, {"any": False, "callers": ["api", "warehouse"]}),
            409,
        )
        # warehouse is a service of another organization's project: not one of this project's.
        assert problem["detail"] == "This project has no service named “warehouse”."
        assert problem["errors"]["callers"][0].startswith(
            "This project has no service named “warehouse”. Use the services’ DNS labels"
        )
        world.postgres.refresh_from_db()
        assert world.postgres.accepts_any_caller is True

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"any": True, "callers": ["api"]}, "callers"),
            ({"callers": ["api"]}, "any"),
            ({"any": "false", "callers": ["api"]}, "any"),
            ({"any": 0}, "any"),
            ({"any": False, "callers": "api"}, "callers"),
            ({"any": False, "callers": ["Background Worker"]}, "callers"),
            ({"any": False, "callers": ["api"] * 201}, "callers"),
        ],
    )
    def test_a_malformed_body_is_refused(
        self, world: World, as_role: Any, body: dict[str, Any], field: str
    ) -> None:
        path = _callers_path(world, world.postgres)
        problem = is_problem(as_role("owner").send("PUT", path, body), 422)
        assert field in problem["errors"], problem
        world.postgres.refresh_from_db()
        assert world.postgres.accepts_any_caller is True
        assert not AuditEvent.objects.filter(action=AuditEvent.Action.MTLS_CALLERS_CHANGED)

    def test_a_body_that_is_not_an_object_is_refused(self, world: World, as_role: Any) -> None:
        path = _callers_path(world, world.postgres)
        is_problem(as_role("owner").send("PUT", path, "[true]"), 422)
        is_problem(as_role("owner").send("PUT", path, "{not json"), 400)
