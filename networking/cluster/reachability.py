"""Who may reach whom, read off the desired NetworkPolicy objects: pure, no I/O.

The Network page and each service's page say who can reach what. They do not restate the
rule next to the policies ("the same project, the ingress controller for public web services,
each peer"): they evaluate the policies ``build_desired_state`` returns, the way the cluster's
network plugin will, so when a policy changes, what the pages say follows.

The rules of ``networking.k8s.io/v1``, as evaluated here:

- A pod that no Ingress policy selects accepts traffic from anywhere. Once one selects it, it
  accepts what some rule of some policy selecting it admits (the union), and nothing else.
- A rule without ``from`` admits every source. Each ``from`` entry admits the pods its
  ``podSelector`` matches in the policy's own namespace; or every pod of the namespaces its
  ``namespaceSelector`` matches; or, with both, the pods matching the one in the namespaces
  matching the other; or addresses (``ipBlock``).
- Egress is the same from the sending pod's side; traffic must be allowed on both sides.

A service's pods carry (at least) the labels its Service selects on: the deploy system labels
them so. A namespace we have the desired state of carries the labels of its Namespace object;
any other carries ``kubernetes.io/metadata.name``, which Kubernetes sets. The pods of those
other namespaces (the ingress controller's, the rest of the cluster) are unknown here, so a
``podSelector`` aimed at them is reported as written, never guessed at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from networking.cluster.desired import NAMESPACE_NAME_LABEL, ClusterSettings, DesiredState

Selector = Mapping[str, Any]


class Origin(StrEnum):
    """Where traffic a policy admits may come from."""

    # Pods of a namespace whose desired state we have: the project's own, or a peer's.
    PROJECT = "project"
    # The ingress controller's namespace (``ClusterSettings.ingress_namespace``).
    INGRESS = "ingress"
    # Other namespaces a selector matches (``detail`` says which).
    NAMESPACES = "namespaces"
    # Any pod and any address: no policy isolates the destination, or a rule admits everyone.
    ANYWHERE = "anywhere"
    # Addresses in a CIDR (``detail``), from an ``ipBlock``.
    ADDRESSES = "addresses"


@dataclass(frozen=True)
class Source:
    """Who a policy rule admits, as precisely as the policy says it."""

    origin: Origin
    namespace: str = ""
    # PROJECT: the services whose pods are admitted; None: every pod of the namespace.
    services: frozenset[str] | None = None
    # INGRESS, NAMESPACES: which of their pods, in words; empty: every pod.
    pods: str = ""
    # NAMESPACES: which namespaces, in words. ADDRESSES: the CIDR and its exceptions.
    detail: str = ""

    def covers(self, namespace: str, service: str) -> bool:
        """Whether the pods of ``service`` in ``namespace`` (a namespace we know) are admitted."""
        if self.origin == Origin.ANYWHERE:
            return True
        return (
            self.origin == Origin.PROJECT
            and self.namespace == namespace
            and (self.services is None or service in self.services)
        )


@dataclass(frozen=True)
class Grant:
    """``source`` may reach ``service`` in ``namespace``, because of ``policy``."""

    source: Source
    namespace: str
    service: str
    # The NetworkPolicy that admits the traffic; empty when no policy isolates the service.
    policy: str
    # The ports the rule admits on, in words ("TCP 8080"); empty: every port.
    ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reachability:
    """Every grant into the services of a project and of its peers."""

    namespace: str
    # Namespace -> its services, the project's own first.
    services: Mapping[str, tuple[str, ...]]
    grants: tuple[Grant, ...]
    # (namespace, service) of the services whose outgoing traffic some Egress policy limits.
    limited_egress: frozenset[tuple[str, str]] = frozenset()
    # Namespace -> the names of the NetworkPolicies it should hold.
    policies: Mapping[str, frozenset[str]] = field(default_factory=dict)
    _into: Mapping[tuple[str, str], tuple[Grant, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def into(self, service: str, namespace: str | None = None) -> tuple[Grant, ...]:
        """The grants admitting traffic to ``service`` (of the project unless ``namespace``)."""
        return self._into.get((namespace or self.namespace, service), ())

    def reachable_from(self, service: str) -> list[Grant]:
        """The grants by which the project's ``service`` may reach a service we know."""
        return [grant for grant in self.grants if grant.source.covers(self.namespace, service)]


