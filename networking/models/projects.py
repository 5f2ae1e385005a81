"""A project's private network: its services, their old hostnames (aliases), the variables
one service gives another (references), and connection tests."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q, Subquery
from django.db.models.functions import Lower
from django.utils import timezone

from networking import contention, enqueue, live, naming, plain_text
from networking.crypto import EncryptedTextField, SecretText
from networking.models.audit import AuditEvent
from networking.models.peering import PeeringRequest
from networking.models.sync import AppliedRecord
from networking.models.tenancy import Organization

if TYPE_CHECKING:
    from networking.models.secrets import SharedSecret


_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no l, o, 0, 1: IDs get read aloud to support


_ID_LENGTH = 12


# A project ID, as URLs match it: anything else is not one (and never reaches a query).
PROJECT_ID_PATTERN = f"[{_ID_ALPHABET}]{{{_ID_LENGTH}}}"


def generate_project_uid() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


class Project(models.Model):
    """A customer project: one private network, one Kubernetes namespace.

    The namespace is named from ``uid``, which never changes, so renaming a project moves
    nothing in the cluster. ``generation`` counts changes to the desired state.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="projects"
    )
    name = models.CharField(max_length=100, validators=[plain_text.single_line])
    uid = models.CharField(
        "project ID", max_length=12, unique=True, default=generate_project_uid, editable=False
    )
    generation = models.PositiveBigIntegerField(default=1)
    # The generation of the change that last deleted a service (0: none), set by a trigger as
    # the row goes, whatever deletes it (migration 0025). A worker that knows the services as
    # of an older generation reads them all again: a row that is gone leaves nothing else to
    # see it by (``lease.claim``), and counting the rows would scan them on every change. A
    # default in the database too, so the previous release's inserts work during a deploy.
    services_removed_generation = models.PositiveBigIntegerField(default=0, db_default=0)
    # Moves on whenever anything a project page shows changes (a change, an audit event, the
    # sync state, what the cluster assigned): open pages ask "anything new since N?" and get
    # "no" from this one column (``dashboard/live.py``).
    revision = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    # Sync state, written only by the reconcile loop (always with .update(), never save()).
    applied_generation = models.PositiveBigIntegerField(default=0)
    applied_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    reconcile_lease_until = models.DateTimeField(null=True, blank=True)
    reconcile_lease_token = models.CharField(max_length=32, blank=True)
    # Set while a reconcile message for the project waits in the queue (cleared when a worker
    # takes it): at most one is queued per project, so a backlog cannot grow.
    reconcile_queued_at = models.DateTimeField(null=True, blank=True)
    sync_error = models.TextField(blank=True)
    sync_error_generation = models.PositiveBigIntegerField(null=True, blank=True)
    sync_retry_at = models.DateTimeField(null=True, blank=True)
    # What the watcher saw differ in the cluster that no pass has repaired yet, by object:
    # [{"kind": "NetworkPolicy", "name": "project-isolation", "text": "... differs"}], written
    # by ``report_drift`` and cleared by the next pass that read the whole namespace. Pages
    # mark it while it lasts. Almost always empty: nothing to load but "[]".
    drift = models.JSONField(default=list, blank=True)
    drift_seen_at = models.DateTimeField(null=True, blank=True)

    # Objects kept in ``drift``: the pages name them; beyond this they say how many more.
    DRIFT_KEPT: ClassVar[int] = 100

    class SyncState(models.TextChoices):
        QUEUED = "queued", "Queued"
        APPLYING = "applying", "Applying"
        IN_SYNC = "in_sync", "In sync"
        RETRYING = "retrying", "Retrying"
        FAILED = "failed", "Failed"

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                F("organization"), Lower("name"), name="unique_project_name_in_org"
            )
        ]
        indexes = [
            # Only the leases held right now, where beat looks for dead holders every few seconds.
            models.Index(
                fields=["reconcile_lease_until"],
                condition=~Q(reconcile_lease_token=""),
                name="project_lease_held",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def name_taken(name: str) -> ValidationError:
        return ValidationError(
            {
                "name": ValidationError(
                    f"This organization already has a project named “{name}”. Choose another name.",
                    code="duplicate",
                )
            }
        )

    def validate_constraints(self, exclude: Any = None) -> None:
        # The unique name is checked here with a message that says what to do; the
        # constraint itself still decides between two requests at the same moment.
        super().validate_constraints(exclude={*(exclude or ()), "organization", "name"})
        if (
            self.organization_id is not None
            and Project.objects.filter(organization_id=self.organization_id, name__iexact=self.name)
            .exclude(pk=self.pk)
            .exists()
        ):
            raise Project.name_taken(self.name)

    def rename(self, name: str, *, actor: Any) -> bool:
        """Rename under a row lock; True if the name changed (and was audited once).

        ``Project.DoesNotExist`` if it was deleted meanwhile.
        """
        name = name.strip()
        try:
            with transaction.atomic():
                locked = Project.objects.select_for_update().filter(pk=self.pk).first()
                if locked is None:
                    raise Project.DoesNotExist("This project was deleted meanwhile.")
                if locked.name == name:
                    self.name = name
                    return False
                self.name = name
                self.full_clean(exclude=["uid"])
                Project.objects.filter(pk=self.pk).update(name=name)
                self.audit(
                    actor=actor,
                    action=AuditEvent.Action.PROJECT_RENAMED,
                    target=name,
                    details={"from": locked.name, "to": name},
                )
        except IntegrityError:
            raise Project.name_taken(name) from None
        return True

    def remove(self, *, actor: Any) -> bool:
        """Delete the project and everything in it; False if it was deleted meanwhile.

        Its namespace goes once this commits (``networking.signals``, then the worker). Projects
        it was peered with are re-applied, so their policies stop admitting its namespace, and
        their audit logs say why. The deletion is in the organization's audit log (the event
        outlives the project, with its name and ID).
        """
        with transaction.atomic():
            locked = Project.objects.select_for_update().filter(pk=self.pk).first()
            if locked is None:
                return False
            peerings = PeeringRequest.objects.filter(
                Q(requester_project=locked) | Q(target_project=locked),
                status__in=[
                    PeeringRequest.Status.APPROVED,
                    PeeringRequest.Status.ACTIVE,
                    PeeringRequest.Status.REVOKING,
                ],
            )
            peer_ids = {
                other
                for pair in peerings.values_list("requester_project_id", "target_project_id")
                for other in pair
                if other != locked.pk
            }
            AuditEvent.record(
                organization_id=locked.organization_id,
                project=None,
                actor=actor,
                action=AuditEvent.Action.PROJECT_DELETED,
                target=locked.name,
                details={"project_id": locked.uid, "namespace": locked.namespace},
            )
            locked.delete()
            # Its notifications went with it (its organization's, and support's about it): the
            # open pages' unread counts must hear of it.
            live.inbox_moved(live.inbox_audiences([locked.organization_id, None]))
            for peer in Project.objects.filter(pk__in=peer_ids).order_by("pk"):
                peer.record_change(
                    actor=actor,
                    action=AuditEvent.Action.PEERING_DISCONNECTED,
                    target=locked.name,
                    details={"reason": "the peered project was deleted"},
                )
        return True

    NAMESPACE_PREFIX = "prj-"

    @property
    def namespace(self) -> str:
        return f"{Project.NAMESPACE_PREFIX}{self.uid}"

    @classmethod
    def orphaned_namespaces(cls, namespaces: Iterable[str]) -> set[str]:
        """Those of ``namespaces`` (all of them ours) whose project no longer exists."""
        names = set(namespaces)
        uids = [name.removeprefix(cls.NAMESPACE_PREFIX) for name in names]
        live = cls.objects.filter(uid__in=uids).values_list("uid", flat=True)
        return names - {f"{cls.NAMESPACE_PREFIX}{uid}" for uid in live}

    @property
    def sync_state(self) -> Project.SyncState:
        """Whether the cluster has caught up with this project's desired state.

        "Applying" only while a live lease says a worker is at it: its holder renews it every
        few seconds, so a killed worker stops counting within one lease time.
        """
        if self.reconcile_lease_until is not None and self.reconcile_lease_until > timezone.now():
            return Project.SyncState.APPLYING
        if self.sync_error and self.sync_error_generation == self.generation:
            return Project.SyncState.RETRYING if self.sync_retry_at else Project.SyncState.FAILED
        if self.applied_generation >= self.generation:
            return Project.SyncState.IN_SYNC
        return Project.SyncState.QUEUED

    @property
    def in_sync(self) -> bool:
        return self.sync_state == Project.SyncState.IN_SYNC

    def request_reconcile(self, *, stale_after: float | None = None) -> bool:
        """Ask a worker to look at this project once the current transaction commits.

        At most one message per project waits in the queue: if one already does, it will read
        this change when it runs (it reads the rows then, not now), so nothing is sent. The
        message carries only the id. ``stale_after`` (seconds) also replaces a message marked
        queued that long ago, which a broker outage or a lost message never delivered.
        True if a message was sent (or will be on commit).
        """
        now = timezone.now()
        free = Q(reconcile_queued_at__isnull=True)
        if stale_after is not None:
            free |= Q(reconcile_queued_at__lt=now - timedelta(seconds=stale_after))
        if not Project.objects.filter(free, pk=self.pk).update(reconcile_queued_at=now):
            return False
        project_id = self.pk

        def send() -> None:
            if not enqueue.send(enqueue.RECONCILE_PROJECT, project_id):
                # Nothing is queued after all: let the next change or resync try again.
                Project.objects.filter(pk=project_id, reconcile_queued_at=now).update(
                    reconcile_queued_at=None
                )

        transaction.on_commit(send)
        return True

    @classmethod
    def take_queued_reconcile(cls, project_id: int) -> None:
        """A worker took the project's message: the next change may queue another."""
        cls.objects.filter(pk=project_id).exclude(reconcile_queued_at=None).update(
            reconcile_queued_at=None
        )

    def report_drift(self, found: Iterable[Mapping[str, str]] = ()) -> bool:
        """The cluster differs from what was applied: queue a pass that reads it in full.

        ``found``: what differs, as ``{"kind", "name", "text"}`` (``drift.Difference.record``).
        The cluster objects among them (those with a kind) are kept in ``drift``, merged by
        object with what is kept already (a look at one service must not hide a policy seen
        differing before), until a pass that read the whole namespace clears them
        (``clear_drift``); open pages move on to show it. A ClusterIP or a workload status
        the database has yet to record is no difference in the cluster: not kept.
        """
        records = [
            {"kind": r["kind"], "name": r.get("name", ""), "text": r.get("text", "")}
            for r in found
            if r.get("kind")
        ]
        if records:
            self._keep_drift(records)
        AppliedRecord.distrust([self.pk])
        return self.request_reconcile()

    def _keep_drift(self, records: list[dict[str, str]]) -> None:
        """Merge ``records`` into ``drift`` under a row lock (the watcher's looks may overlap
        a pass clearing it)."""
        now = timezone.now()
        with transaction.atomic():
            kept = (
                Project.objects.select_for_update()
                .filter(pk=self.pk)
                .values_list("drift", flat=True)
                .first()
            )
            if kept is None:
                return  # deleted meanwhile
            # Kept by object; what did not fit is only counted, in a last entry of no kind.
            more = sum(int(r.get("more", 0)) for r in kept if not r.get("kind"))
            merged = {(r["kind"], r["name"]): r for r in kept if r.get("kind")}
            for record in records:
                key = (record["kind"], record["name"])
                if key in merged or len(merged) < Project.DRIFT_KEPT - 1:
                    merged[key] = record
                else:
                    more += 1
            drift: list[dict[str, Any]] = list(merged.values())
            if more:
                drift.append({"kind": "", "name": "", "text": f"and {more} more", "more": more})
            Project.objects.filter(pk=self.pk).update(
                drift=drift, drift_seen_at=now, revision=F("revision") + 1
            )
            live.moved([self.pk])
        self.drift, self.drift_seen_at = drift, now

    @staticmethod
    def clear_drift(project_id: int, *, seen_before: datetime) -> bool:
        """A pass that read the whole namespace from ``seen_before`` on made the cluster match:
        forget the drift seen before it (drift seen since is the next pass's to repair)."""
        cleared = Project.objects.filter(pk=project_id, drift_seen_at__lte=seen_before).update(
            drift=[], drift_seen_at=None, revision=F("revision") + 1
        )
        if cleared:
            live.moved([project_id])
        return bool(cleared)

    @property
    def drift_objects(self) -> set[tuple[str, str]]:
        """(kind, name) of every cluster object kept in ``drift``."""
        return {(r["kind"], r["name"]) for r in self.drift if r.get("kind")}

    def retry_sync(self) -> None:
        """The Retry button: show "retrying" and enqueue a fresh pass with a fresh retry budget."""
        Project.objects.filter(pk=self.pk).update(
            sync_retry_at=timezone.now(), revision=F("revision") + 1
        )
        live.moved([self.pk])
        self.request_reconcile()

    def record_change(
        self,
        *,
        actor: Any,
        action: AuditEvent.Action,
        target: str,
        details: dict[str, Any] | None = None,
        service: Service | None = None,
    ) -> AuditEvent:
        """Note a change to the desired state: audit it and bump the generation.

        ``service``: the service whose row changed (created, renamed, new ports), stamped with
        the new generation and revision so its row on open pages updates alone. Call inside
        the transaction that wrote the change, so all of it commits together.
        """
        Project.objects.filter(pk=self.pk).update(
            generation=F("generation") + 1, revision=F("revision") + 1
        )
        if service is not None:
            now = Project.objects.filter(pk=self.pk)
            Service.objects.filter(pk=service.pk).update(
                changed_generation=Subquery(now.values("generation")[:1]),
                revision=Subquery(now.values("revision")[:1]),
            )
        # The worker's message first, then the open pages' mark: each is sent at the commit,
        # in this order, and the message is on the path to "In sync".
        self.request_reconcile()
        live.moved([self.pk])
        return self._event(actor, action, target, details)

    def _event(
        self, actor: Any, action: AuditEvent.Action, target: str, details: dict[str, Any] | None
    ) -> AuditEvent:
        return AuditEvent.record(
            organization_id=self.organization_id,
            project=self,
            actor=actor,
            action=action,
            target=target,
            details=details,
        )

    @staticmethod
    def touch(project_ids: Iterable[int]) -> None:
        """Something the project pages show changed: move their revision on."""
        ids = list(project_ids)
        Project.objects.filter(pk__in=ids).update(revision=F("revision") + 1)
        live.moved(ids)

    @staticmethod
    def touch_services(project_id: int, services: models.QuerySet[Service]) -> int:
        """These services' rows changed (a ClusterIP, a workload, now applied): stamp them with
        the project's next revision and move it on, together. How many there were."""
        with transaction.atomic():
            following = Project.objects.filter(pk=project_id).values("revision")[:1]
            stamped = services.filter(project_id=project_id).update(
                revision=Subquery(following) + 1
            )
            if stamped:
                Project.touch([project_id])
        return stamped

    def audit(
        self,
        *,
        actor: Any,
        action: AuditEvent.Action,
        target: str,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Record something a person did that does not change the desired state.

        Outside a transaction (a reveal, whose only write this is), the event and the
        revision's move are one transaction, tried again if PostgreSQL aborts it to break a
        deadlock among the writers it waits behind for the project's row: a reveal is never
        refused because other changes to the project deadlocked.
        """

        def record() -> AuditEvent:
            Project.touch([self.pk])
            return self._event(actor, action, target, details)

        return contention.retried_after_deadlock(record)


DATABASE_PORTS: dict[str, int] = {
    "postgresql": 5432,
    "mysql": 3306,
    "redis": 6379,
    "mongodb": 27017,
}


DEFAULT_WEB_PORT = 8080


MAX_PORTS = 10


class Service(models.Model):
    """A service or database in a project, reachable at ``<name>.internal``."""

    class Kind(models.TextChoices):
        WEB = "web", "Web service"
        PRIVATE = "private", "Private service / worker"
        POSTGRESQL = "postgresql", "PostgreSQL"
        MYSQL = "mysql", "MySQL"
        REDIS = "redis", "Redis"
        MONGODB = "mongodb", "MongoDB"

    class Status(models.TextChoices):
        """Whether the cluster holds the service as it is now: decided here and only here, for
        the overview's column and filter, the API and the CLI."""

        LIVE = "live", "Live"  # applied, and the cluster gave it its ClusterIP
        APPLIED = "applied", "Applied"  # applied; no ClusterIP read back yet
        PENDING = "pending", "Pending"  # changed at a generation the cluster has not reached

    DATABASE_KINDS: ClassVar[frozenset[str]] = frozenset(DATABASE_PORTS)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="services")
    display_name = models.CharField(max_length=100, validators=[plain_text.single_line])
    name = models.CharField("DNS label", max_length=naming.MAX_LABEL_LENGTH)
    kind = models.CharField(max_length=20, choices=Kind)
    ports = models.JSONField(default=list)
    # Read back from the cluster: the stable address the hostname resolves to.
    cluster_ip = models.GenericIPAddressField("ClusterIP", null=True, blank=True)
    # Read back from the cluster: the service's workload (made by the deploy system), which
    # shared-secret versions its pod template carries and whether that has rolled out.
    # {} when the service has no workload yet.
    workload = models.JSONField(default=dict, blank=True)

    database_user = models.CharField(max_length=63, blank=True)
    database_password = EncryptedTextField(blank=True, null=True)
    database_name = models.CharField(max_length=63, blank=True)

    # Mutual TLS (``networking.mtls``): whose certificate this service accepts calls from.
    # Every service of the project while ``accepts_any_caller``; else those listed.
    accepts_any_caller = models.BooleanField(default=True)
    accepts_calls_from = models.ManyToManyField(
        "self", symmetrical=False, related_name="may_call", blank=True
    )

    # The project generation that last changed what the cluster should hold for this service
    # (created, renamed, new ports): it is applied once the project's applied generation
    # reaches it. And the project revision at which its row last changed, for live pages.
    changed_generation = models.PositiveBigIntegerField(default=0)
    revision = models.PositiveBigIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"], name="unique_service_name_in_project"
            )
        ]
        indexes = [
            # A service of a sort (the oldest database, a non-web service) in a project of any
            # size: an index range, not a scan of every service.
            models.Index(fields=["project", "kind", "id"], name="services_by_kind"),
            # The services a generation changed (a pass's delta; rows turning "applied"): an
            # index range at any project size.
            models.Index(fields=["project", "changed_generation"], name="services_by_change"),
        ]

    def __str__(self) -> str:
        return self.display_name

    @property
    def is_database(self) -> bool:
        return self.kind in self.DATABASE_KINDS

    @property
    def status(self) -> Service.Status:
        """Its status against its project's applied generation (see ``Status``)."""
        if self.changed_generation > self.project.applied_generation:
            return Service.Status.PENDING
        return Service.Status.LIVE if self.cluster_ip else Service.Status.APPLIED

    @staticmethod
    def having_status(status: str, applied_generation: int) -> Q:
        """The rows whose ``status`` is ``status``, in a project applied up to
        ``applied_generation``: the same rule as ``status``, as a query."""
        if status == Service.Status.PENDING:
            return Q(changed_generation__gt=applied_generation)
        return Q(
            changed_generation__lte=applied_generation,
            cluster_ip__isnull=status == Service.Status.APPLIED,
        )

    def secret_version(self, secret_name: str) -> int | None:
        """The version of a shared secret this service's workload runs, if it has one."""
        for entry in str(self.workload.get("secrets", "")).split(","):
            name, _, version = entry.partition("=")
            if name == secret_name and version.isdecimal():
                return int(version)
        return None

    @property
    def internal_hostname(self) -> str:
        return naming.internal_hostname(self.name)

    @property
    def primary_port(self) -> int | None:
        return self.ports[0] if self.ports else None

    @staticmethod
    def default_ports(kind: str) -> list[int]:
        if kind in DATABASE_PORTS:
            return [DATABASE_PORTS[kind]]
        if kind == Service.Kind.WEB:
            return [DEFAULT_WEB_PORT]
        return []

    @staticmethod
    def name_for(project_id: int, display_name: str, *, exclude_pk: int | None = None) -> str:
        """The DNS label ``display_name`` gets in this project, or ``ValidationError``.

        Applies the naming rule and refuses a name another service of the project already has
        (after normalization, so "API" and "api" collide); the message names that service.
        """
        name = naming.normalize_service_name(display_name)
        others = Service.objects.filter(project_id=project_id, name=name)
        if exclude_pk is not None:
            others = others.exclude(pk=exclude_pk)
        clash = others.values_list("display_name", flat=True).first()
        if clash is not None:
            raise ValidationError(
                f"The service “{clash}” already uses {naming.internal_hostname(name)} in this "
                "project. Choose another name, or rename that service first.",
                code="duplicate",
            )
        # An old hostname kept resolving after a rename is reserved until it expires; the
        # service it points to may take its old name back (which ends that alias).
        aliases = ServiceAlias.objects.filter(project_id=project_id, name=name)
        if exclude_pk is not None:
            aliases = aliases.exclude(service_id=exclude_pk)
        alias = aliases.select_related("service").first()
        if alias is not None:
            raise ValidationError(
                f"{alias.internal_hostname} still resolves to “{alias.service.display_name}”, "
                f"which was renamed from it, until {alias.expires_at:%Y-%m-%d %H:%M} UTC. "
                "Choose another name, or end that old hostname first on its service’s page.",
                code="reserved",
            )
        return name

    def clean(self) -> None:
        errors: dict[str, Any] = {}
        try:
            self.name = Service.name_for(
                self.project_id, self.display_name or "", exclude_pk=self.pk
            )
        except ValidationError as error:
            errors["display_name"] = error  # with its code: "duplicate" is a clash, not a typo
        if self.is_database:
            standard = DATABASE_PORTS[self.kind]
            if self.ports != [standard]:
                errors["ports"] = [
                    f"{self.get_kind_display()} listens on port {standard}; "
                    "database ports can’t be changed."
                ]
        elif not self.ports:
            errors["ports"] = ["Enter the port your service listens on, for example 3000."]
        elif (
            len(self.ports) > MAX_PORTS
            or len(set(self.ports)) != len(self.ports)
            or not all(type(port) is int and 1 <= port <= 65535 for port in self.ports)
        ):
            errors["ports"] = [
                f"Ports must be up to {MAX_PORTS} different numbers from 1 to 65535."
            ]
        if errors:
            raise ValidationError(errors)

    def create(self, *, actor: Any) -> None:
        """Save this new service (a database with fresh credentials), audited once.

        Validate first (``full_clean``). The project is locked first, so a name reserved by an
        old hostname that is still resolving (``ServiceAlias``) is checked against what is
        stored at that moment; two requests for one name at the same moment: the unique
        constraint decides, and the loser gets a ``ValidationError`` on ``display_name``
        saying the hostname was just taken.
        """
        if self.is_database:
            self.generate_credentials()
        with transaction.atomic():
            Project.objects.select_for_update().filter(pk=self.project_id).first()
            self._refuse_if_mtls_full()
            try:
                self.name = Service.name_for(self.project_id, self.display_name)
            except ValidationError as error:
                raise ValidationError({"display_name": error}) from None
            try:
                with transaction.atomic():
                    self.save()
            except IntegrityError:
                self.pk = None
                raise ValidationError(
                    {
                        "display_name": ValidationError(
                            f"{self.internal_hostname} was just taken.", code="duplicate"
                        )
                    }
                ) from None
            self.project.record_change(
                actor=actor,
                action=AuditEvent.Action.SERVICE_CREATED,
                target=self.name,
                details={"kind": self.kind, "ports": self.ports},
                service=self,
            )

    def _refuse_if_mtls_full(self) -> None:
        """A project with mutual TLS keeps every service's files in one Secret (at most
        1 MiB): past ``MTLS_MAX_SERVICES`` it takes no more services."""
        limit = settings.MTLS_MAX_SERVICES
        if (
            Project.objects.filter(pk=self.project_id, mtls__isnull=False).exists()
            and Service.objects.filter(project_id=self.project_id).count() >= limit
        ):
            raise ValidationError(
                {
                    "display_name": ValidationError(
                        f"This project has mutual TLS on and {limit} services, the most it can "
                        "have (their certificates share one Kubernetes Secret). Create this "
                        "service in another project.",
                        code="mtls_full",
                    )
                }
            )

    def save_changes(self, *, actor: Any, keep_old_name_for: timedelta = timedelta(0)) -> list[str]:
        """Save a rename or new ports, audited once per real change; what changed.

        The row is locked and compared with what is stored now, not with what the form saw,
        so twenty identical saves record one rename. ``Service.DoesNotExist`` if it is gone.
        A rename keeps the old hostname resolving for ``keep_old_name_for`` (a
        ``ServiceAlias``); renaming back to one of its old names ends that alias.
        """
        with transaction.atomic():
            # The project first, as creating a service does: names are claimed one at a time.
            Project.objects.select_for_update().filter(pk=self.project_id).first()
            stored = Service.objects.select_for_update().get(pk=self.pk)
            if self.name != stored.name:
                # Checked again under the lock: an alias may have claimed the name meanwhile.
                self.name = Service.name_for(self.project_id, self.display_name, exclude_pk=self.pk)
            # Only what a person edits: the worker may have recorded the ClusterIP or the
            # workload since this instance was read, and those stay as it wrote them.
            self.save(update_fields=["display_name", "name", "ports", "updated_at"])
            changed = []
            if self.name != stored.name:
                changed.append("name")
                ended = ServiceAlias.objects.filter(service=self, name=self.name).delete()[0]
                kept_until = None
                if keep_old_name_for > timedelta(0):
                    kept_until = timezone.now() + keep_old_name_for
                    ServiceAlias.objects.create(
                        project_id=self.project_id,
                        service=self,
                        name=stored.name,
                        expires_at=kept_until,
                    )
                details: dict[str, Any] = {"from": stored.name, "to": self.name}
                if kept_until is not None:
                    details["old_name_until"] = kept_until.isoformat(timespec="minutes")
                if ended:
                    details["alias_ended"] = self.name
                self.project.record_change(
                    actor=actor,
                    action=AuditEvent.Action.SERVICE_RENAMED,
                    target=self.name,
                    details=details,
                    service=self,
                )
            if self.ports != stored.ports:
                changed.append("ports")
                self.project.record_change(
                    actor=actor,
                    action=AuditEvent.Action.SERVICE_PORTS_CHANGED,
                    target=self.name,
                    details={"from": stored.ports, "to": self.ports},
                    service=self,
                )
        return changed

    def remove(self, *, actor: Any) -> bool:
        """Delete with its audit event; False if another request deleted it first."""
        return delete_once(
            self, actor=actor, action=AuditEvent.Action.SERVICE_DELETED, details={"kind": self.kind}
        )

    @staticmethod
    def lock_chosen(project: Project, chosen: Iterable[Service]) -> list[Service]:
        """Lock the chosen services of ``project`` for the current transaction.

        Refuses with a ``ValidationError`` on ``services`` if one was deleted after the form
        was shown, so nothing is attached to a service that no longer exists.
        """
        wanted = {service.pk: service for service in chosen}
        # The project's row first, as every change takes it (see ``delete_once``).
        Project.objects.select_for_update().filter(pk=project.pk).values_list("pk").first()
        locked = list(
            Service.objects.select_for_update().filter(project=project, pk__in=list(wanted))
        )
        gone = sorted(wanted[pk].display_name for pk in set(wanted) - {s.pk for s in locked})
        if gone:
            raise ValidationError(
                {
                    "services": [
                        f"{', '.join(gone)} was deleted meanwhile. Choose again from the "
                        "services that exist now."
                    ]
                },
                code="gone",
            )
        return locked

    def generate_credentials(self) -> None:
        """Give a database its user, password and database name."""
        base = self.name.replace("-", "_")[:40]
        self.database_user = (
            f"{base}_{secrets.choice(string.ascii_lowercase)}{secrets.token_hex(2)}"
        )
        self.database_password = SecretText.seal(secrets.token_urlsafe(24))
        self.database_name = base if self.kind != Service.Kind.REDIS else ""
        if self.kind == Service.Kind.REDIS:
            self.database_user = ""


