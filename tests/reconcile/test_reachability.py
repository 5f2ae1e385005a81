"""Who may reach whom, read off the desired NetworkPolicies (pure: no cluster, no database)."""

from __future__ import annotations

import copy
from typing import Any

from networking.cluster.desired import (
    INGRESS_POLICY,
    ISOLATION_POLICY,
    ClusterSettings,
    DesiredState,
    ServiceSpec,
    build_desired_state,
)
from networking.cluster.reachability import Grant, Origin, Reachability, Source, reachability

LABEL = "stackblaze.cloud/service"
SETTINGS = ClusterSettings(workload_label=LABEL, ingress_namespace="ingress-nginx")
NO_INGRESS = ClusterSettings(workload_label=LABEL, ingress_namespace="")

API = ServiceSpec("api", "web", (8080,), public=True)
ADMIN = ServiceSpec("admin", "web", (8081,), public=True)
WORKER = ServiceSpec("worker", "private", (3000,))
POSTGRES = ServiceSpec("postgres", "postgresql", (5432,))
WAREHOUSE = ServiceSpec("warehouse", "mysql", (3306,))

OWN = "prj-own"
ANALYTICS = "prj-analytics"
BILLING = "prj-billing"


def state(
    namespace: str,
    *services: ServiceSpec,
    peers: tuple[str, ...] = (),
    settings: ClusterSettings = SETTINGS,
) -> DesiredState:
    return build_desired_state(
        namespace=namespace,
        project_uid=namespace.removeprefix("prj-"),
        services=services,
        settings=settings,
        peer_namespaces=peers,
    )


def sources(reach: Reachability, service: str, namespace: str | None = None) -> set[Any]:
    """(origin, namespace, services, policy) of every grant into a service."""
    return {
        (grant.source.origin, grant.source.namespace, grant.source.services, grant.policy)
        for grant in reach.into(service, namespace)
    }


def reached(reach: Reachability, service: str) -> set[tuple[str, str]]:
    return {(grant.namespace, grant.service) for grant in reach.reachable_from(service)}


def replace_policy(desired: DesiredState, name: str, spec: dict[str, Any] | None) -> None:
    """Change (or with None, drop) one desired policy; the builder's objects stay untouched."""
    key = ("NetworkPolicy", name)
    if spec is None:
        del desired.objects[key]
        return
    policy = copy.deepcopy(desired.objects.get(key)) or {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": desired.namespace},
    }
    policy["spec"] = spec
    desired.objects[key] = policy


SAME_PROJECT = (Origin.PROJECT, OWN, None, ISOLATION_POLICY)


# -- A project alone ----------------------------------------------------------------------------


def test_alone_every_service_reaches_every_other_and_nothing_else_reaches_them() -> None:
    reach = reachability(state(OWN, WORKER, POSTGRES), settings=SETTINGS)
    assert sources(reach, "worker") == {SAME_PROJECT}
    assert sources(reach, "postgres") == {SAME_PROJECT}
    assert reached(reach, "worker") == {(OWN, "worker"), (OWN, "postgres")}
    assert reach.services == {OWN: ("postgres", "worker")}
    assert reach.limited_egress == frozenset()
    assert reach.policies == {OWN: frozenset({ISOLATION_POLICY})}


def test_the_same_project_is_every_pod_of_its_namespace_whatever_its_services() -> None:
    reach = reachability(state(OWN, WORKER), settings=SETTINGS)
    [grant] = reach.into("worker")
    assert grant.source == Source(Origin.PROJECT, namespace=OWN)
    assert grant.source.covers(OWN, "a-service-created-later")
    assert not grant.source.covers(ANALYTICS, "worker")
    assert grant.ports == ()


def test_an_empty_project_has_no_grants() -> None:
    reach = reachability(state(OWN), settings=SETTINGS)
    assert reach.grants == ()
    assert reach.into("anything") == ()


# -- Public web services ------------------------------------------------------------------------


def test_the_ingress_controller_reaches_public_web_services_only() -> None:
    reach = reachability(state(OWN, API, ADMIN, POSTGRES), settings=SETTINGS)
    ingress = (Origin.INGRESS, "ingress-nginx", None, INGRESS_POLICY)
    assert sources(reach, "api") == {SAME_PROJECT, ingress}
    assert sources(reach, "admin") == {SAME_PROJECT, ingress}
    assert sources(reach, "postgres") == {SAME_PROJECT}