def reachability(
    own: DesiredState, peers: Iterable[DesiredState] = (), *, settings: ClusterSettings
) -> Reachability:
    """Who may reach the services of ``own`` and of ``peers``, from their NetworkPolicies.

    ``peers``: the desired states of the projects ``own`` is peered with, so the grants into
    their services (whether ``own``'s services may reach them) come from their own policies.
    """
    states = {own.namespace: own}
    for peer in peers:
        states.setdefault(peer.namespace, peer)
    known = {name: _Namespace(state) for name, state in states.items()}
    evaluator = _Evaluator(known, settings.ingress_namespace)
    grants: list[Grant] = []
    for namespace in known.values():
        grants.extend(evaluator.grants_into(namespace))
    grants = [allowed for grant in grants if (allowed := evaluator.egress(grant)) is not None]
    into: dict[tuple[str, str], list[Grant]] = {}
    for grant in grants:
        into.setdefault((grant.namespace, grant.service), []).append(grant)
    return Reachability(
        namespace=own.namespace,
        services={name: tuple(namespace.pods) for name, namespace in known.items()},
        grants=tuple(grants),
        limited_egress=frozenset(
            (namespace.name, service)
            for namespace in known.values()
            for policy in namespace.policies
            if "Egress" in _policy_types(policy)
            for service in namespace.selected(policy)
        ),
        policies={
            namespace.name: frozenset(
                policy.get("metadata", {}).get("name", "") for policy in namespace.policies
            )
            for namespace in known.values()
        },
        _into={key: tuple(value) for key, value in into.items()},
    )


class _Namespace:
    """A namespace we have the desired state of: its labels, its pods, its policies."""

    def __init__(self, state: DesiredState) -> None:
        self.name = state.namespace
        namespace = state.objects.get(("Namespace", state.namespace))
        labels = (namespace or {}).get("metadata", {}).get("labels") or {}
        self.labels: Mapping[str, str] = {NAMESPACE_NAME_LABEL: state.namespace, **labels}
        # Service name -> the labels its pods carry, in name order.
        self.pods: dict[str, Mapping[str, str]] = {
            name: obj.get("spec", {}).get("selector") or {}
            for name, obj in sorted(state.of_kind("Service").items())
        }
        self.policies = [obj for _, obj in sorted(state.of_kind("NetworkPolicy").items())]

    def selected(self, policy: Mapping[str, Any]) -> list[str]:
        """The services whose pods the policy's ``podSelector`` selects."""
        matches = _compiled(policy.get("spec", {}).get("podSelector") or {})
        return [name for name, labels in self.pods.items() if matches(labels)]


def _policy_types(policy: Mapping[str, Any]) -> list[str]:
    """``policyTypes`` as Kubernetes defaults it: Ingress, plus Egress when egress rules exist."""
    spec = policy.get("spec", {})
    types = spec.get("policyTypes")
    if types:
        return list(types)
    return ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]


