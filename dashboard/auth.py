"""Sign-in, rate-limited per account and per address, with failed attempts logged.

Counters live in the cache (Redis in production, shared by every web process). Once a limit is
reached the password is not even checked until the window has passed, so guessing gains
nothing; the form says how long to wait. If the cache is unreachable, sign-in still works and
still checks the password; only the counting stops, with a warning, until the cache is back.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from redis.exceptions import RedisError

logger = logging.getLogger("dashboard.auth")


def client_address(request: HttpRequest) -> str:
    """The caller's address: the last hop our own proxy appended, when we sit behind one."""
    if settings.TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return str(hops[-1])
    return str(request.META.get("REMOTE_ADDR", "unknown"))


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"signin-failures:{kind}:{digest}"


class SignInThrottle:
    """The failure counters of one sign-in attempt: its account's and its address's.

    ``username`` is the form's cleaned value, so every spelling Django's NFKC normalization
    maps to one account (fullwidth, mathematical bold, ...) shares one counter. It is also
    casefolded: the account lookup is case-sensitive, so this merges a few names that are
    different accounts, which can only make the lockout stricter, never let it be walked around.
    """

    def __init__(self, username: str, address: str) -> None:
        self.keys = [
            (_key("account", username.casefold()), settings.SIGNIN_MAX_FAILURES_PER_ACCOUNT),
            (_key("address", address.strip().lower()), settings.SIGNIN_MAX_FAILURES_PER_ADDRESS),
        ]
        self.cache_reachable = True

    def blocked(self) -> bool:
        try:
            counts = cache.get_many([key for key, _ in self.keys])
        except RedisError as error:
            self._cache_unreachable(error)
            return False
        return any(counts.get(key, 0) >= limit for key, limit in self.keys)

    def record_failure(self) -> None:
        if not self.cache_reachable:
            return
        try:
            for key, _ in self.keys:
                # add() starts the window; incr() never extends it.
                cache.add(key, 0, timeout=settings.SIGNIN_LOCKOUT_SECONDS)
                try:
                    cache.incr(key)
                except ValueError:  # the window closed between add() and incr()
                    cache.add(key, 1, timeout=settings.SIGNIN_LOCKOUT_SECONDS)
        except RedisError as error:
            self._cache_unreachable(error)

    def record_success(self) -> None:
        if not self.cache_reachable:
            return
        try:
            cache.delete(self.keys[0][0])
        except RedisError as error:
            self._cache_unreachable(error)

    def _cache_unreachable(self, error: RedisError) -> None:
        # Fail open: refusing everyone while Redis is down would lock out every user, and the
        # password is still checked. Only the error's class is logged: its message names the
        # server, and the attempt's username and password stay out of this line.
        self.cache_reachable = False
        logger.warning(
            "Sign-in failures are not being counted: the cache (REDIS_URL) is unavailable (%s). "
            "Passwords are still checked; bring Redis back to restore the lockout.",
            type(error).__name__,
        )


class SignInForm(AuthenticationForm):
    """Django's sign-in form, refusing without checking the password once a limit is reached."""

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if username is None:
            return super().clean()  # nothing to authenticate: the username field is invalid
        address = client_address(self.request) if self.request is not None else "unknown"
        throttle = SignInThrottle(username, address)
        if throttle.blocked():
            logger.warning(
                "Sign-in refused: too many failures for this account or from %s", address
            )
            minutes = max(1, settings.SIGNIN_LOCKOUT_SECONDS // 60)
            raise ValidationError(
                "Too many failed sign-ins for this account or from this address. "
                f"Wait {minutes} minutes and try again.",
                code="locked_out",
            )
        try:
            cleaned_data = super().clean()
        except ValidationError:
            throttle.record_failure()
            raise
        throttle.record_success()
        return cleaned_data


class SignInView(auth_views.LoginView):
    form_class = SignInForm
    redirect_authenticated_user = True

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_invalid(form)
        if form.has_error(NON_FIELD_ERRORS, "locked_out"):
            response.status_code = 429
        return response


@receiver(user_login_failed)
def log_failed_sign_in(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # ``credentials`` arrive with the password already masked; only the username is logged.
    logger.warning(
        "Failed sign-in for %r from %s",
        str(credentials.get("username", ""))[:150],
        client_address(request) if request is not None else "unknown",
    )
