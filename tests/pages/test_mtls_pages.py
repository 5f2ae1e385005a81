"""The Mutual TLS pages: the project's page (turning it on, its certificates and CAs, a CA
rotation followed live), a service's "Mutual TLS" section and who may call it, and the Network
page's list of who may call whom. Every role sees them; only owners change them."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.middleware import QUEUE_DOWN
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
from tests.conftest import World, make_service, user

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def page_url(project: Project) -> str:
    return reverse("project-mtls", args=[project.uid])


def callers_url(service: Service) -> str:
    return reverse("service-mtls-callers", args=[service.project.uid, service.pk])


def service_url(service: Service) -> str:
    return reverse("service-detail", args=[service.project.uid, service.pk])


def html_of(client: Client, url: str, headers: dict[str, str] | None = None) -> str:
    response = client.get(url, headers=headers)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def text_of(html: str) -> str:
    """What a person reads: the page without its tags, its whitespace folded."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def a_pass(project: Project) -> None:
    assert reconcile(project.pk).status in ("applied", "in_sync")


@pytest.fixture
def enabled(world: World) -> World:
    assert mtls.enable(world.project, actor=user(world, "owner"))
    return world


@pytest.fixture
def issued(enabled: World, manifests: Path) -> World:
    """Mutual TLS on, and a pass has issued every service its certificate."""
    a_pass(enabled.project)
    return enabled


class TestOff:
    def test_owner_sees_what_it_gives_and_the_switch(
        self, owner_client: Client, world: World
    ) -> None:
        html = html_of(owner_client, page_url(world.project))
        text = text_of(html)
        assert "Turn on mutual TLS" in text
        for promise in ("cert.pem", "key.pem", "ca.pem", "accept.txt", "/var/run/stackblaze/tls/"):
            assert promise in text
        assert f"spiffe://stackblaze.cloud/project/{world.project.uid}/service/api" in text
        assert "api.internal" in text
        assert "restarts once" in text
        assert f'action="{reverse("mtls-enable", args=[world.project.uid])}"' in html

    @pytest.mark.parametrize("role", ["member", "viewer"])
    def test_others_see_that_an_owner_can_turn_it_on(
        self, client_for: Callable[[str], Client], world: World, role: str
    ) -> None:
        html = html_of(client_for(role), page_url(world.project))
        assert "An owner of Acme can turn it on." in text_of(html)
        assert "Turn on mutual TLS" not in html
        assert reverse("mtls-enable", args=[world.project.uid]) not in html

    def test_it_is_a_tab_of_every_project_page(self, viewer_client: Client, world: World) -> None:
        url = page_url(world.project)
        assert f'<a href="{url}" >Mutual TLS</a>' in html_of(
            viewer_client, reverse("project-overview", args=[world.project.uid])
        )
        assert f'<a href="{url}" aria-current="page">Mutual TLS</a>' in html_of(viewer_client, url)

    def test_the_service_page_has_one_line_that_links_to_it(
        self, owner_client: Client, world: World
    ) -> None:
        html = html_of(owner_client, service_url(world.api))
        section = re.search(r'<section class="card" id="mtls".*?</section>', html, re.S)
        assert section is not None
        assert "Mutual TLS is off for Storefront" in text_of(section.group(0))
        assert f'href="{page_url(world.project)}"' in section.group(0)
        assert "Change who may call it" not in html

    def test_who_may_call_a_service_waits_until_it_is_on(
        self, owner_client: Client, world: World
    ) -> None:
        response = owner_client.post(callers_url(world.api), {"accept": "every"}, follow=True)
        assert response.redirect_chain[-1][0] == page_url(world.project)
        assert "Mutual TLS is off for this project: turn it on first" in response.content.decode()
        assert not AuditEvent.objects.filter(action=AuditEvent.Action.MTLS_CALLERS_CHANGED)