class _Evaluator:
    def __init__(self, known: Mapping[str, _Namespace], ingress_namespace: str) -> None:
        self.known = known
        self.ingress = ingress_namespace if ingress_namespace not in known else ""

    def grants_into(self, namespace: _Namespace) -> list[Grant]:
        grants: list[Grant] = []
        isolated: set[str] = set()
        for policy in namespace.policies:
            if "Ingress" not in _policy_types(policy):
                continue
            name = policy.get("metadata", {}).get("name", "")
            selected = namespace.selected(policy)
            isolated.update(selected)
            for rule in policy.get("spec", {}).get("ingress") or []:
                ports = _ports(rule.get("ports"))
                for source in self.sources(rule.get("from"), namespace.name):
                    grants.extend(
                        Grant(source, namespace.name, service, name, ports) for service in selected
                    )
        grants.extend(
            Grant(Source(Origin.ANYWHERE), namespace.name, service, "")
            for service in namespace.pods
            if service not in isolated
        )
        return grants

    def sources(self, peers: Sequence[Mapping[str, Any]] | None, home: str) -> list[Source]:
        """Who a rule's ``from`` admits; ``home`` is the policy's namespace."""
        if not peers:
            return [Source(Origin.ANYWHERE)]
        found: list[Source] = []
        for peer in peers:
            block = peer.get("ipBlock")
            if block is not None:
                found.append(Source(Origin.ADDRESSES, detail=_block_words(block)))
                continue
            pod_selector: Selector | None = peer.get("podSelector")
            namespace_selector: Selector | None = peer.get("namespaceSelector")
            if namespace_selector is None:
                found.extend(self._in_known(self.known[home], pod_selector))
                continue
            for namespace in self.known.values():
                if _matches(namespace_selector, namespace.labels):
                    found.extend(self._in_known(namespace, pod_selector))
            pods = _pod_words(pod_selector)
            if self.ingress and _matches(namespace_selector, {NAMESPACE_NAME_LABEL: self.ingress}):
                found.append(Source(Origin.INGRESS, namespace=self.ingress, pods=pods))
            others = _other_namespaces(namespace_selector, {*self.known, self.ingress})
            if others:
                found.append(Source(Origin.NAMESPACES, pods=pods, detail=others))
        return found

    def _in_known(self, namespace: _Namespace, selector: Selector | None) -> list[Source]:
        if not selector:
            return [Source(Origin.PROJECT, namespace=namespace.name)]
        services = frozenset(
            name for name, labels in namespace.pods.items() if _matches(selector, labels)
        )
        return (
            [Source(Origin.PROJECT, namespace=namespace.name, services=services)]
            if services
            else []
        )

    def egress(self, grant: Grant) -> Grant | None:
        """The grant as the senders' own Egress policies leave it: None if none may send.

        Only senders we know the policies of (a project's pods) are judged; the rest of the
        cluster's egress is not ours to know.
        """
        source = grant.source
        if source.origin != Origin.PROJECT:
            return grant
        sender = self.known[source.namespace]
        policies = [p for p in sender.policies if "Egress" in _policy_types(p)]
        if not policies:
            return grant
        target = self.known[grant.namespace]
        target_pods = target.pods.get(grant.service, {})
        candidates = source.services if source.services is not None else frozenset(sender.pods)
        allowed = frozenset(
            service
            for service in candidates
            if self._may_send(sender, service, policies, target, target_pods)
        )
        if not allowed:
            return None
        if allowed == candidates:
            return grant
        narrowed = Source(Origin.PROJECT, namespace=source.namespace, services=allowed)
        return Grant(narrowed, grant.namespace, grant.service, grant.policy, grant.ports)

    def _may_send(
        self,
        sender: _Namespace,
        service: str,
        policies: Sequence[Mapping[str, Any]],
        target: _Namespace,
        target_pods: Mapping[str, str],
    ) -> bool:
        selecting = [p for p in policies if service in sender.selected(p)]
        if not selecting:
            return True
        for policy in selecting:
            for rule in policy.get("spec", {}).get("egress") or []:
                peers = rule.get("to")
                if not peers:
                    return True
                for peer in peers:
                    if "ipBlock" in peer:
                        continue  # pod addresses are not known here
                    namespace_selector = peer.get("namespaceSelector")
                    if namespace_selector is None:
                        in_namespace = target.name == sender.name
                    else:
                        in_namespace = _matches(namespace_selector, target.labels)
                    if in_namespace and _matches(peer.get("podSelector") or {}, target_pods):
                        return True
        return False


