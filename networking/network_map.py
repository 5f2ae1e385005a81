"""A project's private network in words: who can reach each service, what it can reach, why.

Read off the desired NetworkPolicies of the project and of the projects it is peered with
(``networking.cluster.reachability``), never restated beside them, for the Network page and
each service's page. With it, what the watcher saw differ in the cluster (``Project.drift``),
so the pages can mark where the cluster does not match yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from django.db.models import Q, QuerySet

from networking.cluster.reachability import Grant, Origin, Reachability, Source, reachability
from networking.cluster.reconcile import cluster_settings
from networking.models import PeeringRequest, Project, Service
from networking.passes import desired_state_for

# How the rows of the table are ordered: the project itself first, the rest of the world last.
_ORDER = {
    Origin.PROJECT: 0,
    Origin.INGRESS: 1,
    Origin.NAMESPACES: 2,
    Origin.ADDRESSES: 3,
    Origin.ANYWHERE: 4,
}
# A service page counts the services of a project up to this many, not past it.
COUNTED_UP_TO = 1000
_SERVICE_FIELDS = ("pk", "name", "display_name", "kind", "ports", "project_id")


@dataclass(frozen=True)
class Peer:
    """A project this one is peered with (the peering approved or active), and its services."""

    project: Project
    peering: PeeringRequest
    services: list[Service]


@dataclass(frozen=True)
class Reason:
    """Why a source may reach a destination: in words, and the policy that says so."""

    text: str
    policy: str
    ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class Destination:
    """A service a row reaches; ``service_id`` for the project's own (to link to its page)."""

    name: str
    service_id: int | None = None


@dataclass(frozen=True)
class Row:
    """One row of the Network page's table: ``source`` may reach ``services`` of a project."""

    source: Source
    source_text: str
    namespace: str
    project_name: str
    services: list[str]
    # Every service of that project (then ``services`` is all of them).
    every: bool
    destinations: list[Destination]
    reason: Reason
    drifted: bool


@dataclass(frozen=True)
class Line:
    """One line of a service page's "who can reach it" or "what it can reach"."""

    text: str
    reasons: list[Reason]
    drifted: bool
    # The services named, when the line is about services (what it can reach).
    services: list[str] = field(default_factory=list)


