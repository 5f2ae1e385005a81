"""A task that does nothing but say it ran: the broker-and-worker round trip to compare with."""

from __future__ import annotations

import functools
from typing import Any

import redis
from celery import shared_task
from django.conf import settings


@functools.cache
def _redis() -> Any:
    """One connection pool per worker, so a round trip does not pay for a new connection."""
    return redis.Redis.from_url(settings.REDIS_URL)


@shared_task
def touch(key: str) -> None:
    _redis().set(key, 1, ex=60)