class TestTurningItOn:
    def test_owner_turns_it_on_with_one_click(self, owner_client: Client, world: World) -> None:
        response = owner_client.post(reverse("mtls-enable", args=[world.project.uid]))
        assert response.status_code == 302 and response["Location"] == page_url(world.project)
        ca = CertificateAuthority.objects.get(project=world.project)
        assert ca.generation == 1 and ca.retired_at is None
        event = AuditEvent.objects.get(action=AuditEvent.Action.MTLS_ENABLED)
        assert event.actor == user(world, "owner") and event.target == "Storefront"

        text = text_of(html_of(owner_client, page_url(world.project)))
        assert "Mutual TLS is on." in text
        assert "On since" in text and "turned on by owner" in text
        # No pass yet: both services wait for their certificate.
        assert "2 services wait for their certificate" in text
        assert text.count("issuing…") == 2
        assert re.search(r"CA 1 [\d-]+ [\d:]+ UTC Trusted signs the certificates SHA-256", text)
        assert "Rotate CA" in text and "Turn on mutual TLS" not in text

    def test_after_a_pass_the_table_shows_each_service_s_certificate(
        self, viewer_client: Client, issued: World
    ) -> None:
        text = text_of(html_of(viewer_client, page_url(issued.project)))
        assert "issuing…" not in text and "wait for" not in text
        for name in ("api", "postgres"):
            identity = f"spiffe://stackblaze.cloud/project/{issued.project.uid}/service/{name}"
            certificate = ServiceCertificate.objects.get(service__name=name)
            row = f"{name} {identity} {name}.internal CA 1 {certificate.not_after:%Y-%m-%d %H:%M}"
            assert row in text
        # A viewer sees everything, and changes nothing.
        assert "Rotate CA" not in text and "Owners can rotate the CA." in text

    def test_the_ca_shows_its_fingerprint_and_its_public_certificate(
        self, owner_client: Client, enabled: World
    ) -> None:
        html = html_of(owner_client, page_url(enabled.project))
        ca = CertificateAuthority.objects.get(project=enabled.project)
        assert "-----BEGIN CERTIFICATE-----" in html
        fingerprint = re.search(r'<code class="fingerprint">([0-9A-F:]+)</code>', html)
        assert fingerprint is not None and len(fingerprint.group(1)) == 95  # 32 bytes
        assert ca.certificate.strip().splitlines()[1] in html

    def test_a_second_click_changes_nothing_and_says_so(
        self, owner_client: Client, enabled: World
    ) -> None:
        response = owner_client.post(
            reverse("mtls-enable", args=[enabled.project.uid]), follow=True
        )
        assert "Mutual TLS was already on: nothing changed." in response.content.decode()
        assert CertificateAuthority.objects.filter(project=enabled.project).count() == 1

    def test_a_refusal_is_a_message_not_an_error(
        self, owner_client: Client, world: World, settings: Any
    ) -> None:
        settings.MTLS_MAX_SERVICES = 1
        response = owner_client.post(reverse("mtls-enable", args=[world.project.uid]), follow=True)
        assert response.status_code == 200
        assert "up to 1 services; this one has 2" in response.content.decode()
        assert not MutualTLS.objects.exists()

    def test_with_the_worker_queue_down_it_is_saved_and_the_page_says_so(
        self, transactional_db: None, owner_client: Client, world: World, broker_down: None
    ) -> None:
        response = owner_client.post(reverse("mtls-enable", args=[world.project.uid]), follow=True)
        assert response.status_code == 200
        assert MutualTLS.objects.filter(project=world.project).exists()
        assert QUEUE_DOWN in response.content.decode()


