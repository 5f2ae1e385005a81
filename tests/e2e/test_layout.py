"""The pages work on a phone and a desktop, by keyboard, with labelled controls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from playwright.sync_api import Page

from api.models import ApiToken
from networking import references
from networking.models import Membership, ServiceAlias
from tests.browser import DESKTOP, PHONE
from tests.conftest import World

SignIn = Callable[[str], Page]
Screenshot = Callable[[Page, str], Path]


def pages(world: World) -> dict[str, str]:
    uid = world.project.uid
    return {
        "projects": reverse("project-list"),
        "overview": reverse("project-overview", args=[uid]),
        "network": reverse("project-network", args=[uid]),
        "service": reverse("service-detail", args=[uid, world.postgres.pk]),
        "new-service": reverse("service-create", args=[uid]),
        "sync": reverse("project-sync", args=[uid]),
        "audit": reverse("audit-log", args=[uid]),
        "settings": reverse("project-settings", args=[uid]),
        "secrets": reverse("secret-list", args=[uid]),
        "secret": reverse("secret-detail", args=[uid, world.secret.pk]),
        "new-secret": reverse("secret-create", args=[uid]),
        "peering": reverse("project-peering", args=[uid]),
    }


def test_no_page_scrolls_sideways_on_a_desktop(world: World, sign_in: SignIn) -> None:
    page = sign_in("owner")
    page.set_viewport_size(DESKTOP)  # type: ignore[arg-type]
    for name, url in pages(world).items():
        page.goto(url)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} is {overflow}px wider than the screen"


# Not pages: the API (its own tests), a CSV download, and parts htmx asks for inside a page.
# An address only a button posts to is measured too: a GET gets the "Nothing to show here" page.
NOT_PAGES = {
    "audit-log-csv",
    "service-name-preview",
    "service-choices",
    "project-live",
    "notifications-live",
}


# The README's phone screenshots, taken on the way.
PHONE_SCREENSHOTS = {
    "project-overview": "overview",
    "service-detail": "service",
    "org-tokens": "tokens",
    "secret-detail": "secret",
}


def named_urls(
    patterns: list[URLPattern | URLResolver] | None = None, keys: tuple[str, ...] = ()
) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every named URL of the dashboard with the arguments it takes: the whole URL map, so a
    page added later is measured with no change here."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        converters = tuple(getattr(entry.pattern, "converters", {}))
        if isinstance(entry, URLResolver):
            if entry.namespace is None:  # the API is a namespace of its own
                yield from named_urls(entry.url_patterns, keys + converters)
        elif entry.name and entry.name not in NOT_PAGES:
            yield entry.name, keys + converters


def every_page(world: World) -> list[tuple[str, str]]:
    """(name, URL) for every page, each filled with a real object of the world: a token, a
    reference, an old hostname, a member exist, so their rows are drawn too."""
    owner, viewer = world.users["owner"], world.users["viewer"]
    assert owner is not None and viewer is not None
    tokens = {
        user: ApiToken.issue(
            user=user,
            organization=world.acme,
            name=f"deploys-from-ci-{user.get_username()}",
            role=role,
            expires_at=None,
        )[0]
        for user, role in ((owner, "owner"), (viewer, "viewer"))
    }
    reference = references.add(world.postgres, [world.api], "", actor=None)[0]
    alias = ServiceAlias.objects.create(
        project=world.project,
        service=world.api,
        name="api-gateway-before-the-rename",
        expires_at=world.project.created_at + timedelta(days=3650),
    )
    arguments: dict[str, Any] = {
        "project_uid": world.project.uid,
        "org_slug": world.acme.slug,
        "service_id": world.api.pk,
        "secret_id": world.secret.pk,
        "peering_id": world.peering.pk,
        "reference_id": reference.pk,
        "alias_id": alias.pk,
        "membership_id": Membership.objects.get(user=viewer, organization=world.acme).pk,
        "token_id": tokens[viewer].pk,
    }
    return [
        (name, reverse(name, kwargs={key: arguments[key] for key in keys}))
        for name, keys in named_urls()
    ]


@pytest.mark.parametrize("role", ["owner", "member", "viewer", "support", "outsider"])
def test_no_page_of_the_product_is_wider_than_a_phone(
    world: World, sign_in: SignIn, screenshot: Screenshot, role: str
) -> None:
    """Every URL of the URL map, as each role, at 390 px: what the role may see, and the
    refusals and not-found pages of what it may not."""
    urls = every_page(world)
    page = sign_in(role)
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    measured, wider = [], []
    for name, url in urls:
        response = page.goto(url)
        assert response is not None
        assert "text/html" in response.headers.get("content-type", ""), (name, url)
        measured.append(name)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        if overflow > 0:
            wider.append(f"{name} ({url}, {response.status}) is {overflow}px wider")
        if role == "owner" and name in PHONE_SCREENSHOTS:
            screenshot(page, f"phone-{PHONE_SCREENSHOTS[name]}")
    assert wider == []
    # The pages every role reaches (or is refused), and a button's address, were all measured.
    assert {"project-list", "project-overview", "secret-detail", "org-tokens", "logout"} <= set(
        measured
    )


def test_every_control_has_a_label(world: World, sign_in: SignIn) -> None:
    page = sign_in("owner")
    unlabelled_script = """
    () => [...document.querySelectorAll(
        'input:not([type=hidden]), select, textarea, button, a[href]')]
      .filter(el => {
        const labelled = (el.labels && el.labels.length) || el.getAttribute('aria-label')
          || el.getAttribute('aria-labelledby') || (el.textContent || '').trim();
        return !labelled;
      })
      .map(el => el.outerHTML.slice(0, 120))
    """
    for name, url in pages(world).items():
        page.goto(url)
        assert page.evaluate(unlabelled_script) == [], name


def test_keyboard_focus_is_visible(world: World, sign_in: SignIn) -> None:
    page = sign_in("owner")
    page.goto(reverse("service-create", args=[world.project.uid]))
    page.keyboard.press("Tab")
    for _ in range(12):
        page.keyboard.press("Tab")
        style = page.evaluate(
            """() => { const s = getComputedStyle(document.activeElement);
                       return {shadow: s.boxShadow, outline: s.outlineStyle,
                               tag: document.activeElement.tagName}; }"""
        )
        if style["tag"] == "BODY":
            continue
        assert style["shadow"] != "none" or style["outline"] != "none", style