def _matches(selector: Selector, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector against a set of labels; ``{}`` matches everything."""
    return _compiled(selector)(labels)


def _compiled(selector: Selector) -> Callable[[Mapping[str, str]], bool]:
    """``_matches`` for one selector, to be tried against many pods: an ``In`` list of ten
    thousand web services is a set looked up once per pod, not a list scanned."""
    required = dict(selector.get("matchLabels") or {})
    expressions = [
        (
            expression.get("key", ""),
            expression.get("operator"),
            frozenset(expression.get("values") or []),
        )
        for expression in selector.get("matchExpressions") or []
    ]

    def matches(labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in required.items()) and all(
            _expression_holds(key, operator, values, labels)
            for key, operator, values in expressions
        )

    return matches


def _expression_holds(
    key: str, operator: str | None, values: frozenset[str], labels: Mapping[str, str]
) -> bool:
    match operator:
        case "In":
            ok = key in labels and labels[key] in values
        case "NotIn":
            ok = key not in labels or labels[key] not in values
        case "Exists":
            ok = key in labels
        case "DoesNotExist":
            ok = key not in labels
        case _:
            ok = False  # the API server refuses any other operator
    return ok


def _pinned_names(selector: Selector) -> set[str] | None:
    """The namespace names a selector is limited to by their name label; None if not."""
    pinned: set[str] | None = None
    name = (selector.get("matchLabels") or {}).get(NAMESPACE_NAME_LABEL)
    if name is not None:
        pinned = {name}
    for expression in selector.get("matchExpressions") or []:
        if expression.get("key") == NAMESPACE_NAME_LABEL and expression.get("operator") == "In":
            values = set(expression.get("values") or [])
            pinned = values if pinned is None else pinned & values
    return pinned


def _other_namespaces(selector: Selector, known: set[str]) -> str:
    """In words, the namespaces beyond ``known`` that ``selector`` may match; empty if none."""
    pinned = _pinned_names(selector)
    rest = _without_name(selector)
    condition = f" ({_selector_words(rest)})" if rest else ""
    if pinned is None:
        return f"every other namespace{condition}"
    names = sorted(pinned - known)
    if not names:
        return ""
    return f"namespace{'s' if len(names) > 1 else ''} {', '.join(names)}{condition}"


def _without_name(selector: Selector) -> dict[str, Any]:
    """The selector's conditions other than the name label's ``matchLabels`` and ``In``."""
    rest: dict[str, Any] = {}
    labels = {
        key: value
        for key, value in (selector.get("matchLabels") or {}).items()
        if key != NAMESPACE_NAME_LABEL
    }
    if labels:
        rest["matchLabels"] = labels
    expressions = [
        expression
        for expression in selector.get("matchExpressions") or []
        if not (
            expression.get("key") == NAMESPACE_NAME_LABEL and expression.get("operator") == "In"
        )
    ]
    if expressions:
        rest["matchExpressions"] = expressions
    return rest


def _selector_words(selector: Selector) -> str:
    """``{"matchLabels": {"team": "a"}}`` -> ``labelled team=a``."""
    words = [
        f"labelled {key}={value}" for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expression in selector.get("matchExpressions") or []:
        key = expression.get("key", "")
        values = ", ".join(expression.get("values") or [])
        match expression.get("operator"):
            case "In":
                words.append(f"{key} in ({values})")
            case "NotIn":
                words.append(f"{key} not in ({values})")
            case "Exists":
                words.append(f"with a {key} label")
            case "DoesNotExist":
                words.append(f"without a {key} label")
    return " and ".join(words) or "any"


def _pod_words(selector: Selector | None) -> str:
    """Which pods of a namespace we know nothing of a ``podSelector`` picks; empty: all."""
    return f"pods {_selector_words(selector)}" if selector else ""


def _block_words(block: Mapping[str, Any]) -> str:
    cidr = str(block.get("cidr", ""))
    excepted = [str(entry) for entry in block.get("except") or []]
    return f"{cidr} except {', '.join(excepted)}" if excepted else cidr


def _ports(ports: Sequence[Mapping[str, Any]] | None) -> tuple[str, ...]:
    words = []
    for port in ports or []:
        protocol = port.get("protocol", "TCP")
        number = port.get("port")
        end = port.get("endPort")
        if number is None:
            words.append(f"every {protocol} port")
        elif end is not None:
            words.append(f"{protocol} {number}-{end}")
        else:
            words.append(f"{protocol} {number}")
    return tuple(words)