class TestWhoMayChange:
    @pytest.mark.parametrize("role", ["member", "viewer"])
    def test_non_owners_are_refused_every_change(
        self, client_for: Callable[[str], Client], enabled: World, role: str
    ) -> None:
        client, uid = client_for(role), enabled.project.uid
        for url, data in (
            (reverse("mtls-enable", args=[uid]), {}),
            (reverse("mtls-rotate-ca", args=[uid]), {}),
            (callers_url(enabled.api), {"accept": "listed", "services": [enabled.postgres.pk]}),
        ):
            assert client.post(url, data).status_code == 403, url
        assert client.get(callers_url(enabled.api)).status_code == 403
        state = MutualTLS.objects.get(project=enabled.project)
        assert not state.rotating
        assert Service.objects.get(pk=enabled.api.pk).accepts_any_caller

    def test_a_member_cannot_turn_it_on(
        self, client_for: Callable[[str], Client], world: World
    ) -> None:
        assert (
            client_for("member").post(reverse("mtls-enable", args=[world.project.uid])).status_code
            == 403
        )
        assert not MutualTLS.objects.exists()
        assert not CertificateAuthority.objects.exists()

    def test_a_post_without_its_csrf_token_is_refused_with_a_page(self, world: World) -> None:
        client = Client(enforce_csrf_checks=True)
        client.force_login(user(world, "owner"))
        for url in (
            reverse("mtls-enable", args=[world.project.uid]),
            reverse("mtls-rotate-ca", args=[world.project.uid]),
            callers_url(world.api),
        ):
            response = client.post(url, {"accept": "every"})
            assert response.status_code == 403, url
            assert "nothing was changed" in response.content.decode()
        assert not MutualTLS.objects.exists()

    def test_another_tenant_s_project_is_not_found(
        self, client_for: Callable[[str], Client], world: World
    ) -> None:
        mtls.enable(world.other_project, actor=None)
        owner = client_for("owner")
        other = world.other_project.uid
        assert owner.get(page_url(world.other_project)).status_code == 404
        assert owner.get(page_url(world.other_project), headers=HTMX).status_code == 404
        assert owner.post(reverse("mtls-enable", args=[other])).status_code == 404
        assert owner.post(reverse("mtls-rotate-ca", args=[other])).status_code == 404
        assert owner.post(callers_url(world.other_service), {"accept": "every"}).status_code == 404
        # Nor another project's service under this project's address.
        foreign = reverse("service-mtls-callers", args=[world.project.uid, world.other_service.pk])
        assert owner.post(foreign, {"accept": "every"}).status_code == 404
        assert not MutualTLS.objects.get(project=world.other_project).rotating
        for role in ("outsider", "support"):
            assert client_for(role).get(page_url(world.project)).status_code == 404
        assert client_for("anonymous").get(page_url(world.project)).status_code == 302