def test_without_an_ingress_namespace_nothing_outside_reaches_web_services() -> None:
    reach = reachability(state(OWN, API, settings=NO_INGRESS), settings=NO_INGRESS)
    assert sources(reach, "api") == {SAME_PROJECT}


def test_the_ingress_controller_never_counts_as_a_project_service() -> None:
    reach = reachability(state(OWN, API), settings=SETTINGS)
    assert reached(reach, "api") == {(OWN, "api")}


# -- Peerings -----------------------------------------------------------------------------------


def peered() -> Reachability:
    own = state(OWN, API, POSTGRES, peers=(ANALYTICS, BILLING))
    analytics = state(ANALYTICS, WAREHOUSE, peers=(OWN,))
    billing = state(BILLING, WORKER, peers=(OWN,))
    return reachability(own, [analytics, billing], settings=SETTINGS)


def test_each_peer_reaches_every_service_of_the_project_by_its_own_policy() -> None:
    reach = peered()
    assert sources(reach, "postgres") == {
        SAME_PROJECT,
        (Origin.PROJECT, ANALYTICS, None, f"peer-{ANALYTICS}"),
        (Origin.PROJECT, BILLING, None, f"peer-{BILLING}"),
    }


def test_the_project_reaches_each_peers_services_by_the_peers_policy() -> None:
    reach = peered()
    assert (Origin.PROJECT, OWN, None, f"peer-{OWN}") in sources(reach, "warehouse", ANALYTICS)
    assert reached(reach, "api") == {
        (OWN, "api"),
        (OWN, "postgres"),
        (ANALYTICS, "warehouse"),
        (BILLING, "worker"),
    }
    assert reach.services == {
        OWN: ("api", "postgres"),
        ANALYTICS: ("warehouse",),
        BILLING: ("worker",),
    }


def test_a_peer_that_does_not_admit_the_project_is_not_reachable_from_it() -> None:
    # Half connected: the project admits Analytics, but Analytics' namespace has no policy
    # for the project (yet, or any more).
    own = state(OWN, API, peers=(ANALYTICS,))
    analytics = state(ANALYTICS, WAREHOUSE)
    reach = reachability(own, [analytics], settings=SETTINGS)
    assert (Origin.PROJECT, ANALYTICS, None, f"peer-{ANALYTICS}") in sources(reach, "api")
    assert reached(reach, "api") == {(OWN, "api")}


def test_a_peers_own_other_peering_is_a_namespace_we_name_but_do_not_know() -> None:
    own = state(OWN, API, peers=(ANALYTICS,))
    analytics = state(ANALYTICS, WAREHOUSE, peers=(OWN, "prj-third"))
    reach = reachability(own, [analytics], settings=SETTINGS)
    third = [g.source for g in reach.into("warehouse", ANALYTICS) if g.policy == "peer-prj-third"]
    assert third == [Source(Origin.NAMESPACES, detail="namespace prj-third")]
    assert not third[0].covers(OWN, "api")


# -- The map follows the policies ---------------------------------------------------------------


def test_without_the_isolation_policy_anything_in_the_cluster_reaches_the_services() -> None:
    own = state(OWN, WORKER, POSTGRES)
    replace_policy(own, ISOLATION_POLICY, None)
    reach = reachability(own, settings=SETTINGS)
    assert sources(reach, "postgres") == {(Origin.ANYWHERE, "", None, "")}
    assert reach.into("postgres")[0].source.covers(ANALYTICS, "anything")


def test_an_ingress_policy_widened_to_every_pod_reaches_databases_too() -> None:
    own = state(OWN, API, POSTGRES)
    widened = copy.deepcopy(own.objects[("NetworkPolicy", INGRESS_POLICY)]["spec"])
    widened["podSelector"] = {}
    replace_policy(own, INGRESS_POLICY, widened)
    reach = reachability(own, settings=SETTINGS)
    assert (Origin.INGRESS, "ingress-nginx", None, INGRESS_POLICY) in sources(reach, "postgres")


