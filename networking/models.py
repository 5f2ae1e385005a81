"""The private network's desired state.

PostgreSQL is the source of truth: these rows say what each project's network should be, and
the cluster is made to match them (see ``networking/cluster``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import string
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q, Subquery
from django.db.models.functions import Greatest, Least, Lower
from django.utils import timezone

from networking import enqueue, naming, plain_text
from networking.crypto import EncryptedTextField, SecretText

logger = logging.getLogger(__name__)

_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no l, o, 0, 1: IDs get read aloud to support
_ID_LENGTH = 12
# A project ID, as URLs match it: anything else is not one (and never reaches a query).
PROJECT_ID_PATTERN = f"[{_ID_ALPHABET}]{{{_ID_LENGTH}}}"


def generate_project_uid() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


class Organization(models.Model):
    """A customer account: the unit of billing (its plan) and of membership."""

    class Plan(models.TextChoices):
        HOBBY = "hobby", "Hobby"
        PRO = "pro", "Pro"
        ENTERPRISE = "enterprise", "Enterprise"

    name = models.CharField(max_length=100, validators=[plain_text.single_line])
    slug = models.SlugField(max_length=50, unique=True)
    plan = models.CharField(max_length=20, choices=Plan, default=Plan.HOBBY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def create_project(self, name: str, *, actor: Any) -> Project:
        """A new project with its audit event, or ``ValidationError`` if the name is taken.

        Twenty identical clicks make one project: the unique constraint decides, and the
        others get the message a late click would get.
        """
        project = Project(organization=self, name=name.strip())
        project.full_clean(exclude=["uid"])
        try:
            with transaction.atomic():
                project.save()
                project.record_change(
                    actor=actor, action=AuditEvent.Action.PROJECT_CREATED, target=project.name
                )
        except IntegrityError:
            raise Project.name_taken(project.name) from None
        return project


class Membership(models.Model):
    """A user's role in an organization. Support staff are never members of customers."""

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"
        VIEWER = "viewer", "Viewer"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role, default=Role.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="one_membership_per_org")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display()}) in {self.organization}"

    def can_change_services(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.MEMBER)

    def can_reveal_credentials(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.MEMBER)

    def can_manage_project(self) -> bool:
        return self.role == self.Role.OWNER

    def can_manage_secrets(self) -> bool:
        """Create, reveal, rotate, re-attach and delete shared secrets."""
        return self.role == self.Role.OWNER

    def can_see_secret_details(self) -> bool:
        """Which services receive a secret, and how its rotation goes (never the value).

        Every role: viewers see everything and change nothing.
        """
        return self.role in (self.Role.OWNER, self.Role.MEMBER, self.Role.VIEWER)


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
                "name": [
                    f"This organization already has a project named “{name}”. Choose another name."
                ]
            },
            code="duplicate",
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
        self.drift, self.drift_seen_at = drift, now

    @staticmethod
    def clear_drift(project_id: int, *, seen_before: datetime) -> bool:
        """A pass that read the whole namespace from ``seen_before`` on made the cluster match:
        forget the drift seen before it (drift seen since is the next pass's to repair)."""
        return bool(
            Project.objects.filter(pk=project_id, drift_seen_at__lte=seen_before).update(
                drift=[], drift_seen_at=None, revision=F("revision") + 1
            )
        )

    @property
    def drift_objects(self) -> set[tuple[str, str]]:
        """(kind, name) of every cluster object kept in ``drift``."""
        return {(r["kind"], r["name"]) for r in self.drift if r.get("kind")}

    def retry_sync(self) -> None:
        """The Retry button: show "retrying" and enqueue a fresh pass with a fresh retry budget."""
        Project.objects.filter(pk=self.pk).update(
            sync_retry_at=timezone.now(), revision=F("revision") + 1
        )
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
        self.request_reconcile()
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
        Project.objects.filter(pk__in=list(project_ids)).update(revision=F("revision") + 1)

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
        """Record something a person did that does not change the desired state."""
        Project.touch([self.pk])
        return self._event(actor, action, target, details)


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

    def __str__(self) -> str:
        return self.display_name

    @property
    def is_database(self) -> bool:
        return self.kind in self.DATABASE_KINDS

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
        return _delete_once(
            self, actor=actor, action=AuditEvent.Action.SERVICE_DELETED, details={"kind": self.kind}
        )

    @staticmethod
    def lock_chosen(project: Project, chosen: Iterable[Service]) -> list[Service]:
        """Lock the chosen services of ``project`` for the current transaction.

        Refuses with a ``ValidationError`` on ``services`` if one was deleted after the form
        was shown, so nothing is attached to a service that no longer exists.
        """
        wanted = {service.pk: service for service in chosen}
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


