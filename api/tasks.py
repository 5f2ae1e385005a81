"""The API's periodic work. Arguments are ids only, as for every task."""

from __future__ import annotations

from celery import shared_task

from api.models import IdempotencyRecord


@shared_task(acks_late=True)
def forget_idempotency_keys() -> int:
    """Beat, hourly: answers kept for retries go after 24 hours, whoever's they are."""
    return IdempotencyRecord.forget_expired()
