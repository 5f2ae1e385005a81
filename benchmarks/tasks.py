"""A task that does nothing but say it ran: the broker-and-worker round trip to compare with."""

from __future__ import annotations

import redis
from celery import shared_task
from django.conf import settings


@shared_task
def touch(key: str) -> None:
    redis.Redis.from_url(settings.REDIS_URL).set(key, 1, ex=60)
