"""At most ``API_THROTTLE_PER_MINUTE`` requests a minute per token (or signed-in user).

A fixed one-minute window counted in the cache (Redis in production) with an atomic increment,
so workers counting at once never lose a request. If the cache is unreachable the API goes on
unthrottled (and logs it): refusing every call during a Redis outage would be worse.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from ninja.throttling import BaseThrottle

from api.auth import token_of

logger = logging.getLogger(__name__)
WINDOW_SECONDS = 60


class PerCallerThrottle(BaseThrottle):
    def __init__(self) -> None:
        # One instance serves every thread: each request's wait is kept apart.
        self._local = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        token = token_of(request)
        if token is not None:
            caller = f"token:{token.pk}"
        elif request.user.is_authenticated:
            caller = f"user:{request.user.pk}"
        else:
            caller = f"address:{self.get_ident(request)}"
        self._local.wait = None
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        key = f"api-throttle:{caller}:{window}"
        try:
            cache.add(key, 0, timeout=WINDOW_SECONDS + 5)
            count = cache.incr(key)
        except Exception as error:  # the cache is down: count nothing, refuse nothing
            logger.warning("API throttle not counted: the cache is unreachable (%s)", type(error))
            return True
        if count > settings.API_THROTTLE_PER_MINUTE:
            self._local.wait = (window + 1) * WINDOW_SECONDS - now
            return False
        return True

    def wait(self) -> float | None:
        wait: float | None = getattr(self._local, "wait", None)
        return wait