def _delete_once(
    obj: Service | SharedSecret,
    *,
    actor: Any,
    action: AuditEvent.Action,
    details: dict[str, Any] | None = None,
) -> bool:
    """Delete ``obj`` and record it, once: False if another request deleted it first."""
    with transaction.atomic():
        stored = type(obj).objects.select_for_update().filter(pk=obj.pk).first()
        if stored is None:
            return False
        stored.delete()
        obj.project.record_change(actor=actor, action=action, target=stored.name, details=details)
    return True


def via_token_of(actor: Any) -> str:
    """The name of the API token ``actor`` is acting with, or "" in a browser session.

    The API's authentication marks the request's user with the token it presented
    (``via_token``), so every domain function that records who did something says so too.
    """
    return str(getattr(actor, "via_token", "") or "")


def actor_label(actor: Any, *, nobody: str = "system") -> str:
    """Who did something, as a log reads it: "alice", "alice via token ci-deploy", "system"."""
    if actor is None:
        return nobody
    via = via_token_of(actor)
    return f"{actor.get_username()} via token {via}" if via else str(actor.get_username())


class AuditEvent(models.Model):
    """Who did what to which object, and when. Never holds a secret value."""

    class Action(models.TextChoices):
        PROJECT_CREATED = "project.created", "created the project"
        PROJECT_RENAMED = "project.renamed", "renamed the project"
        PROJECT_DELETED = "project.deleted", "deleted the project"
        MEMBER_ADDED = "member.added", "added a member"
        MEMBER_ROLE_CHANGED = "member.role_changed", "changed the role of"
        MEMBER_REMOVED = "member.removed", "removed a member"
        SERVICE_CREATED = "service.created", "created a service"
        SERVICE_RENAMED = "service.renamed", "renamed a service"
        SERVICE_PORTS_CHANGED = "service.ports_changed", "changed a service’s ports"
        SERVICE_DELETED = "service.deleted", "deleted a service"
        CREDENTIALS_REVEALED = "service.credentials_revealed", "revealed database credentials"
        SECRET_CREATED = "secret.created", "created a shared secret"
        SECRET_UPDATED = "secret.updated", "changed which services receive a shared secret"
        SECRET_DELETED = "secret.deleted", "deleted a shared secret"
        SECRET_REVEALED = "secret.revealed", "revealed a shared secret"
        ROTATION_STARTED = "secret.rotation_started", "started rotating a shared secret"
        ROTATION_PHASE = "secret.rotation_phase", "moved a rotation to its next phase"
        ROTATION_GRACE_ENDED = "secret.rotation_grace_ended", "ended a rotation’s grace window"
        ROTATION_COMPLETED = "secret.rotation_completed", "completed a rotation"
        REFERENCE_ADDED = "service.reference_added", "gave a service the address of"
        REFERENCE_REMOVED = "service.reference_removed", "took from a service the address of"
        ALIAS_EXTENDED = "service.alias_extended", "kept an old hostname resolving longer"
        ALIAS_ENDED = "service.alias_ended", "ended an old hostname"
        ALIAS_EXPIRED = "service.alias_expired", "let an old hostname expire"
        PEERING_REQUESTED = "peering.requested", "requested VPC peering"
        PEERING_ACCEPTED = "peering.accepted", "accepted a peering request"
        PEERING_APPROVED = "peering.approved", "approved a peering request"
        PEERING_REJECTED = "peering.rejected", "rejected a peering request"
        PEERING_CANCELLED = "peering.cancelled", "cancelled a peering request"
        PEERING_EXPIRED = "peering.expired", "let a peering request expire"
        PEERING_ACTIVE = "peering.active", "connected a peering"
        PEERING_REVOKED = "peering.revoked", "revoked a peering"
        PEERING_DISCONNECTED = "peering.disconnected", "disconnected a peering"
        TOKEN_CREATED = "token.created", "created an API token"
        TOKEN_FIRST_USED = "token.first_used", "used an API token for the first time"
        TOKEN_REVOKED = "token.revoked", "revoked an API token"
        CONNECTION_TESTED = "service.connection_tested", "tested the connection to"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="audit_events"
    )
    project = models.ForeignKey(
        Project, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    # Kept apart from ``actor`` so the log still reads right after a user is deleted.
    actor_label = models.CharField(max_length=150)
    # The API token the change was made with ("" in a browser session): "alice via token ci".
    via_token = models.CharField(max_length=50, blank=True)
    action = models.CharField(max_length=64, choices=Action)
    target = models.CharField(max_length=200)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"], name="audit_by_project")]

    def __str__(self) -> str:
        return f"{self.actor_display} {self.get_action_display()} {self.target}"

    @property
    def actor_display(self) -> str:
        """Who, as people read it: "alice", or "alice via token ci-deploy"."""
        if self.via_token:
            return f"{self.actor_label} via token {self.via_token}"
        return self.actor_label

    @classmethod
    def record(
        cls,
        *,
        organization_id: int,
        project: Project | None,
        actor: Any,
        action: AuditEvent.Action,
        target: str,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """One event; ``project`` None for the organization's own log (team, deletions)."""
        return cls.objects.create(
            organization_id=organization_id,
            project=project,
            actor=actor if actor is not None and actor.is_authenticated else None,
            actor_label=actor.get_username() if actor is not None else "system",
            via_token=via_token_of(actor),
            action=action,
            target=target,
            details=details or {},
        )


class AppliedRecord(models.Model):
    """What the last reconcile pass of a project applied: a digest of each object it owns.

    A pass compares the next desired state with this record and writes only what differs,
    without reading the cluster, as long as the record can be trusted. It cannot be (``digests``
    is None) before the first pass, after a failed one, and whenever the watcher sees the
    cluster differ or the periodic resync wants a project re-read: each of those bumps
    ``marks``, so a pass that was already running when it happened fails to store its record
    (the store compares ``marks``) and the next pass reads everything.

    A row of its own, not fields on ``Project``: at a thousand services it holds tens of
    kilobytes no page needs.
    """

    project = models.OneToOneField(
        Project, on_delete=models.CASCADE, primary_key=True, related_name="applied_record"
    )
    digests = models.JSONField(null=True, blank=True, default=None)
    marks = models.PositiveBigIntegerField(default=0)
    # Some service's workload was rolling out when a pass last read the workloads: until one
    # sees them all rolled out, every pass reads them (a rotation waits on them).
    rolling_out = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"applied record of project {self.project_id}"

    @classmethod
    def distrust(cls, project_ids: Iterable[int]) -> int:
        """The cluster may differ from these projects' records: their next passes read it."""
        return cls.objects.filter(project_id__in=list(project_ids)).update(
            digests=None, marks=F("marks") + 1
        )


class WatcherHeartbeat(models.Model):
    """When a watcher last said it is watching the cluster: one row, whatever the fleet.

    A pass trusts its applied record only while this is fresh: with no watcher to notice a
    hand edit or a workload the deploy system just created, every pass reads the cluster.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    seen_at = models.DateTimeField()

    # A watcher beats every BEAT; three missed beats and the passes stop trusting records.
    BEAT: ClassVar[timedelta] = timedelta(seconds=2)
    STALE_AFTER: ClassVar[timedelta] = timedelta(seconds=6)

    def __str__(self) -> str:
        return f"watcher seen at {self.seen_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def beat(cls) -> None:
        """One statement (an upsert), whatever the number of projects."""
        WatcherHeartbeat.objects.bulk_create(
            [WatcherHeartbeat(pk=1, seen_at=timezone.now())],
            update_conflicts=True,
            update_fields=["seen_at"],
            unique_fields=["id"],
        )

    @classmethod
    def watching(cls, seen_at: Any) -> bool:
        """Whether a heartbeat read as ``seen_at`` (None: never) says a watcher is watching."""
        return seen_at is not None and timezone.now() - seen_at < cls.STALE_AFTER


class ApplyAttempt(models.Model):
    """One reconcile pass that changed something or failed: the sync history of a project.

    Passes that found the cluster already in sync only move ``Project.verified_at``.
    """

    class Result(models.TextChoices):
        APPLIED = "applied", "Applied"
        FAILED = "failed", "Failed"

    KEEP_PER_PROJECT: ClassVar[int] = 50

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="apply_attempts")
    generation = models.PositiveBigIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    result = models.CharField(max_length=20, choices=Result)
    changes = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["project", "-started_at"], name="attempts_by_project")]

    def __str__(self) -> str:
        return f"{self.get_result_display()} generation {self.generation}"

    @classmethod
    def record(cls, **fields: Any) -> ApplyAttempt:
        attempt = cls.objects.create(**fields)
        # Keep the newest KEEP_PER_PROJECT: drop the first id past them and older, in one
        # statement (no row past them: the subquery is NULL and nothing matches).
        first_dropped = (
            cls.objects.filter(project_id=attempt.project_id)
            .order_by("-id")
            .values("id")[cls.KEEP_PER_PROJECT : cls.KEEP_PER_PROJECT + 1]
        )
        cls.objects.filter(project_id=attempt.project_id, id__lte=Subquery(first_dropped)).delete()
        return attempt


class SharedSecret(models.Model):
    """A value given to chosen services of a project as an environment variable.

    ``value`` is what callers send. A rotation (see ``networking/rotation.py``) moves through
    its phases by way of ``next_value`` (accepted, not yet sent) and ``previous_value``
    (still accepted, no longer sent); ``version`` goes up at each change the workloads must
    restart for.
    """

    class Phase(models.TextChoices):
        ACCEPT_NEW = "accept_new", "Verifiers accept the new value"
        SEND_NEW = "send_new", "Callers send the new value"
        GRACE = "grace", "Grace window: the old value is still accepted"
        RETIRE_OLD = "retire_old", "The old value is retired"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="shared_secrets")
    name = models.CharField("environment variable", max_length=100)
    value = EncryptedTextField()
    next_value = EncryptedTextField(null=True, blank=True)
    previous_value = EncryptedTextField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    services = models.ManyToManyField(Service, related_name="shared_secrets", blank=True)

    rotation_phase = models.CharField(max_length=20, choices=Phase, blank=True)
    phase_started_at = models.DateTimeField(null=True, blank=True)
    grace_until = models.DateTimeField(null=True, blank=True)
    rotate_every_days = models.PositiveSmallIntegerField(null=True, blank=True)
    last_rotated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"], name="unique_secret_name_in_project"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def rotating(self) -> bool:
        return bool(self.rotation_phase)

    def create(self, receivers: Iterable[Service], *, actor: Any) -> None:
        """Save a new secret given to ``receivers``, audited; ``ValidationError`` on a clash."""
        try:
            with transaction.atomic():
                chosen = Service.lock_chosen(self.project, receivers)
                self._refuse_clashes(chosen)
                self.save()
                self.services.set(chosen)
                self.project.record_change(
                    actor=actor,
                    action=AuditEvent.Action.SECRET_CREATED,
                    target=self.name,
                    details={"services": sorted(service.name for service in chosen)},
                )
        except IntegrityError:
            self.pk = None
            raise ValidationError(
                {
                    "name": ValidationError(
                        f"This project already has a secret named {self.name}.",
                        code="duplicate",
                    )
                }
            ) from None

    def change_receivers(
        self, receivers: Iterable[Service], rotate_every_days: int | None, *, actor: Any
    ) -> bool:
        """Set who receives the secret and its schedule; True if anything changed.

        Compared under a row lock with what is stored, so identical saves record one change.
        ``SharedSecret.DoesNotExist`` if the secret was deleted meanwhile.
        """
        with transaction.atomic():
            stored = SharedSecret.objects.select_for_update().get(pk=self.pk)
            chosen = Service.lock_chosen(self.project, receivers)
            self._refuse_clashes(chosen)
            before = sorted(stored.services.values_list("name", flat=True))
            after = sorted(service.name for service in chosen)
            self.rotate_every_days = rotate_every_days
            if before == after and stored.rotate_every_days == rotate_every_days:
                return False
            self.services.set(chosen)
            self.save(update_fields=["rotate_every_days"])
            self.project.record_change(
                actor=actor,
                action=AuditEvent.Action.SECRET_UPDATED,
                target=self.name,
                details={"from": before, "to": after, "rotate_every_days": rotate_every_days},
            )
        return True

    def remove(self, *, actor: Any) -> bool:
        """Delete with its audit event; False if another request deleted it first."""
        return _delete_once(self, actor=actor, action=AuditEvent.Action.SECRET_DELETED)

    def _refuse_clashes(self, receivers: Iterable[Service]) -> None:
        """A receiver already given one of this secret's variables by a reference variable
        would get it twice: refused, with the reason."""
        names = [self.name, f"{self.name}_NEXT", f"{self.name}_PREVIOUS"]
        clash = (
            ReferenceVariable.objects.filter(consumer__in=list(receivers), variable__in=names)
            .select_related("consumer", "source")
            .first()
        )
        if clash is not None:
            raise ValidationError(
                {
                    "services": [
                        f"{clash.consumer.name} already gets {clash.variable} from the address "
                        f"of {clash.source.name}. Leave {clash.consumer.name} out, or remove "
                        "that reference first."
                    ]
                },
                code="clash",
            )


class SecretRotation(models.Model):
    """One rotation of a shared secret: who or what started it, its phases, how it ended."""

    class Result(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"

    secret = models.ForeignKey(SharedSecret, on_delete=models.CASCADE, related_name="rotations")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    # "a person" or "the schedule": kept as text so it reads right after the user is gone.
    started_by_label = models.CharField(max_length=150)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=20, choices=Result, default=Result.IN_PROGRESS)
    # [{"phase": ..., "at": iso time}], one entry per phase entered.
    phases = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"Rotation of {self.secret} ({self.get_result_display()})"


class PeeringRequest(models.Model):
    """A request to connect two projects' private networks (Enterprise), and its life.

    See ``networking/peering.py`` for the transitions; every one is kept in ``history``.
    """

    class Status(models.TextChoices):
        PENDING_ACCEPTANCE = "pending_acceptance", "Waiting for the other organization"
        PENDING_SUPPORT = "pending_support", "Waiting for support"
        APPROVED = "approved", "Approved, being connected"
        ACTIVE = "active", "Active"
        REJECTED = "rejected", "Rejected by support"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"
        REVOKING = "revoking", "Revoked, being disconnected"
        REVOKED = "revoked", "Revoked"

    PENDING: ClassVar[frozenset[str]] = frozenset(
        {Status.PENDING_ACCEPTANCE, Status.PENDING_SUPPORT}
    )
    # States in which the pair is taken: no second request for it.
    OPEN: ClassVar[frozenset[str]] = frozenset(
        {
            Status.PENDING_ACCEPTANCE,
            Status.PENDING_SUPPORT,
            Status.APPROVED,
            Status.ACTIVE,
            Status.REVOKING,
        }
    )
    # States in which the NetworkPolicies admitting each other should exist.
    CONNECTED: ClassVar[frozenset[str]] = frozenset({Status.APPROVED, Status.ACTIVE})
    # States only the worker moves on, once both namespaces hold (or dropped) their policy.
    CATCHING_UP: ClassVar[frozenset[str]] = frozenset({Status.APPROVED, Status.REVOKING})
    # States a pass of either project looks at: to connect, connected, or being revoked.
    IN_FLIGHT: ClassVar[tuple[str, ...]] = (Status.APPROVED, Status.ACTIVE, Status.REVOKING)

    requester_project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="peering_requests_sent"
    )
    target_project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="peering_requests_received"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    justification = models.TextField(validators=[plain_text.multiline])
    status = models.CharField(max_length=30, choices=Status)
    decision_reason = models.TextField(blank=True, validators=[plain_text.multiline])
    # Which namespaces hold their policy now (set by each project's reconcile).
    requester_side_applied = models.BooleanField(default=False)
    target_side_applied = models.BooleanField(default=False)
    # [{"status": ..., "by": username or "system", "at": iso time, "reason": ...}]
    history = models.JSONField(default=list, blank=True)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                Least("requester_project", "target_project"),
                Greatest("requester_project", "target_project"),
                condition=models.Q(
                    status__in=[
                        "pending_acceptance",
                        "pending_support",
                        "approved",
                        "active",
                        "revoking",
                    ]
                ),
                name="one_open_peering_per_pair",
            ),
            models.CheckConstraint(
                condition=~models.Q(requester_project=models.F("target_project")),
                name="no_peering_with_itself",
            ),
        ]

    def __str__(self) -> str:
        return f"Peering {self.requester_project} ↔ {self.target_project} ({self.status})"

    def peer_of(self, project: Project) -> Project:
        return (
            self.target_project
            if project.pk == self.requester_project_id
            else (self.requester_project)
        )

    @property
    def needs_acceptance(self) -> bool:
        return self.requester_project.organization_id != self.target_project.organization_id


class PeeringNotification(models.Model):
    """An email about a peering's new state, kept until it has been sent: an outbox.

    Written in the transaction that made the change, so neither a broker outage nor a lost
    message loses it (beat sends what is left), and claimed before sending, so a task
    delivered twice sends it once.
    """

    peering = models.ForeignKey(
        PeeringRequest, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.CharField(max_length=30)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=models.Q(sent_at__isnull=True),
                name="unsent_notifications",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} for peering {self.peering_id}"


class ApiToken(models.Model):
    """A personal token for the HTTP API: one user, one organization, a role no higher than theirs.

    The token itself (``sbk_`` and 40 letters and digits, so secret scanners can recognise a
    leaked one) is shown once, when it is issued. Only its SHA-256 digest is stored, with its
    first characters (``prefix``) to find the row and to tell tokens apart in a list.

    Support staff, who belong to no customer organization, hold tokens without one
    (role ``support``): those reach the peering queue and nothing of any tenant.
    """

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"
        VIEWER = "viewer", "Viewer"
        SUPPORT = "support", "Support staff"

    SCHEME: ClassVar[str] = "sbk_"
    _ALPHABET: ClassVar[str] = string.ascii_letters + string.digits
    _SECRET_LENGTH: ClassVar[int] = 40  # about 238 bits
    PREFIX_LENGTH: ClassVar[int] = len(SCHEME) + 8
    # Customer roles from least to most: a token's role never exceeds its holder's.
    _RANK: ClassVar[dict[str, int]] = {Role.VIEWER: 0, Role.MEMBER: 1, Role.OWNER: 2}
    # Writing last use on every request would make each API call a write: once a minute is
    # enough to tell a token in use from a forgotten one.
    LAST_USED_RESOLUTION: ClassVar[timedelta] = timedelta(minutes=1)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, null=True, blank=True, related_name="api_tokens"
    )
    name = models.CharField(max_length=50, validators=[plain_text.single_line])
    role = models.CharField(max_length=20, choices=Role)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Twenty identical "Create" clicks make one token; a revoked token's name is free.
            models.UniqueConstraint(
                F("user"),
                models.functions.Coalesce(F("organization"), models.Value(0)),
                Lower("name"),
                condition=Q(revoked_at__isnull=True),
                name="one_live_token_name_per_user_and_org",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def digest_of(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def capped_role(cls, token_role: str, member_role: str) -> str:
        """The lower of a token's role and its holder's role now (a demotion caps old tokens)."""
        return min(token_role, member_role, key=lambda role: cls._RANK.get(role, -1))

    @classmethod
    def roles_for(cls, member_role: str) -> list[str]:
        """The roles a member may give a new token: their own or lower."""
        rank = cls._RANK[member_role]
        return [role for role, level in cls._RANK.items() if level <= rank]

    @staticmethod
    def name_taken(name: str) -> ValidationError:
        return ValidationError(
            {
                "name": ValidationError(
                    f"You already have a token named “{name}”. Choose another name.",
                    code="duplicate",
                )
            }
        )

    @classmethod
    def issue(
        cls,
        *,
        user: Any,
        organization: Organization | None,
        name: str,
        role: str,
        expires_at: Any = None,
    ) -> tuple[ApiToken, str]:
        """A new token and its secret, which is never stored and cannot be shown again.

        Refused (``ValidationError``) when the role is above the user's role in the
        organization, or a support token is asked for by someone not on the support staff.
        """
        name = name.strip()
        if organization is None:
            if role != cls.Role.SUPPORT or not user.is_staff:
                raise ValidationError(
                    {"role": ["Only support staff hold tokens without an organization."]}
                )
        else:
            member_role = (
                Membership.objects.filter(user=user, organization=organization)
                .values_list("role", flat=True)
                .first()
            )
            if member_role is None or role not in cls.roles_for(member_role):
                raise ValidationError(
                    {"role": ["A token’s role can’t be higher than your own role here."]}
                )
        raw = cls.SCHEME + "".join(secrets.choice(cls._ALPHABET) for _ in range(cls._SECRET_LENGTH))
        token = cls(
            user=user,
            organization=organization,
            name=name,
            role=role,
            prefix=raw[: cls.PREFIX_LENGTH],
            digest=cls.digest_of(raw),
            expires_at=expires_at,
        )
        # The unique name is checked here with a message that says what to do; the
        # constraint itself still decides between two requests at the same moment.
        token.full_clean(exclude=["prefix", "digest"], validate_constraints=False)
        if (
            cls.objects.filter(user=user, organization=organization, revoked_at__isnull=True)
            .filter(name__iexact=name)
            .exists()
        ):
            raise cls.name_taken(name)
        try:
            with transaction.atomic():
                token.save()
                token._audit(user, AuditEvent.Action.TOKEN_CREATED)
        except IntegrityError:
            raise cls.name_taken(name) from None
        return token, raw

    @classmethod
    def authenticate(cls, raw: str) -> ApiToken:
        """The live token ``raw`` is, with its user; ``TokenRefused`` saying why not.

        The row is found by its prefix and the digests compared in constant time.
        """
        raw = raw.strip()
        secret = raw.removeprefix(cls.SCHEME)
        if (
            not raw.startswith(cls.SCHEME)
            or len(secret) != cls._SECRET_LENGTH
            or not (secret.isascii() and secret.isalnum())  # nothing else reaches a query
        ):
            raise TokenRefused("This is not a Stackblaze API token (they start with sbk_).")
        token = (
            cls.objects.select_related("user", "organization")
            .filter(prefix=raw[: cls.PREFIX_LENGTH])
            .first()
        )
        if token is None or not hmac.compare_digest(token.digest, cls.digest_of(raw)):
            raise TokenRefused("This token is not valid. Create a new one in the dashboard.")
        now = timezone.now()
        if token.revoked_at is not None:
            raise TokenRefused(f"The token “{token.name}” was revoked. Create a new one.")
        if token.expires_at is not None and token.expires_at <= now:
            raise TokenRefused(f"The token “{token.name}” has expired. Create a new one.")
        if not token.user.is_active:
            raise TokenRefused("This token’s account is deactivated.")
        if token.organization_id is not None:
            if token.membership() is None:
                raise TokenRefused(
                    f"This token’s holder is no longer a member of {token.organization}."
                )
        elif not token.user.is_staff:
            raise TokenRefused("This token’s holder is no longer on the support staff.")
        token.note_use(now)
        return token

    def membership(self) -> Membership | None:
        """The holder's membership as this token may use it: its role capped by the token's."""
        if self.organization_id is None:
            return None
        found = (
            Membership.objects.select_related("organization")
            .filter(user_id=self.user_id, organization_id=self.organization_id)
            .first()
        )
        if found is not None:
            found.role = ApiToken.capped_role(self.role, found.role)
        return found

    def note_use(self, now: Any) -> None:
        """Record the use: the first one is audited, later ones update ``last_used_at``."""
        if self.last_used_at is None:
            # Compare-and-swap: of simultaneous first requests, one records the first use.
            if ApiToken.objects.filter(pk=self.pk, last_used_at__isnull=True).update(
                last_used_at=now
            ):
                self._audit(self.user, AuditEvent.Action.TOKEN_FIRST_USED)
        elif self.last_used_at < now - self.LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=self.pk).update(last_used_at=now)
        else:
            return  # used within the last minute: nothing to write
        self.last_used_at = now

    def revoke(self, *, actor: Any) -> bool:
        """Revoke once, audited; False if it was already revoked."""
        with transaction.atomic():
            if not ApiToken.objects.filter(pk=self.pk, revoked_at__isnull=True).update(
                revoked_at=timezone.now()
            ):
                return False
            self._audit(actor, AuditEvent.Action.TOKEN_REVOKED)
        return True

    def _audit(self, actor: Any, action: AuditEvent.Action) -> None:
        details = {"token": self.prefix, "role": self.role, "holder": self.user.get_username()}
        if self.organization_id is None:
            # Support tokens belong to no organization's log: the application log keeps them.
            logger.info("%s: %s %s (%s)", action.label, actor_label(actor), self.name, details)
            return
        AuditEvent.record(
            organization_id=self.organization_id,
            project=None,
            actor=actor,
            action=action,
            target=self.name,
            details=details,
        )


class TokenRefused(Exception):
    """An API token that may not be used; ``str()`` says why, for the caller."""
