"""Demo organizations, projects, services and one login per role. Safe to run again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from networking import mtls, references, rotation
from networking.crypto import SecretText
from networking.models import (
    AuditEvent,
    Membership,
    Organization,
    PeeringRequest,
    Project,
    ReferenceVariable,
    Service,
    SharedSecret,
)

DEMO_PASSWORD = "demo-password-2026"

# (username, organization slug or None, role, is_staff)
DEMO_USERS = [
    ("owner", "acme", Membership.Role.OWNER, False),
    ("member", "acme", Membership.Role.MEMBER, False),
    ("viewer", "acme", Membership.Role.VIEWER, False),
    ("globex-owner", "globex", Membership.Role.OWNER, False),
    ("initech-owner", "initech", Membership.Role.OWNER, False),
    ("support", None, None, True),
    ("outsider", None, None, False),
]

# The spec's own examples.
ACME_SERVICES = [
    ("api", Service.Kind.WEB, [8080]),
    ("postgres", Service.Kind.POSTGRESQL, [5432]),
    ("cache", Service.Kind.REDIS, [6379]),
    ("background-worker", Service.Kind.PRIVATE, [3000]),
]
GLOBEX_SERVICES = [
    ("api", Service.Kind.WEB, [8080]),
    ("warehouse", Service.Kind.MYSQL, [3306]),
]
# A second Enterprise customer, so the whole peering path can be walked across organizations:
# Acme's owner requests, Initech's owner accepts, support approves, either side revokes.
INITECH_SERVICES = [
    ("gateway", Service.Kind.WEB, [8080]),
    ("ledger", Service.Kind.POSTGRESQL, [5432]),
]


class Command(BaseCommand):
    help = "Create demo organizations, projects and users (idempotent) and print the logins."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            acme, _ = Organization.objects.get_or_create(
                slug="acme", defaults={"name": "Acme Corp", "plan": Organization.Plan.ENTERPRISE}
            )
            globex, _ = Organization.objects.get_or_create(
                slug="globex", defaults={"name": "Globex", "plan": Organization.Plan.PRO}
            )
            initech, _ = Organization.objects.get_or_create(
                slug="initech",
                defaults={"name": "Initech", "plan": Organization.Plan.ENTERPRISE},
            )
            storefront = self._project(acme, "Storefront", ACME_SERVICES)
            self._secret(storefront, "INTERNAL_API_SECRET", ["api", "background-worker"])
            self._project(globex, "Analytics", GLOBEX_SERVICES)
            self._project(initech, "Payments", INITECH_SERVICES)
            # A second Acme project, peered with Storefront (the Network page draws both).
            data = self._project(acme, "Data Platform", [("etl", Service.Kind.PRIVATE, [9000])])
            self._peering(storefront, data)
            # The database's connection string wired into api as DATABASE_URL.
            self._reference(storefront, "postgres", "api")
            # Mutual TLS on in Storefront, and postgres taking calls from api alone.
            mtls.enable(storefront, actor=None)
            services = {service.name: service for service in storefront.services.all()}
            mtls.set_callers(
                services["postgres"], any_caller=False, callers=[services["api"]], actor=None
            )
            organizations = {"acme": acme, "globex": globex, "initech": initech}
            User = get_user_model()
            for username, org_slug, role, is_staff in DEMO_USERS:
                user, created = User.objects.get_or_create(
                    username=username,
                    defaults={"is_staff": is_staff, "email": f"{username}@example.com"},
                )
                if created:
                    user.set_password(DEMO_PASSWORD)
                    user.save()
                if org_slug is not None and role is not None:
                    Membership.objects.get_or_create(
                        user=user, organization=organizations[org_slug], defaults={"role": role}
                    )

        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        self.stdout.write(
            "  owner          owner of Acme Corp (Enterprise): projects Storefront, Data Platform"
        )
        self.stdout.write("  member         member of Acme Corp")
        self.stdout.write("  viewer         viewer of Acme Corp (read-only)")
        self.stdout.write("  globex-owner   owner of Globex (Pro): project Analytics")
        self.stdout.write(
            "  initech-owner  owner of Initech (Enterprise): project Payments, to peer with"
        )
        self.stdout.write("  support        support staff (not a member of any customer)")
        self.stdout.write("  outsider       belongs to no organization")

    def _peering(self, requester: Project, target: Project) -> None:
        """An approved peering (support's decision, made here): the worker connects it."""
        open_pair = PeeringRequest.objects.filter(
            requester_project__in=[requester, target],
            target_project__in=[requester, target],
            status__in=PeeringRequest.OPEN,
        )
        if open_pair.exists():
            return
        now = timezone.now()
        peering = PeeringRequest.objects.create(
            requester_project=requester,
            target_project=target,
            justification="The data platform reads the storefront's orders (demo data).",
            status=PeeringRequest.Status.APPROVED,
            expires_at=now + timedelta(days=7),
            history=[
                {"status": status, "by": "demo data", "at": now.isoformat(), "reason": ""}
                for status in (
                    PeeringRequest.Status.PENDING_SUPPORT,
                    PeeringRequest.Status.APPROVED,
                )
            ],
        )
        for project in (requester, target):
            project.record_change(
                actor=None,
                action=AuditEvent.Action.PEERING_APPROVED,
                target=f"peering with {peering.peer_of(project).name}",
                details={"request": peering.pk},
            )

    def _reference(self, project: Project, source: str, consumer: str) -> None:
        if ReferenceVariable.objects.filter(project=project).exists():
            return
        references.add(
            project.services.get(name=source),
            [project.services.get(name=consumer)],
            "",
            actor=None,
        )

    def _secret(self, project: Project, name: str, receivers: list[str]) -> None:
        """The spec's tip: one shared secret given to the caller and the worker it calls."""
        if project.shared_secrets.filter(name=name).exists():
            return
        secret = SharedSecret.objects.create(
            project=project, name=name, value=SecretText.seal(rotation.generate_value())
        )
        secret.services.set(project.services.filter(name__in=receivers))
        project.record_change(
            actor=None,
            action=AuditEvent.Action.SECRET_CREATED,
            target=name,
            details={"services": receivers},
        )

    def _project(
        self, organization: Organization, name: str, services: Sequence[tuple[str, str, list[int]]]
    ) -> Project:
        project = Project.objects.filter(organization=organization, name=name).first()
        if project is None:
            project = Project.objects.create(organization=organization, name=name)
            project.audit(actor=None, action=AuditEvent.Action.PROJECT_CREATED, target=name)
        for display_name, kind, ports in services:
            if project.services.filter(display_name=display_name).exists():
                continue
            service = Service(project=project, display_name=display_name, kind=kind, ports=ports)
            service.full_clean(exclude=["name"])  # clean() derives the name
            if service.is_database:
                service.generate_credentials()
            service.save()
            project.record_change(
                actor=None,
                action=AuditEvent.Action.SERVICE_CREATED,
                target=service.name,
                details={"kind": kind, "ports": ports},
                service=service,
            )
        return project