@dataclass
class ProjectNetwork:
    """Who can reach whom in a project's private network, and why."""

    project: Project
    services: list[Service]
    peers: list[Peer]
    reach: Reachability

    # How many services each project (by namespace) has, when ``services`` and the peers'
    # hold only representatives of them (``for_service``); empty: they hold every service.
    counts: dict[str, int] = field(default_factory=dict)
    # With representatives only: the project's services whose Service differs in the cluster.
    drifted_services: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, project: Project) -> ProjectNetwork:
        """Four queries, whatever the number of services: the project's services, its
        peerings, the peers' services and the peers' own peerings."""
        services = list(project.services.only(*_SERVICE_FIELDS).order_by("name"))
        return cls._build(project, services, _every_service_of)

    @classmethod
    def for_service(cls, project: Project, service: Service) -> ProjectNetwork:
        """Who can reach ``service`` and what it can reach, at the same cost in a project of
        ten services or of a hundred thousand.

        The policies we write tell a project's services apart only by whether they are public
        web services (the ingress policy names those; every other rule admits or isolates a
        whole namespace). So the reach of ``service`` is worked out among ``service`` itself
        and one other service of each sort per project, exactly as among all of them; only
        the number of services in "every service in Storefront (N)" comes from a count.
        """
        others = project.services.exclude(pk=service.pk).only(*_SERVICE_FIELDS)
        services = [service, *_one_of_each_sort(others)]
        network = cls._build(project, services, _representatives)
        # Counted up to a bound: "every service in Storefront (more than 1,000)" past it.
        differing = sorted(name for kind, name in network.drift if kind == "Service")
        if differing:
            network.drifted_services = set(
                project.services.filter(name__in=differing).values_list("name", flat=True)
            )
        bound = COUNTED_UP_TO + 1
        network.counts = {
            known.namespace: Service.objects.filter(project_id=known.pk)[:bound].count()
            for known in network._projects.values()
        }
        return network

    @classmethod
    def _build(
        cls,
        project: Project,
        services: list[Service],
        services_of: Callable[[list[int]], dict[int, list[Service]]],
    ) -> ProjectNetwork:
        peerings = list(
            PeeringRequest.objects.filter(
                Q(requester_project=project) | Q(target_project=project),
                status__in=PeeringRequest.CONNECTED,
            )
            .select_related("requester_project__organization", "target_project__organization")
            .order_by("pk")
        )
        projects = {p.peer_of(project).pk: p.peer_of(project) for p in peerings}
        by_project = services_of(list(projects))
        # Whether a peer admits this project is its own policies' to say: build its state too.
        theirs: dict[int, list[PeeringRequest]] = {pk: [] for pk in projects}
        for other in PeeringRequest.objects.filter(
            Q(requester_project_id__in=list(projects)) | Q(target_project_id__in=list(projects)),
            status__in=PeeringRequest.CONNECTED,
        ).select_related("requester_project", "target_project"):
            for pk in (other.requester_project_id, other.target_project_id):
                if pk in theirs:
                    theirs[pk].append(other)
        peers = [Peer(p.peer_of(project), p, by_project[p.peer_of(project).pk]) for p in peerings]
        # Who reaches whom is the policies' doing: old hostnames (aliases) and what workloads
        # receive (references) change nothing there, so they are not read.
        reach = reachability(
            desired_state_for(
                project,
                secrets=[],
                peerings=peerings,
                services=services,
                aliases={},
                references=[],
            ),
            [
                desired_state_for(
                    peer.project,
                    secrets=[],
                    peerings=theirs[peer.project.pk],
                    services=peer.services,
                    aliases={},
                    references=[],
                )
                for peer in peers
            ],
            settings=cluster_settings(),
        )
        return cls(project=project, services=services, peers=peers, reach=reach)

    # -- Names ----------------------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        return self.project.namespace

    @cached_property
    def _projects(self) -> dict[str, Project]:
        return {
            self.namespace: self.project,
            **{peer.project.namespace: peer.project for peer in self.peers},
        }

    @cached_property
    def _ids(self) -> dict[str, int]:
        return {service.name: service.pk for service in self.services}

    @cached_property
    def _kinds(self) -> dict[str, str]:
        return {service.name: service.kind for service in self.services}

    def project_name(self, namespace: str) -> str:
        project = self._projects.get(namespace)
        return project.name if project is not None else namespace

    def source_text(self, source: Source) -> str:
        """Who a source is, in words: "every service in Storefront", "the ingress controller"."""
        match source.origin:
            case Origin.PROJECT:
                name = self.project_name(source.namespace)
                if source.services is None:
                    return f"every service in {name}"
                return f"{_listed(sorted(source.services))} in {name}"
            case Origin.INGRESS:
                pods = f" ({source.pods})" if source.pods else ""
                return f"the ingress controller{pods}"
            case Origin.NAMESPACES:
                return f"{source.pods or 'any pod'} in {source.detail}"
            case Origin.ADDRESSES:
                return f"addresses in {source.detail}"
        return "anyone: nothing limits who connects"

    def reason(self, grant: Grant) -> Reason:
        """Why ``grant`` holds: "same project", "peering with Analytics", and the policy."""
        source = grant.source
        match source.origin:
            case Origin.PROJECT if source.namespace == grant.namespace:
                text = "same project"
            case Origin.PROJECT:
                other = grant.namespace if source.namespace == self.namespace else source.namespace
                text = f"peering with {self.project_name(other)}"
            case Origin.INGRESS:
                public = (
                    grant.namespace == self.namespace
                    and self._kinds.get(grant.service) == Service.Kind.WEB
                )
                text = "ingress controller (public web service)" if public else "ingress controller"
            case Origin.ANYWHERE:
                text = "no policy isolates it" if not grant.policy else "a policy admits everyone"
            case Origin.NAMESPACES:
                text = "other namespaces"
            case _:
                text = "addresses"
        return Reason(text=text, policy=grant.policy, ports=grant.ports)

    # -- Drift ----------------------------------------------------------------------------------

    @cached_property
    def drift(self) -> set[tuple[str, str]]:
        return self.project.drift_objects

    @property
    def drift_texts(self) -> list[str]:
        return [str(record.get("text", "")) for record in self.project.drift]

    def drifted(self, grant: Grant) -> bool:
        """Whether the cluster differs, right now, in what this grant rests on: the policy that
        makes it, the Service of its destination, or the namespace. Only the project's own
        namespace is ours to know about."""
        if grant.namespace != self.namespace or not self.drift:
            return False
        return (
            bool({("Namespace", self.namespace), ("NetworkPolicy", grant.policy)} & self.drift)
            or ("Service", grant.service) in self.drift
        )

    @property
    def namespace_drifted(self) -> bool:
        return ("Namespace", self.namespace) in self.drift

    def service_drifted(self, name: str) -> bool:
        return bool({("Namespace", self.namespace), ("Service", name)} & self.drift)

    def policy_drifted(self, policy: str) -> bool:
        return bool({("Namespace", self.namespace), ("NetworkPolicy", policy)} & self.drift)

    def drift_about(self, service: str) -> list[str]:
        """What the cluster has differing that concerns ``service``, in words."""
        policies = {
            grant.policy
            for grant in (*self.reach.into(service), *self.reach.reachable_from(service))
            if grant.namespace == self.namespace or grant.source.namespace == self.namespace
        }
        concerned = {("Namespace", self.namespace), ("Service", service)} | {
            ("NetworkPolicy", policy) for policy in policies if policy
        }
        desired = self.reach.policies.get(self.namespace, frozenset())
        return [
            str(record.get("text", ""))
            for record in self.project.drift
            if (record.get("kind"), record.get("name")) in concerned
            # A policy in the cluster that is not desired may admit anyone to anything.
            or (record.get("kind") == "NetworkPolicy" and record.get("name") not in desired)
        ]

    # -- The table ------------------------------------------------------------------------------

    def _shown(self, grant: Grant) -> bool:
        """Into the project's services, everything; into a peer's, only what this project's
        own services may send (a peer's other peerings are not this project's to see)."""
        if grant.namespace == self.namespace:
            return True
        source = grant.source
        return source.origin == Origin.ANYWHERE or (
            source.origin == Origin.PROJECT and source.namespace == self.namespace
        )

    def rows(self) -> list[Row]:
        """The table: each source, the services it may reach in one project, and why."""
        grouped: dict[tuple[Source, str, tuple[str, ...], str], list[str]] = {}
        for grant in self.reach.grants:
            if self._shown(grant):
                key = (grant.source, grant.policy, grant.ports, grant.namespace)
                grouped.setdefault(key, []).append(grant.service)
        rows = []
        for (source, policy, ports, namespace), services in grouped.items():
            everything = self.reach.services.get(namespace, ())
            grants = [Grant(source, namespace, service, policy, ports) for service in services]
            rows.append(
                Row(
                    source=source,
                    source_text=self.source_text(source),
                    namespace=namespace,
                    project_name=self.project_name(namespace),
                    services=services,
                    every=len(everything) > 1 and set(services) == set(everything),
                    destinations=[
                        Destination(
                            name, self._ids.get(name) if namespace == self.namespace else None
                        )
                        for name in services
                    ],
                    reason=self.reason(grants[0]),
                    drifted=any(self.drifted(grant) for grant in grants),
                )
            )
        own = self.namespace
        rows.sort(
            key=lambda row: (
                row.namespace != own,
                row.project_name,
                self._rank(row.source),
                row.source_text,
                row.reason.policy,
            )
        )
        return rows

    # -- One service ----------------------------------------------------------------------------

    def who_reaches(self, service: str) -> list[Line]:
        """Who can reach the project's ``service``, one line per source."""
        by_source: dict[Source, list[Grant]] = {}
        for grant in self.reach.into(service):
            by_source.setdefault(grant.source, []).append(grant)
        ordered = sorted(by_source.items(), key=lambda item: self._rank(item[0]))
        return [
            Line(
                text=self.source_text(source),
                reasons=_unique(self.reason(grant) for grant in grants),
                drifted=any(self.drifted(grant) for grant in grants),
            )
            for source, grants in ordered
        ]

    def _rank(self, source: Source) -> tuple[int, bool, str]:
        """The project itself first, then its peers, the ingress controller, the rest."""
        return (_ORDER[source.origin], source.namespace != self.namespace, source.namespace)

    def reaches(self, service: str) -> list[Line]:
        """What the project's ``service`` can reach, one line per project."""
        by_namespace: dict[str, list[Grant]] = {}
        for grant in self.reach.reachable_from(service):
            by_namespace.setdefault(grant.namespace, []).append(grant)
        lines = []
        for namespace in self.reach.services:  # the project first, then its peers
            grants = by_namespace.get(namespace)
            if not grants:
                continue
            reached = sorted({grant.service for grant in grants})
            everything = self.reach.services[namespace]
            name = self.project_name(namespace)
            every = self.counts.get(namespace, len(everything)) > 1 and set(reached) == set(
                everything
            )
            text = (
                f"every service in {name} ({_how_many(self.counts.get(namespace, len(reached)))})"
                if every
                else f"{_listed(reached)} in {name}"
            )
            drifted = any(self.drifted(grant) for grant in grants)
            if every and namespace == self.namespace and self.counts:
                # Only representatives were looked at: any of the services they stand for may
                # be the one whose Service differs in the cluster.
                drifted = drifted or bool(self.drifted_services)
            lines.append(
                Line(
                    text=text,
                    reasons=_unique(self.reason(grant) for grant in grants),
                    drifted=drifted,
                    services=reached,
                )
            )
        return lines

    @property
    def egress_limited_anywhere(self) -> bool:
        """Whether a policy limits the connections some service of the project opens."""
        return any(namespace == self.namespace for namespace, _ in self.reach.limited_egress)

    def egress_limited(self, service: str) -> bool:
        """Whether a policy limits the connections ``service`` opens."""
        return (self.namespace, service) in self.reach.limited_egress