def test_a_rule_without_from_admits_everyone() -> None:
    own = state(OWN, POSTGRES)
    replace_policy(
        own, "allow-all", {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}
    )
    reach = reachability(own, settings=SETTINGS)
    assert sources(reach, "postgres") == {SAME_PROJECT, (Origin.ANYWHERE, "", None, "allow-all")}


def test_a_policy_with_no_rules_isolates_and_admits_nothing() -> None:
    own = state(OWN, POSTGRES)
    replace_policy(own, ISOLATION_POLICY, {"podSelector": {}, "policyTypes": ["Ingress"]})
    reach = reachability(own, settings=SETTINGS)
    assert reach.into("postgres") == ()
    assert reached(reach, "postgres") == set()


def test_an_egress_only_policy_does_not_isolate_ingress() -> None:
    own = state(OWN, POSTGRES)
    replace_policy(own, ISOLATION_POLICY, {"podSelector": {}, "policyTypes": ["Egress"]})
    reach = reachability(own, settings=SETTINGS)
    # Nothing admits traffic in (anyone may), but no pod of the project may send any.
    assert reach.into("postgres") == (Grant(Source(Origin.ANYWHERE), OWN, "postgres", ""),)


def test_every_namespace_selector_names_the_ones_we_know_and_the_rest() -> None:
    own = state(OWN, POSTGRES, peers=(ANALYTICS,))
    replace_policy(
        own,
        "from-everywhere",
        {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]},
    )
    reach = reachability(own, [state(ANALYTICS, WAREHOUSE)], settings=SETTINGS)
    assert {
        (origin, namespace)
        for origin, namespace, _, policy in sources(reach, "postgres")
        if policy == "from-everywhere"
    } == {
        (Origin.PROJECT, OWN),
        (Origin.PROJECT, ANALYTICS),
        (Origin.INGRESS, "ingress-nginx"),
        (Origin.NAMESPACES, ""),
    }
    [rest] = [g.source for g in reach.into("postgres") if g.source.origin == Origin.NAMESPACES]
    assert rest.detail == "every other namespace"


def test_a_pod_selector_narrows_the_sources_to_the_services_it_selects() -> None:
    own = state(OWN, API, WORKER, POSTGRES)
    replace_policy(
        own,
        ISOLATION_POLICY,
        {
            "podSelector": {"matchLabels": {LABEL: "postgres"}},
            "ingress": [
                {"from": [{"podSelector": {"matchExpressions": [
                    {"key": LABEL, "operator": "NotIn", "values": ["api"]},
                ]}}]}
            ],
        },
    )  # fmt: skip
    reach = reachability(own, settings=SETTINGS)
    assert sources(reach, "postgres") == {
        (Origin.PROJECT, OWN, frozenset({"worker", "postgres"}), ISOLATION_POLICY)
    }
    # Not selected by any policy any more: open to anyone.
    assert sources(reach, "worker") == {(Origin.ANYWHERE, "", None, "")}
    assert (OWN, "postgres") not in reached(reach, "api")
    assert (OWN, "postgres") in reached(reach, "worker")


def test_label_operators_exists_and_does_not_exist() -> None:
    own = state(OWN, POSTGRES, WORKER)
    replace_policy(
        own,
        ISOLATION_POLICY,
        {
            "podSelector": {"matchExpressions": [{"key": LABEL, "operator": "Exists"}]},
            "ingress": [
                {"from": [{"podSelector": {"matchExpressions": [
                    {"key": "team", "operator": "DoesNotExist"},
                    {"key": LABEL, "operator": "In", "values": ["worker"]},
                ]}}]}
            ],
        },
    )  # fmt: skip
    reach = reachability(own, settings=SETTINGS)
    assert sources(reach, "postgres") == {
        (Origin.PROJECT, OWN, frozenset({"worker"}), ISOLATION_POLICY)
    }


def test_a_selector_that_matches_no_known_pod_admits_no_one_we_know() -> None:
    own = state(OWN, WORKER)
    replace_policy(
        own,
        ISOLATION_POLICY,
        {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {LABEL: "gone"}}}]}],
        },
    )
    reach = reachability(own, settings=SETTINGS)
    assert reach.into("worker") == ()


