from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from networking.models import (
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
    for username in ("owner", "member", "viewer", "support", "outsider"):
        assert username in output
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
def test_a_printed_login_works_and_sees_only_its_organization() -> None:
    output = seed()
    password = output.split("password for all: ")[1].split(")")[0]
    client = Client()
    response = client.post(
        "/accounts/login/", {"username": "owner", "password": password}, follow=True
    )
    html = response.content.decode()
    assert "Storefront" in html and "Analytics" not in html
