"""Tenancy: organizations (the unit of billing) and their members' roles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.db import IntegrityError, models, transaction

from networking import plain_text
from networking.models.audit import AuditEvent

if TYPE_CHECKING:
    from networking.models.projects import Project


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
        project = self.projects.model(organization=self, name=name.strip())
        project.full_clean(exclude=["uid"])
        try:
            with transaction.atomic():
                project.save()
                project.record_change(
                    actor=actor, action=AuditEvent.Action.PROJECT_CREATED, target=project.name
                )
        except IntegrityError:
            raise project.name_taken(project.name) from None
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

    # Roles from least to most. A credential that carries a role of its own (an API token)
    # acts with the lower of it and its holder's role today (a demotion caps old tokens).
    RANK: ClassVar[dict[str, int]] = {Role.VIEWER: 0, Role.MEMBER: 1, Role.OWNER: 2}

    @classmethod
    def lower_role(cls, one: str, other: str) -> str:
        """The lower of two roles; an unknown role (support staff's) is lowest here."""
        return min(one, other, key=lambda role: cls.RANK.get(role, -1))

    @classmethod
    def roles_up_to(cls, role: str) -> list[str]:
        """The roles at or below ``role``: those a member may hand to a token."""
        rank = cls.RANK[role]
        return [each for each, level in cls.RANK.items() if level <= rank]

    def can_change_services(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.MEMBER)

    def can_reveal_credentials(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.MEMBER)

    def can_manage_project(self) -> bool:
        return self.role == self.Role.OWNER

    def can_manage_secrets(self) -> bool:
        """Create, reveal, rotate, re-attach and delete shared secrets."""
        return self.role == self.Role.OWNER

    def can_manage_mtls(self) -> bool:
        """Turn mutual TLS on, rotate the project's CA, choose who may call a service: the
        project's security, as its secrets are. Every role sees certificates (public)."""
        return self.role == self.Role.OWNER

    def can_see_secret_details(self) -> bool:
        """Which services receive a secret, and how its rotation goes (never the value).

        Every role: viewers see everything and change nothing.
        """
        return self.role in (self.Role.OWNER, self.Role.MEMBER, self.Role.VIEWER)