class TestRotatingTheCA:
    def test_owner_starts_a_rotation_and_the_page_shows_its_first_phase(
        self, owner_client: Client, issued: World
    ) -> None:
        response = owner_client.post(
            reverse("mtls-rotate-ca", args=[issued.project.uid]), follow=True
        )
        html = response.content.decode()
        text = text_of(html)
        assert "Started rotating to CA 2." in text
        assert "Rotating to CA 2" in text and "Rotating the CA" in text
        current = re.search(
            r'<li class="step step-current" aria-current="step">(.*?)</li>', html, re.S
        )
        assert current is not None
        assert "1. Trust the new CA" in text_of(current.group(1))
        assert "Waiting for the worker to write the files to the cluster" in text_of(
            current.group(1)
        )
        assert [
            title for title in ("Issue from the new CA", "Retire the old CA") if title in text
        ] == [
            "Issue from the new CA",
            "Retire the old CA",
        ]
        # Both CAs trusted; the old one still signs until every service trusts the new one.
        assert "CA 1 " in text and "signs the certificates" in text
        assert "CA 2 " in text and "signs from the next phase" in text
        assert 'button type="submit" class="button button-primary">Rotate CA<' not in html
        assert AuditEvent.objects.filter(action=AuditEvent.Action.CA_ROTATION_STARTED).count() == 1

    def test_rotating_twice_says_one_is_running(self, owner_client: Client, enabled: World) -> None:
        url = reverse("mtls-rotate-ca", args=[enabled.project.uid])
        owner_client.post(url)
        response = owner_client.post(url, follow=True)
        assert response.status_code == 200
        text = text_of(response.content.decode())
        assert "The CA is already being rotated" in text
        assert "Wait for that rotation to finish before starting another." in text
        assert CertificateAuthority.objects.filter(project=enabled.project).count() == 2

    def test_rotating_while_off_says_to_turn_it_on(
        self, owner_client: Client, world: World
    ) -> None:
        response = owner_client.post(
            reverse("mtls-rotate-ca", args=[world.project.uid]), follow=True
        )
        assert "Mutual TLS is off for this project: turn it on first." in response.content.decode()

    def test_the_wait_for_every_pod_s_files_is_counted_down(
        self, owner_client: Client, issued: World, settings: Any
    ) -> None:
        settings.MTLS_PROPAGATION_SECONDS = 150
        mtls.start_ca_rotation(issued.project, actor=None)
        a_pass(issued.project)  # applies phase 1: its wait begins
        text = text_of(html_of(owner_client, page_url(issued.project)))
        waited = re.search(r"waiting (\d+) s for every pod’s files to refresh", text)
        assert waited is not None and 148 <= int(waited.group(1)) <= 150
        assert "Written to the cluster at" in text

    def test_the_live_part_follows_the_phases_to_completed(
        self, owner_client: Client, issued: World, settings: Any
    ) -> None:
        """What htmx asks for on each change: the rotation's card, with the head, the
        certificates and the CAs out-of-band; it polls while the rotation runs, and stops."""
        settings.MTLS_PROPAGATION_SECONDS = 60
        url = page_url(issued.project)
        mtls.start_ca_rotation(issued.project, actor=None)
        seen = []
        for _ in range(3):
            a_pass(issued.project)  # applies the phase's files: the wait for the pods begins
            part = html_of(owner_client, url, headers=HTMX)
            assert part.lstrip().startswith('<section class="card" id="mtls-rotation"')
            assert "<html" not in part and "<nav" not in part
            assert 'hx-trigger="project-changed from:body, every 5s"' in part
            for oob in ("mtls-head", "mtls-certificates", "mtls-authorities"):
                assert re.search(rf'id="{oob}"[^>]*hx-swap-oob="outerHTML"', part), oob
            current = re.search(r'aria-current="step">\s*<strong>\d\. ([^<]+)</strong>', part)
            assert current is not None
            seen.append(current.group(1))
            assert re.search(r"waiting (59|60) s for every pod’s files to refresh", text_of(part))
            # The wait is over (as the worker's recheck finds it): the next phase.
            later = timezone.now() + dt.timedelta(seconds=61)
            applied = mtls.planned(issued.project)
            assert applied is not None
            assert mtls.after_apply(issued.project, applied, now=later) is None
        assert seen == ["Trust the new CA", "Issue from the new CA", "Retire the old CA"]

        part = html_of(owner_client, url, headers=HTMX)
        text = text_of(part)
        assert "Completed The last rotation completed at" in text
        assert "CA 2 signs every certificate" in text
        assert 'hx-trigger="project-changed from:body"' in part  # no more polling
        assert "Rotate CA" in text
        # Every certificate is from CA 2 now; CA 1 is retired, its key destroyed.
        assert text.count(" CA 2 ") >= 2 and "CA 1 " not in text.split("Certificate authorities")[0]
        assert set(ServiceCertificate.objects.values_list("authority__generation", flat=True)) == {
            2
        }
        assert "Retired" in text
        assert CertificateAuthority.objects.get(generation=1).key is None
        assert AuditEvent.objects.filter(action=AuditEvent.Action.CA_ROTATION_COMPLETED).exists()

    def test_back_after_a_cache_miss_gets_the_whole_page(
        self, owner_client: Client, enabled: World
    ) -> None:
        html = html_of(
            owner_client,
            page_url(enabled.project),
            headers={"HX-Request": "true", "HX-History-Restore-Request": "true"},
        )
        assert "<html" in html and 'id="mtls-certificates"' in html


