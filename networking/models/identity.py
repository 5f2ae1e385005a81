"""Mutual TLS between a project's services: the project's certificate authorities and each
service's certificate (``networking.mtls`` issues, renews and rotates them).

Private keys are sealed like every secret (``EncryptedTextField``): they leave the database
only in the project's ``stackblaze-tls`` Secret, never in a page, a log, a task message or an
API answer. Certificates are public and shown as they are.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from networking.crypto import EncryptedTextField
from networking.models.projects import Project, Service


class MutualTLS(models.Model):
    """A project with mutual TLS on: since when, by whom, and its CA rotation's phase.

    A CA rotation follows the shared secrets' protocol, refusing no request: every service
    first trusts the new CA beside the old (``trust_new``), then gets a certificate signed by
    the new one (``issue_new``), then stops trusting the old (``retire_old``). Each phase moves
    on once its files have reached the pods: the pass that wrote them, then
    ``MTLS_PROPAGATION_SECONDS`` for the kubelet to refresh every mounted volume.
    """

    class Phase(models.TextChoices):
        TRUST_NEW = "trust_new", "Every service trusts the new CA beside the old"
        ISSUE_NEW = "issue_new", "Certificates are re-issued by the new CA"
        RETIRE_OLD = "retire_old", "The old CA is no longer trusted"

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="mtls")
    enabled_at = models.DateTimeField(auto_now_add=True)
    enabled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    enabled_by_label = models.CharField(max_length=150)
    rotation_phase = models.CharField(max_length=20, choices=Phase, blank=True)
    phase_started_at = models.DateTimeField(null=True, blank=True)
    # When a pass had applied the phase's files: the propagation wait counts from there.
    phase_applied_at = models.DateTimeField(null=True, blank=True)
    last_rotated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"mutual TLS of {self.project_id}"

    @property
    def rotating(self) -> bool:
        return bool(self.rotation_phase)


class CertificateAuthority(models.Model):
    """One of a project's CAs. ``generation`` counts them; a rotation makes the next. A CA
    no longer trusted keeps its (public) certificate for the record and loses its key."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="certificate_authorities"
    )
    generation = models.PositiveIntegerField()
    certificate = models.TextField()
    key = EncryptedTextField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When its certificate expires: beat rotates a CA well before (``mtls.rotate_expiring``).
    not_after = models.DateTimeField()
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "generation"]
        constraints = [
            models.UniqueConstraint(fields=["project", "generation"], name="unique_ca_generation")
        ]

    def __str__(self) -> str:
        return f"CA {self.generation}"


class ServiceCertificate(models.Model):
    """A service's current certificate: its hostnames and identity, signed by ``authority``."""

    service = models.OneToOneField(Service, on_delete=models.CASCADE, related_name="certificate")
    authority = models.ForeignKey(
        CertificateAuthority, on_delete=models.CASCADE, related_name="certificates"
    )
    certificate = models.TextField()
    key = EncryptedTextField()
    # What it names, to re-issue it when they change (a rename, an old hostname ending).
    hostnames = models.JSONField(default=list)
    serial = models.CharField(max_length=40)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    # Two thirds into its life: beat looks for those due (an index range, not a scan).
    renew_after = models.DateTimeField(db_index=True)
    issued_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"certificate of {self.service_id}"
