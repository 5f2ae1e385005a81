"""What the API keeps for itself: the answers to requests sent with an ``Idempotency-Key``."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from django.db import models
from django.utils import timezone


class IdempotencyRecord(models.Model):
    """A mutating request sent with an ``Idempotency-Key``, and the answer it got.

    The first request with a key claims it by inserting this row (the unique constraint decides
    between simultaneous ones); it stores the answer once it has one. A retry with the same key
    and the same request gets that answer back instead of acting again. Only successful answers
    are kept: a refused or failed request changed nothing, so its key is released and a retry
    runs afresh. Rows older than ``KEEP_FOR`` are forgotten.
    """

    KEEP_FOR: ClassVar[timedelta] = timedelta(hours=24)

    # Whose key it is: a digest of the API token, or the signed-in user's id.
    scope = models.CharField(max_length=80)
    key = models.CharField(max_length=255)
    # SHA-256 of the method, path, query and body: the same key for another request is refused.
    request_digest = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField(null=True, blank=True)  # None while it runs
    content_type = models.CharField(max_length=100, blank=True)
    body = models.BinaryField(blank=True, default=b"")
    headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="one_idempotency_key_per_caller")
        ]
        indexes = [
            models.Index(fields=["scope", "created_at"], name="idempotency_by_age"),
            models.Index(fields=["created_at"], name="idempotency_expiry"),
        ]

    def __str__(self) -> str:
        return f"Idempotency-Key {self.key[:20]} ({self.status or 'running'})"

    @classmethod
    def forget_expired(cls, scope: str | None = None) -> int:
        """Drop answers older than ``KEEP_FOR`` (one caller's, or everyone's); how many."""
        expired = cls.objects.filter(created_at__lt=timezone.now() - cls.KEEP_FOR)
        if scope is not None:
            expired = expired.filter(scope=scope)
        deleted, _ = expired.delete()
        return deleted
