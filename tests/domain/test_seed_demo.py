from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from networking import mtls, passes
from networking.models import (
    AuditEvent,
    CertificateAuthority,
    Membership,
    Organization,
    PeeringRequest,
    Project,
    ReferenceVariable,
    Service,
)


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_creates_the_specs_examples_and_prints_logins() -> None:
    output = seed()
    storefront = Project.objects.get(name="Storefront")
    assert storefront.organization.plan == Organization.Plan.ENTERPRISE
    services = {s.name: (s.kind, s.ports) for s in storefront.services.all()}
    assert services == {
        "api": ("web", [8080]),
        "postgres": ("postgresql", [5432]),
        "cache": ("redis", [6379]),
        "background-worker": ("private", [3000]),
    }
    assert Project.objects.filter(organization__slug="globex").exists()
    for username in ("owner", "member", "viewer", "globex-owner", "initech-owner", "support"):
        assert username in output
    assert "outsider" in output
    assert User.objects.get(username="support").is_staff
    assert not Membership.objects.filter(user__username__in=["support", "outsider"]).exists()


@pytest.mark.django_db
def test_it_is_idempotent() -> None:
    seed()

    def counts() -> tuple[int, ...]:
        return (
            User.objects.count(),
            Project.objects.count(),
            Service.objects.count(),
            PeeringRequest.objects.count(),
            ReferenceVariable.objects.count(),
            CertificateAuthority.objects.count(),
            AuditEvent.objects.count(),
        )

    before = counts()
    seed()
    assert counts() == before


@pytest.mark.django_db
def test_the_demo_has_a_peering_to_draw_and_a_database_wired_in() -> None:
    seed()
    peering = PeeringRequest.objects.get()
    assert {peering.requester_project.name, peering.target_project.name} == {
        "Storefront",
        "Data Platform",
    }
    assert peering.status == PeeringRequest.Status.APPROVED  # the worker connects it
    wired = ReferenceVariable.objects.get()
    assert (wired.source.name, wired.consumer.name, wired.variable) == (
        "postgres",
        "api",
        "DATABASE_URL",
    )


@pytest.mark.django_db
def test_storefront_has_mutual_tls_with_postgres_taking_calls_from_api_alone() -> None:
    seed()
    storefront = Project.objects.get(name="Storefront")
    assert mtls.state_of(storefront) is not None
    postgres = storefront.services.get(name="postgres")
    assert mtls.callers_of([postgres]) == {postgres.pk: ["api"]}
    assert mtls.state_of(Project.objects.get(name="Payments")) is None


@pytest.mark.django_db
def test_a_printed_login_works_and_sees_only_its_organization() -> None:
    output = seed()
    password = output.split("password for all: ")[1].split(")")[0]
    client = Client()
    response = client.post(
        "/accounts/login/", {"username": "owner", "password": password}, follow=True
    )
    html = response.content.decode()
    assert "Storefront" in html and "Analytics" not in html


def sign_in(username: str, output: str) -> Client:
    """A browser signed in with the printed login."""
    password = output.split("password for all: ")[1].split(")")[0]
    client = Client()
    response = client.post("/accounts/login/", {"username": username, "password": password})
    assert response.status_code == 302, username
    return client


@pytest.mark.django_db
def test_the_demo_walks_a_peering_across_organizations_from_request_to_revoked(
    manifests: Any,
) -> None:
    """With only the demo data, a newcomer can see the whole path: Acme requests, Initech
    (the other Enterprise customer) accepts, support approves, the worker connects both, and
    either side revokes."""
    seed()
    output = seed()  # twice: the demo is seeded again on every `make run`
    initech = Organization.objects.get(slug="initech")
    assert initech.plan == Organization.Plan.ENTERPRISE
    payments = Project.objects.get(organization=initech, name="Payments")
    assert set(payments.services.values_list("name", flat=True)) == {"gateway", "ledger"}
    assert Membership.objects.get(user__username="initech-owner").organization == initech
    storefront = Project.objects.get(name="Storefront")

    owner = sign_in("owner", output)
    response = owner.post(
        reverse("peering-request", args=[storefront.uid]),
        {"target": payments.uid, "justification": "Checkout charges cards through Payments."},
        follow=True,
    )
    assert "Waiting for the other organization" in response.content.decode()
    request = PeeringRequest.objects.get(target_project=payments)

    other = sign_in("initech-owner", output)
    page = other.get(reverse("project-peering", args=[payments.uid])).content.decode()
    assert "Checkout charges cards through Payments." in page and ">Accept<" in page
    other.post(reverse("peering-accept", args=[payments.uid, request.pk]))
    request.refresh_from_db()
    assert request.status == PeeringRequest.Status.PENDING_SUPPORT

    support = sign_in("support", output)
    assert "Storefront ↔ Payments" in support.get(reverse("support-queue")).content.decode()
    support.post(reverse("support-approve", args=[request.pk]))
    request.refresh_from_db()
    assert request.status == PeeringRequest.Status.APPROVED

    for project in (storefront, payments):  # what the worker does next
        passes.reconcile(project.pk)
    request.refresh_from_db()
    assert request.status == PeeringRequest.Status.ACTIVE
    page = owner.get(reverse("project-peering", args=[storefront.uid])).content.decode()
    assert f"gateway.{payments.namespace}.svc.cluster.local:8080" in page

    other.post(reverse("peering-revoke", args=[payments.uid, request.pk]), {"confirm": "revoke"})
    for project in (storefront, payments):
        passes.reconcile(project.pk)
    request.refresh_from_db()
    assert request.status == PeeringRequest.Status.REVOKED


@pytest.mark.django_db
def test_globex_stays_on_pro_so_the_plan_refusal_can_be_seen_too() -> None:
    output = seed()
    globex = Organization.objects.get(slug="globex")
    assert globex.plan == Organization.Plan.PRO
    analytics = Project.objects.get(organization=globex)
    storefront = Project.objects.get(name="Storefront")
    response = sign_in("owner", output).post(
        reverse("peering-request", args=[storefront.uid]),
        {"target": analytics.uid, "justification": "Reads stock levels."},
    )
    assert "No Enterprise project has the ID" in response.content.decode()
