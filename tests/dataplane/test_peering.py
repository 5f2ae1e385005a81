"""VPC peering, shown with packets: support's approval opens exactly one path between two
projects, within the time the Peering page promises, and a revocation closes it again."""

from __future__ import annotations

import re
import time
from functools import partial
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from networking.peering import SETTLES_WITHIN_SECONDS
from tests.conftest import World
from tests.dataplane.conftest import TIMINGS, Call, DataPlane, in_sync
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_approval_opens_one_path_within_the_promised_time_and_revoking_closes_it(
    dataplane: DataPlane,
    storefront: dict[str, Any],
    world: World,
    api_client: Call,
    acme_token: str,
    api_tokens: dict[str, str | None],
    namespaces: list[str],
) -> None:
    storefront_ns = storefront["project"].namespace
    analytics, billing = world.other_project, world.other_peering.target_project
    for project in (analytics, billing):
        namespaces.append(project.namespace)
        project.request_reconcile()
        wait_until(partial(in_sync, project), f"{project.name} in sync", 60)
    analytics_caller = (analytics.namespace, dataplane.client_pod(analytics.namespace))
    billing_caller = (billing.namespace, dataplane.client_pod(billing.namespace))
    dataplane.deploy(analytics.namespace, "warehouse", ports=[3306], args=["tcp", "-port", "3306"])

    # Cluster DNS names resolve everywhere (DNS is not the boundary); packets do not pass.
    target = f"api.{storefront_ns}.svc.cluster.local:8080"
    closed = dataplane.ask(*analytics_caller, "connect", target, "-timeout", "2s")
    assert not closed.ok and closed.data["outcome"] in ("refused", "timeout"), closed.output

    peering = world.peering  # Analytics asked to peer with Storefront
    accepted = api_client(
        acme_token, "POST", f"/projects/{storefront['project'].uid}/peerings/{peering.pk}/accept"
    )
    assert accepted.status_code == 200, accepted.content
    support = api_tokens["support"]
    assert support is not None
    approved = api_client(support, "POST", f"/support/peerings/{peering.pk}/approve")
    assert approved.status_code == 200, approved.content
    approved_at = time.monotonic()

    # The hostname Analytics's Peering page lists for Storefront's api, once it is active.
    globex_owner = Client()
    globex_owner.force_login(world.globex.memberships.get(role="owner").user)

    def listed_hostname() -> str | None:
        page = globex_owner.get(reverse("project-peering", args=[analytics.uid]))
        found = re.search(rf"api\.{storefront_ns}\.svc\.cluster\.local:8080", page.content.decode())
        return found.group(0) if found else None

    hostname = wait_until(listed_hostname, "the peering page to list Storefront's api", 60)
    assert hostname == target
    dataplane.until(*analytics_caller, "get", f"http://{hostname}/", timeout=SETTLES_WITHIN_SECONDS)
    connected_after = time.monotonic() - approved_at
    # Both ways: Storefront reaches Analytics's services too.
    dataplane.until(
        storefront_ns,
        "client",
        "connect",
        f"warehouse.{analytics.namespace}.svc.cluster.local:3306",
    )
    # One path only: Billing, in the same organization as Analytics, is still refused.
    outsider = dataplane.ask(*billing_caller, "connect", target, "-timeout", "2s")
    assert not outsider.ok and outsider.data["outcome"] in ("refused", "timeout"), outsider.output
    # And .internal stays per project: Storefront's short name means nothing in Analytics.
    assert not dataplane.ask(*analytics_caller, "resolve", "api.internal").ok

    revoked = api_client(
        acme_token, "POST", f"/projects/{storefront['project'].uid}/peerings/{peering.pk}/revoke"
    )
    assert revoked.status_code == 200, revoked.content
    revoked_at = time.monotonic()
    dataplane.until(
        *analytics_caller, "connect", target, "-timeout", "1s",
        succeeds=False, timeout=SETTLES_WITHIN_SECONDS,
    )  # fmt: skip
    disconnected_after = time.monotonic() - revoked_at
    TIMINGS.append(
        f"peering: traffic flowed {connected_after:.1f} s after support approved, stopped "
        f"{disconnected_after:.1f} s after the revocation (the page promises "
        f"{SETTLES_WITHIN_SECONDS} s)"
    )