def test_an_unknown_operator_matches_nothing() -> None:
    own = state(OWN, WORKER)
    replace_policy(
        own,
        ISOLATION_POLICY,
        {"podSelector": {"matchExpressions": [{"key": LABEL, "operator": "Near"}]}},
    )
    reach = reachability(own, settings=SETTINGS)
    assert sources(reach, "worker") == {(Origin.ANYWHERE, "", None, "")}


def test_pods_of_a_namespace_we_do_not_know_are_reported_as_the_selector_says() -> None:
    own = state(OWN, API)
    replace_policy(
        own,
        "from-monitoring",
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": "observability"}},
                            "podSelector": {"matchLabels": {"app": "prometheus"}},
                        },
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                            },
                            "podSelector": {"matchLabels": {"app": "controller"}},
                        },
                    ],
                    "ports": [{"protocol": "TCP", "port": 9090}, {"port": 9000, "endPort": 9010}],
                }
            ],
        },
    )
    reach = reachability(own, settings=SETTINGS)
    grants = [g for g in reach.into("api") if g.policy == "from-monitoring"]
    assert {g.source for g in grants} == {
        Source(
            Origin.NAMESPACES,
            pods="pods labelled app=prometheus",
            detail="every other namespace (labelled team=observability)",
        ),
        Source(Origin.INGRESS, namespace="ingress-nginx", pods="pods labelled app=controller"),
    }
    assert {g.ports for g in grants} == {("TCP 9090", "TCP 9000-9010")}


def test_addresses_are_reported_with_their_exceptions() -> None:
    own = state(OWN, API)
    replace_policy(
        own,
        "from-office",
        {
            "podSelector": {},
            "ingress": [
                {"from": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.7/32"]}}]}
            ],
        },
    )
    reach = reachability(own, settings=SETTINGS)
    [office] = [g.source for g in reach.into("api") if g.policy == "from-office"]
    assert office == Source(Origin.ADDRESSES, detail="203.0.113.0/24 except 203.0.113.7/32")
    assert not office.covers(OWN, "api")


# -- Egress -------------------------------------------------------------------------------------


def test_a_senders_egress_policy_narrows_what_it_reaches() -> None:
    own = state(OWN, API, WORKER, POSTGRES)
    replace_policy(
        own,
        "worker-egress",
        {
            "podSelector": {"matchLabels": {LABEL: "worker"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {LABEL: "postgres"}}}]}],
        },
    )
    reach = reachability(own, settings=SETTINGS)
    assert reach.limited_egress == {(OWN, "worker")}
    assert reached(reach, "worker") == {(OWN, "postgres")}
    assert reached(reach, "api") == {(OWN, "api"), (OWN, "worker"), (OWN, "postgres")}
    assert sources(reach, "api") == {
        (Origin.PROJECT, OWN, frozenset({"api", "postgres"}), ISOLATION_POLICY),
        (Origin.INGRESS, "ingress-nginx", None, INGRESS_POLICY),
    }


def test_egress_to_a_peer_namespace_is_judged_on_its_labels() -> None:
    own = state(OWN, API, peers=(ANALYTICS,))
    replace_policy(
        own,
        "egress-to-peers-only",
        {
            "podSelector": {},
            "egress": [
                {
                    "to": [
                        {"namespaceSelector": {"matchLabels": {
                            "kubernetes.io/metadata.name": ANALYTICS
                        }}},
                        {"ipBlock": {"cidr": "10.0.0.0/8"}},
                    ]
                }
            ],
        },
    )  # fmt: skip
    reach = reachability(own, [state(ANALYTICS, WAREHOUSE, peers=(OWN,))], settings=SETTINGS)
    assert reached(reach, "api") == {(ANALYTICS, "warehouse")}


def test_an_egress_rule_without_to_sends_anywhere() -> None:
    own = state(OWN, API, WORKER)
    replace_policy(own, "egress-all", {"podSelector": {}, "egress": [{}]})
    reach = reachability(own, settings=SETTINGS)
    assert reached(reach, "api") == {(OWN, "api"), (OWN, "worker")}