class TestAServicePage:
    def section(self, client: Client, service: Service) -> str:
        html = html_of(client, service_url(service))
        found = re.search(r'<section class="card" id="mtls".*?\n</section>', html, re.S)
        assert found is not None
        return found.group(0)

    def test_it_shows_its_identity_certificate_and_callers(
        self, viewer_client: Client, issued: World
    ) -> None:
        text = text_of(self.section(viewer_client, issued.api))
        certificate = ServiceCertificate.objects.get(service=issued.api)
        assert f"spiffe://stackblaze.cloud/project/{issued.project.uid}/service/api" in text
        expires = f"{certificate.not_after:%Y-%m-%d %H:%M}"
        assert f"From CA 1, for api.internal ; expires {expires}" in text
        assert f"Accepts calls from Every service of {issued.project.name}" in text
        # Viewers read, and change nothing.
        assert "Change who may call it" not in text

    def test_before_the_pass_its_certificate_is_being_issued(
        self, viewer_client: Client, enabled: World
    ) -> None:
        assert "issuing…" in text_of(self.section(viewer_client, enabled.api))

    def test_the_snippets_serve_and_call_it(self, owner_client: Client, enabled: World) -> None:
        section = self.section(owner_client, enabled.api)
        labels = re.findall(r"<summary>([^<]+)</summary>", section)
        assert labels == [
            "Python server (ssl)",
            "Python client (urllib, httpx, requests)",
            "Node.js server (https)",
            "Node.js client (https)",
            "Go server (crypto/tls)",
            "Go client (crypto/tls)",
        ]
        assert "api.internal" in section and "/var/run/stackblaze/tls" in section
        # A database serves its own protocol: no HTTPS server to paste.
        assert "<summary>" not in self.section(owner_client, enabled.postgres)

    def test_its_facts_refresh_alone(self, viewer_client: Client, issued: World) -> None:
        part = html_of(viewer_client, service_url(issued.api) + "?part=mtls", headers=HTMX)
        assert part.lstrip().startswith('<div id="mtls-facts"')
        assert "From CA 1" in text_of(part) and "<form" not in part

    def test_an_owner_chooses_who_may_call_it(self, owner_client: Client, enabled: World) -> None:
        billing = make_service(enabled.project, "billing", Service.Kind.PRIVATE, [9000])
        section = self.section(owner_client, enabled.api)
        assert "Change who may call it" in section
        assert 'name="accept" value="every"' in section and "checked" in section

        response = owner_client.post(
            callers_url(enabled.api),
            {"accept": "listed", "services": [billing.pk, enabled.postgres.pk]},
        )
        assert response.status_code == 302
        assert response["Location"] == service_url(enabled.api) + "#mtls"
        api = Service.objects.get(pk=enabled.api.pk)
        assert not api.accepts_any_caller
        assert sorted(api.accepts_calls_from.values_list("name", flat=True)) == [
            "billing",
            "postgres",
        ]
        event = AuditEvent.objects.get(action=AuditEvent.Action.MTLS_CALLERS_CHANGED)
        assert event.target == "api" and event.details == {"callers": ["billing", "postgres"]}
        page = owner_client.get(service_url(enabled.api))
        text = text_of(page.content.decode())
        assert "api accepts calls only from billing, postgres." in text
        assert "Accepts calls from billing , postgres" in text
        # The snippets name a caller it accepts.
        assert "billing" in self.section(owner_client, enabled.api).split("<summary>")[2]

        again = owner_client.post(
            callers_url(enabled.api),
            {"accept": "listed", "services": [billing.pk, enabled.postgres.pk]},
            follow=True,
        )
        assert "Nothing changed." in again.content.decode()
        back = owner_client.post(callers_url(enabled.api), {"accept": "every"}, follow=True)
        assert "api accepts calls from every service again." in back.content.decode()
        assert Service.objects.get(pk=enabled.api.pk).accepts_any_caller

    def test_a_form_drawn_before_another_owner_s_change_does_not_undo_it(
        self, owner_client: Client, enabled: World
    ) -> None:
        drawn = mtls.callers_version(enabled.api)
        assert f'name="version" value="{drawn}"' in html_of(owner_client, callers_url(enabled.api))
        # Another owner restricts api meanwhile.
        mtls.set_callers(enabled.api, any_caller=False, callers=[enabled.postgres], actor=None)
        response = owner_client.post(
            callers_url(enabled.api), {"accept": "every", "version": drawn}
        )
        assert response.status_code == 200
        text = text_of(response.content.decode())
        assert "Someone changed who may call api meanwhile. Here is what it is now" in text
        assert re.search(
            r'<input type="radio" name="accept" value="listed"[^>]* checked>',
            response.content.decode(),
        )
        api = Service.objects.get(pk=enabled.api.pk)
        assert not api.accepts_any_caller  # their change stands

    def test_callers_the_secret_cannot_hold_are_refused_with_the_reason(
        self, owner_client: Client, enabled: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(mtls, "SECRET_BUDGET", mtls.projected_size(enabled.project) + 10)
        response = owner_client.post(
            callers_url(enabled.api), {"accept": "listed", "services": [enabled.postgres.pk]}
        )
        assert response.status_code == 200
        assert "api cannot accept 1 named callers" in text_of(response.content.decode())
        assert Service.objects.get(pk=enabled.api.pk).accepts_any_caller

    def test_its_own_page_opens_on_what_it_accepts_now(
        self, owner_client: Client, enabled: World
    ) -> None:
        mtls.set_callers(enabled.api, any_caller=False, callers=[enabled.postgres], actor=None)
        html = html_of(owner_client, callers_url(enabled.api))
        assert re.search(r'<input type="radio" name="accept" value="listed"[^>]* checked>', html)
        assert re.search(
            rf'<input type="checkbox" name="services" value="{enabled.postgres.pk}"[^>]* checked>',
            html,
        )
        assert not re.search(
            rf'<input type="checkbox" name="services" value="{enabled.api.pk}"[^>]* checked>', html
        )

    @pytest.mark.parametrize(
        ("data", "problem"),
        [
            ({}, "Choose who may call it."),
            ({"accept": "listed"}, "Choose the services that may call it, or choose"),
            ({"accept": "anyone"}, "Select a valid choice."),
            ({"accept": "listed", "services": ["not-a-number"]}, "is not a valid value"),
            ({"accept": "listed", "services": ["99999999"]}, "is not in this project any more"),
        ],
    )
    def test_a_wrong_choice_comes_back_with_what_to_fix(
        self, owner_client: Client, enabled: World, data: dict[str, Any], problem: str
    ) -> None:
        response = owner_client.post(callers_url(enabled.api), data)
        assert response.status_code == 200
        html = response.content.decode()
        assert problem in html and 'role="alert"' in html
        assert "Who may call" in html  # its own page, with the form
        assert Service.objects.get(pk=enabled.api.pk).accepts_any_caller
        assert not AuditEvent.objects.filter(action=AuditEvent.Action.MTLS_CALLERS_CHANGED)

    def test_another_project_s_service_is_no_caller(
        self, owner_client: Client, enabled: World
    ) -> None:
        response = owner_client.post(
            callers_url(enabled.api),
            {"accept": "listed", "services": [enabled.other_service.pk]},
        )
        assert response.status_code == 200
        assert "is not in this project any more" in response.content.decode()
        assert not Service.objects.get(pk=enabled.api.pk).accepts_calls_from.exists()

    def test_a_large_project_chooses_with_the_searchable_picker(
        self, owner_client: Client, enabled: World
    ) -> None:
        Service.objects.bulk_create(
            Service(
                project=enabled.project,
                name=f"worker-{index:03}",
                display_name=f"worker-{index:03}",
                kind=Service.Kind.PRIVATE,
                ports=[9000],
            )
            for index in range(40)
        )
        callers = list(Service.objects.filter(name__in=["worker-007", "worker-033"]))
        mtls.set_callers(enabled.api, any_caller=False, callers=callers, actor=None)
        section = self.section(owner_client, enabled.api)
        assert 'class="service-picker" id="picker-services"' in section
        search = reverse("service-choices", args=[enabled.project.uid]) + "?field=services"
        assert f'hx-get="{search}"' in section
        chosen = re.search(r'<div class="picker-chosen checkboxes">(.*?)</div>', section, re.S)
        assert chosen is not None
        assert re.findall(r"worker-\d+ \(", chosen.group(1)) == ["worker-007 (", "worker-033 ("]
        # At most a page of matches: never a control per service.
        assert section.count('type="checkbox"') <= 2 + 20


class TestTheNetworkPage:
    def test_it_lists_who_may_call_whom(self, viewer_client: Client, enabled: World) -> None:
        mtls.set_callers(enabled.postgres, any_caller=False, callers=[enabled.api], actor=None)
        html = html_of(viewer_client, reverse("project-network", args=[enabled.project.uid]))
        text = text_of(html)
        assert "Who may call whom over mutual TLS" in text
        assert (
            "1 service accepts calls from every service of Storefront; "
            "these only from those listed:" in text
        )
        assert "postgres api" in text  # postgres: only from api

    def test_it_says_nothing_of_it_while_it_is_off(
        self, viewer_client: Client, world: World
    ) -> None:
        html = html_of(viewer_client, reverse("project-network", args=[world.project.uid]))
        assert "over mutual TLS" not in html


def private_fragments(key_pem: str) -> list[str]:
    """What would give a private key away in a page: its secret number, in hex or in base64
    at each of the three byte alignments a base64 text could hold it at. (Not its PEM lines:
    an EC key's PEM holds its public key too, which its certificate shows.)"""
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    secret = key.private_numbers().private_value.to_bytes(32, "big")
    encoded = [base64.b64encode(secret[offset : offset + 24]).decode() for offset in range(3)]
    return [secret.hex(), secret.hex().upper(), *encoded]


def test_no_page_ever_holds_a_private_key(
    client_for: Callable[[str], Client], issued: World, settings: Any
) -> None:
    """Certificates are public, keys never leave the database but for the cluster: not on any
    page, part or form of any role, on, issued and mid-rotation."""
    mtls.set_callers(issued.postgres, any_caller=False, callers=[issued.api], actor=None)
    settings.MTLS_PROPAGATION_SECONDS = 60
    mtls.start_ca_rotation(issued.project, actor=user(issued, "owner"))
    a_pass(issued.project)
    applied = mtls.planned(issued.project)
    assert applied is not None
    mtls.after_apply(issued.project, applied, now=timezone.now() + dt.timedelta(seconds=61))
    a_pass(issued.project)  # issuing from CA 2, while CA 1 is still trusted (and has its key)
    keys = [ca.key.reveal() for ca in CertificateAuthority.objects.all() if ca.key is not None]
    keys += [row.key.reveal() for row in ServiceCertificate.objects.all() if row.key is not None]
    assert len(keys) == 4  # two CAs' and two services'
    secrets = [fragment for key in keys for fragment in private_fragments(key)]
    # The search finds a key where there is one: in its own PEM.
    for key in keys:
        assert any(fragment in "".join(key.split()) for fragment in private_fragments(key))
    uid = issued.project.uid
    urls = [
        page_url(issued.project),
        service_url(issued.api),
        service_url(issued.postgres),
        callers_url(issued.api),
        reverse("project-network", args=[uid]),
        reverse("audit-log", args=[uid]),
    ]
    for role in ("owner", "member", "viewer"):
        client = client_for(role)
        for url in urls:
            for headers in ({}, HTMX):  # the page, and the part htmx asks for
                response = client.get(url, headers=headers)
                if response.status_code != 200:
                    continue
                html = response.content.decode()
                assert "PRIVATE KEY" not in html, (role, url)
                packed = "".join(html.split())
                assert not [fragment for fragment in secrets if fragment in packed], (role, url)
        html = html_of(client, service_url(issued.api) + "?part=mtls", headers=HTMX)
        assert "PRIVATE KEY" not in html
