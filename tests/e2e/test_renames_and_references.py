"""A rename that breaks nobody and a connection string wired into a service, in a browser."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from django.urls import reverse
from playwright.sync_api import Page, expect

from networking.models import ReferenceVariable, ServiceAlias
from tests.conftest import World

SignIn = Callable[[str], Page]
Screenshot = Callable[[Page, str], Path]


def test_a_rename_keeps_the_old_hostname_and_says_until_when(
    world: World, sign_in: SignIn, screenshot: Screenshot
) -> None:
    page = sign_in("owner")
    page.goto(reverse("service-edit", args=[world.project.uid, world.api.pk]))
    name = page.get_by_label("Name", exact=True)
    name.fill("")
    name.press_sequentially("Gateway", delay=20)
    expect(page.locator("#name-preview")).to_contain_text(
        "api.internal keeps resolving only for the time chosen below"
    )
    keep = page.get_by_label(re.compile("keep the old hostname resolving for"))
    expect(keep).to_have_value("86400")  # 24 hours unless chosen otherwise
    keep.select_option(label="7 days")
    page.get_by_role("button", name="Save changes").click()

    expect(page.get_by_role("heading", name="Gateway", exact=True)).to_be_visible()
    old = page.locator("#old-hostnames")
    expect(old).to_contain_text("api.internal still resolves to this service until")
    alias = ServiceAlias.objects.get(service=world.api)
    expect(old).to_contain_text(f"{alias.expires_at:%Y-%m-%d %H:%M}")
    screenshot(page, "renamed-old-hostname")

    page.get_by_role("link", name="Services", exact=True).click()
    expect(page.locator(f"#service-{world.api.pk}")).to_contain_text("api.internal still resolves")


def test_a_database_is_wired_into_a_service_from_its_page(
    world: World, sign_in: SignIn, screenshot: Screenshot
) -> None:
    page = sign_in("member")
    page.goto(reverse("service-detail", args=[world.project.uid, world.postgres.pk]))
    form = page.locator("form.reference-form")
    expect(form.get_by_label("Variable name")).to_have_attribute("placeholder", "DATABASE_URL")
    form.get_by_role("checkbox", name="api (api.internal)").check()
    form.get_by_role("button", name="Give it to them").click()
    expect(page.locator(".messages")).to_contain_text("address goes to api as DATABASE_URL")
    expect(page.locator("#references")).to_contain_text("api as DATABASE_URL")
    assert ReferenceVariable.objects.filter(consumer=world.api, variable="DATABASE_URL").exists()
    screenshot(page, "database-used-by")

    page.get_by_role("link", name="api", exact=True).click()
    expect(page.locator("#references")).to_contain_text(
        "DATABASE_URL: the connection string of postgres"
    )


def test_in_a_large_project_the_consumers_are_found_by_search_and_stay_chosen(
    world: World, sign_in: SignIn, screenshot: Screenshot
) -> None:
    """Past 30 services the form searches instead of listing every service: type, tick, type
    something else, tick again; both receive the connection string."""
    from tests.pages.test_project_size import grow

    grow(world.project, 60)
    page = sign_in("owner")
    page.goto(reverse("service-detail", args=[world.project.uid, world.postgres.pk]))
    search = page.get_by_label("Find a service")
    choices = page.locator("#picker-consumers-matches")
    search.fill("filler 42")
    expect(choices.get_by_role("checkbox", name=re.compile(r"^filler 42 "))).to_be_visible()
    choices.get_by_role("checkbox", name=re.compile(r"^filler 42 ")).check()
    search.fill("api")
    expect(choices.get_by_role("checkbox", name=re.compile(r"^api "))).to_be_visible()
    expect(choices.get_by_role("checkbox", name=re.compile(r"^filler 42 "))).to_be_checked()  # kept
    choices.get_by_role("checkbox", name=re.compile(r"^api ")).check()
    screenshot(page, "large-project-consumer-search")
    page.get_by_role("button", name="Give it to them").click()
    expect(page.locator("#references")).to_contain_text("filler-42")
    consumers = ReferenceVariable.objects.filter(source=world.postgres).values_list(
        "consumer__name", flat=True
    )
    assert sorted(consumers) == ["api", "filler-42"]