ALIAS_DEFAULT = timedelta(hours=24)


# How long a rename keeps the old hostname resolving, as the form offers it.
ALIAS_CHOICES: tuple[tuple[int, str], ...] = (
    (0, "Don’t keep it"),
    (3600, "1 hour"),
    (24 * 3600, "24 hours"),
    (7 * 24 * 3600, "7 days"),
)


ALIAS_EXTENSION = timedelta(hours=24)


class ServiceAlias(models.Model):
    """A renamed service's old hostname, still resolving until ``expires_at``.

    The worker keeps a second ClusterIP Service under the old name, with the service's
    selector and ports, so callers that still use ``old-name.internal`` reach the same pods
    while they move to the new name. The name stays reserved in the project meanwhile.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="service_aliases")
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField("old DNS label", max_length=naming.MAX_LABEL_LENGTH)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["expires_at", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="unique_alias_in_project")
        ]
        indexes = [models.Index(fields=["expires_at"], name="aliases_by_expiry")]

    def __str__(self) -> str:
        return f"{self.internal_hostname} → {self.service_id}"

    @property
    def internal_hostname(self) -> str:
        return naming.internal_hostname(self.name)

    def _locked(self) -> ServiceAlias | None:
        return (
            ServiceAlias.objects.select_for_update()
            .select_related("service")
            .filter(pk=self.pk)
            .first()
        )

    def extend(self, *, actor: Any, seen: datetime | None, by: timedelta = ALIAS_EXTENSION) -> bool:
        """Keep the old hostname resolving ``by`` longer than the end the person saw.

        False if its end is no longer ``seen`` (someone extended it meanwhile): twenty
        identical clicks extend it once. ``ServiceAlias.DoesNotExist`` if it was ended meanwhile.
        """
        with transaction.atomic():
            locked = self._locked()
            if locked is None:
                raise ServiceAlias.DoesNotExist(f"{self.internal_hostname} was ended meanwhile.")
            if seen is None or locked.expires_at != seen:
                self.expires_at = locked.expires_at
                return False
            locked.expires_at = max(locked.expires_at, timezone.now()) + by
            locked.save(update_fields=["expires_at"])
            self.expires_at = locked.expires_at
            self.service.project.audit(
                actor=actor,
                action=AuditEvent.Action.ALIAS_EXTENDED,
                target=locked.internal_hostname,
                details={
                    "service": locked.service.name,
                    "until": locked.expires_at.isoformat(timespec="minutes"),
                },
            )
        return True

    def end(
        self,
        *,
        actor: Any,
        action: AuditEvent.Action | None = None,
        due_by: datetime | None = None,
    ) -> bool:
        """Stop the old hostname resolving now; False if it is gone already.

        ``due_by``: only if its end is still at or before then (the expiry's check, made under
        the lock: an extension committed since the alias was found due keeps it).
        """
        with transaction.atomic():
            locked = self._locked()
            if locked is None or (due_by is not None and locked.expires_at > due_by):
                return False
            locked.delete()
            self.service.project.record_change(
                actor=actor,
                action=action or AuditEvent.Action.ALIAS_ENDED,
                target=locked.internal_hostname,
                details={"service": locked.service.name},
            )
        return True

    @classmethod
    def expire_due(cls, now: datetime | None = None) -> int:
        """Beat: end the aliases whose time is up, each audited; how many."""
        now = now or timezone.now()
        expired = 0
        due = cls.objects.filter(expires_at__lte=now).select_related("service__project")
        for alias in due:
            if alias.end(actor=None, action=AuditEvent.Action.ALIAS_EXPIRED, due_by=now):
                expired += 1
        return expired


class ConnectionTest(models.Model):
    """One "Test connection": a short-lived probe pod in the project's own namespace resolves
    the service's hostname and opens a TCP connection to each of its ports, as any pod of the
    project would; what it met, and what that means in plain words.

    Advanced by the worker (``networking.connection_tests``): queued, running, then passed,
    failed or error (the test itself could not run). At most one unfinished test per service.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PASSED = "passed", "Connected"
        FAILED = "failed", "Failed"
        ERROR = "error", "Could not run"

    UNFINISHED: ClassVar[tuple[str, ...]] = (Status.QUEUED, Status.RUNNING)
    # A test unfinished this long lost its worker (the probe's own deadline is 60 s): it is
    # given up, and a new one may start.
    ABANDONED_AFTER = timedelta(minutes=3)

    service = models.ForeignKey(
        "Service", on_delete=models.CASCADE, related_name="connection_tests"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    # What was tested, as the dashboard showed it then.
    hostname = models.CharField(max_length=80)
    ports = models.JSONField(default=list)
    expected_ip = models.GenericIPAddressField(null=True, blank=True)
    pod_name = models.CharField(max_length=63, blank=True)
    # The probe's own report (DNS answer, each port's outcome and latency) and the findings.
    report = models.JSONField(default=dict, blank=True)
    findings = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["service", "-created_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["service"],
                condition=Q(status__in=["queued", "running"]),
                name="one_unfinished_connection_test_per_service",
            )
        ]

    def __str__(self) -> str:
        return f"connection test of {self.hostname} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status not in self.UNFINISHED

    @classmethod
    def start(cls, service: Service, *, actor: Any) -> tuple[ConnectionTest, bool]:
        """Queue a test of ``service`` (audited), or hand back the one still running.

        (test, created): concurrent clicks make one test; the others get that one.
        """
        cls.objects.filter(
            service=service,
            status__in=cls.UNFINISHED,
            created_at__lt=timezone.now() - cls.ABANDONED_AFTER,
        ).update(
            status=cls.Status.ERROR,
            finished_at=timezone.now(),
            error="The test stopped without an answer (its worker was restarted). Start it again.",
        )
        running = cls.objects.filter(service=service, status__in=cls.UNFINISHED).first()
        if running is not None:
            return running, False
        try:
            with transaction.atomic():
                test = cls.objects.create(
                    service=service,
                    requested_by=actor if getattr(actor, "pk", None) else None,
                    hostname=service.internal_hostname,
                    ports=list(service.ports),
                    expected_ip=service.cluster_ip,
                )
                service.project.audit(
                    actor=actor,
                    action=AuditEvent.Action.CONNECTION_TESTED,
                    target=service.name,
                    details={"ports": list(service.ports)},
                )
        except IntegrityError:
            running = cls.objects.filter(service=service, status__in=cls.UNFINISHED).first()
            if running is None:  # finished in between: a new one can start
                return cls.start(service, actor=actor)
            return running, False

        def send() -> None:
            if not enqueue.send(enqueue.RUN_CONNECTION_TEST, test.pk):
                # Nothing would ever run it: say so now, and free the service for a new test.
                cls.objects.filter(pk=test.pk, status=cls.Status.QUEUED).update(
                    status=cls.Status.ERROR,
                    finished_at=timezone.now(),
                    error="The workers could not be reached, so the test did not run. Try "
                    "again in a moment.",
                )

        transaction.on_commit(send)
        return test, True


