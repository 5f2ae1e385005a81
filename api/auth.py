"""Who is calling: an API token (``Authorization: Bearer sbk_…``) or the browser's session.

A token call is attributed to the token's holder, marked with the token's name so every audit
event it causes reads "alice via token ci-deploy", and is exempt from CSRF (no cookie is
involved). A session call is the dashboard's own JavaScript or a signed-in browser, and keeps
Django's CSRF check on every unsafe method.

The token never reaches a log line: it is taken out of ``request.META`` as soon as it has been
checked, so neither an error report nor a logged request can carry it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from api.models import ApiToken, TokenRefused
from api.problems import Problem

REDACTED = "Bearer [redacted]"
CSRF_REFUSED = (
    "CSRF check failed: a signed-in browser must send the X-CSRFToken header with the "
    "csrftoken cookie's value. Scripts should use an API token instead. Nothing was changed."
)


TOKEN_MISSING = (
    "The token is missing: the Authorization header says Bearer and nothing after it. Send "
    "“Authorization: Bearer sbk_…” with a token from your organization’s API tokens page."
)


def presented_token(request: HttpRequest) -> str | None:
    """The bearer token in the request, if there is one (any capitalisation of "Bearer").

    A Bearer header without a token is refused (401) rather than taken for no header: the
    caller meant to send a token (an unset variable in a script, say), and falling through to
    the session would answer with a CSRF refusal that says nothing of it.
    """
    header = str(request.META.get("HTTP_AUTHORIZATION", ""))
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    if not value.strip():
        raise Problem(401, TOKEN_MISSING)
    return value.strip()


def token_of(request: HttpRequest) -> ApiToken | None:
    """The API token the request was authenticated with; None in a browser session."""
    token = getattr(request, "api_token", None)
    return token if isinstance(token, ApiToken) else None


class TokenAuth(HttpBearer):
    """``Authorization: Bearer sbk_…``: refused with the reason if the token can't be used."""

    def __call__(self, request: HttpRequest) -> Any:
        # Not HttpBearer.__call__, which logs an unexpected header whole under DEBUG.
        raw = presented_token(request)
        if raw is None:
            return None
        return self.authenticate(request, raw)

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken:
        request.META["HTTP_AUTHORIZATION"] = REDACTED
        try:
            found = ApiToken.authenticate(token)
        except TokenRefused as refused:
            raise Problem(401, str(refused)) from None
        user: Any = found.user
        user.via_token = found.name  # read by AuditEvent.record and every actor label
        request.user = user
        request.api_token = found  # type: ignore[attr-defined]  # read by networking.access
        return found


class SessionAuth(APIKeyCookie):
    """The dashboard's session cookie, with Django's CSRF check on unsafe methods."""

    param_name: str = settings.SESSION_COOKIE_NAME

    def __init__(self) -> None:
        super().__init__(csrf=False)  # checked below, with a problem document on failure

    def _get_key(self, request: HttpRequest) -> str | None:
        if request.method not in ("GET", "HEAD", "OPTIONS") and check_csrf(request):
            raise Problem(403, CSRF_REFUSED)
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        return request.user if request.user.is_authenticated else None
