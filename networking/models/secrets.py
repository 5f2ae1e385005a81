"""Shared secrets, given to chosen services as environment variables, and their rotations."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction

from networking import live
from networking.crypto import EncryptedTextField
from networking.models.audit import AuditEvent
from networking.models.projects import Project, ReferenceVariable, Service, delete_once


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
        """Delete with its audit event; False if another request deleted it first. Its
        notifications (a rotation waiting) go with it: the open pages' counts hear of it."""
        deleted = delete_once(self, actor=actor, action=AuditEvent.Action.SECRET_DELETED)
        if deleted:
            live.inbox_moved(live.inbox_audiences([self.project.organization_id]))
        return deleted

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