class ReferenceVariable(models.Model):
    """A service's address given to another service of the project as an environment variable:
    a database's connection string (``DATABASE_URL``) or a service's internal URL.

    The worker keeps the value in the project's Secret and the variable on the consumer's
    workload, and rolls that workload once whenever the value changes (a rename, a new
    password), so nobody copies a connection string by hand or lets one go stale.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="references")
    source = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="used_by")
    consumer = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="references")
    variable = models.CharField("environment variable", max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["consumer__name", "variable"]
        constraints = [
            models.UniqueConstraint(
                fields=["consumer", "variable"], name="one_reference_per_variable"
            ),
            models.UniqueConstraint(fields=["source", "consumer"], name="one_reference_per_pair"),
            models.CheckConstraint(
                condition=~models.Q(source=models.F("consumer")), name="no_reference_to_itself"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.variable} for service {self.consumer_id}"


def delete_once(
    obj: Service | SharedSecret,
    *,
    actor: Any,
    action: AuditEvent.Action,
    details: dict[str, Any] | None = None,
) -> bool:
    """Delete ``obj`` and record it, once: False if another request deleted it first."""
    with transaction.atomic():
        # The project's row first, as every change takes it (a pass's "in sync" too, which
        # then restamps services: the other order could deadlock with it).
        Project.objects.select_for_update().filter(pk=obj.project_id).values_list("pk").first()
        stored = type(obj).objects.select_for_update().filter(pk=obj.pk).first()
        if stored is None:
            return False
        stored.delete()
        obj.project.record_change(actor=actor, action=action, target=stored.name, details=details)
    return True