def _how_many(count: int) -> str:
    return f"more than {COUNTED_UP_TO:,}" if count > COUNTED_UP_TO else f"{count:,}"


def _every_service_of(project_ids: list[int]) -> dict[int, list[Service]]:
    by_project: dict[int, list[Service]] = {pk: [] for pk in project_ids}
    for service in (
        Service.objects.filter(project_id__in=project_ids).only(*_SERVICE_FIELDS).order_by("name")
    ):
        by_project[service.project_id].append(service)
    return by_project


def _one_of_each_sort(services: QuerySet[Service]) -> list[Service]:
    """A public web service and another service, if there are any (which ones does not
    matter: the policies treat every service of a sort alike)."""
    web = services.filter(kind=Service.Kind.WEB).order_by("kind", "pk")[:1]
    # The other sorts named, not "not web", so the index finds them however many web ones.
    others = [kind for kind in Service.Kind if kind != Service.Kind.WEB]
    other = services.filter(kind__in=others).order_by("kind", "pk")[:1]
    return [*web, *other]


def _representatives(project_ids: list[int]) -> dict[int, list[Service]]:
    return {
        pk: _one_of_each_sort(Service.objects.filter(project_id=pk).only(*_SERVICE_FIELDS))
        for pk in project_ids
    }


def _listed(names: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``a, b and c``."""
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _unique(reasons: Iterable[Reason]) -> list[Reason]:
    return list(dict.fromkeys(reasons))
