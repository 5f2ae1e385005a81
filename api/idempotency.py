"""``Idempotency-Key``: a retried request gets the first one's answer and acts once.

A client that did not hear back (a timeout, a dropped connection) sends the same request again
with the same key. The first request with a key claims it with a row (``IdempotencyRecord``),
whose unique constraint decides between simultaneous ones; the others wait for its answer and
return it. The same key with a different request is refused (422), as is a key still being
worked on after a while (409, try again). Keys are per caller and forgotten after 24 hours.

The caller is authenticated and throttled before a key is looked at: a revoked or expired token,
or one over its rate, gets its refusal and never a stored answer. A key whose request died
mid-way (its process killed) is taken over once it is older than any request can run.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import time
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone

from api.models import IdempotencyRecord
from api.problems import problem_response

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Visible ASCII, no spaces: what a UUID or a CI job's run ID looks like, and safe in a header.
KEY_PATTERN = re.compile(rf"[!-~]{{1,{MAX_KEY_LENGTH}}}")
# How long a retry waits for the first request's answer before saying to try again.
WAIT_SECONDS = 15.0
_POLL_SECONDS = 0.05
# A key still marked as running after this long belongs to a request that died (a killed
# process): no request runs that long (gunicorn's worker timeout, 30 s, is far shorter). A
# process killed after its change committed but before its answer was kept has acted once;
# the retry that takes the key over acts again, as a retry without a key would.
ABANDONED_AFTER = timedelta(minutes=5)
# Headers that belong to the answer (not to the transport) and are replayed with it.
_KEPT_HEADERS = ("Location", "Cache-Control")

Run = Callable[..., HttpResponseBase]


def _scope(request: HttpRequest) -> str:
    """Whose key, once authenticated: the token's (by its stored digest), or the user's."""
    token = getattr(request, "api_token", None)
    if token is not None:
        return f"token:{token.digest}"
    return f"user:{request.user.pk}"


def _digest(request: HttpRequest) -> str:
    hasher = hashlib.sha256()
    for part in (request.method or "", request.get_full_path(), ""):
        hasher.update(part.encode() + b"\0")
    hasher.update(request.body)
    return hasher.hexdigest()


def _replay(record: IdempotencyRecord) -> HttpResponse:
    assert record.status is not None
    response = HttpResponse(
        bytes(record.body), status=record.status, content_type=record.content_type or None
    )
    for name, value in record.headers.items():
        response[name] = value
    response["Idempotent-Replayed"] = "true"
    return response


def _mismatch() -> HttpResponse:
    return problem_response(
        422,
        f"This {HEADER} was already used for a different request. Use a new key for a new request.",
    )


def idempotent(run: Run) -> Run:
    """Wrap an operation's ``run`` (ninja's ``decorate_view``) to honour ``Idempotency-Key``.

    Ninja runs the operation's checks (authentication, then throttling) inside ``run``, that is
    after this wrapper; a key is only looked at once they have passed, so they are run here
    first and, for this request, not again.
    """
    operation = getattr(run, "__self__", None)
    if operation is None or not hasattr(operation, "_run_checks"):
        raise TypeError("idempotent wraps a ninja Operation's own run, before any other decorator")
    if inspect.iscoroutinefunction(run):
        raise TypeError("idempotent wraps synchronous operations only")
    run_checks = operation._run_checks

    def checks_once(request: HttpRequest) -> HttpResponse | None:
        if getattr(request, "_api_checked", False):
            return None
        result: HttpResponse | None = run_checks(request)
        return result

    operation._run_checks = checks_once

    @wraps(run)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        key = request.headers.get(HEADER)
        if key is None:
            return run(request, *args, **kwargs)
        if not KEY_PATTERN.fullmatch(key):
            return problem_response(
                400,
                f"An {HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters, "
                "such as a UUID.",
            )
        try:
            # Read before the checks: the session's CSRF check parses a form body, after
            # which the raw body could no longer be read.
            digest = _digest(request)
        except RequestDataTooBig:
            return problem_response(413, "The request body is too large.")
        refused: HttpResponse | None = run_checks(request)
        if refused is not None:
            return refused  # not authenticated, or throttled: no key is looked at
        request._api_checked = True  # type: ignore[attr-defined]
        scope = _scope(request)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            record = _claim(scope, key, digest)
            if record is None:
                break  # ours to run
            if record.request_digest != digest:
                return _mismatch()
            if record.status is not None:
                return _replay(record)
            if time.monotonic() > deadline:
                return problem_response(
                    409,
                    f"A request with this {HEADER} is still being processed. Try again in a "
                    "moment to get its answer.",
                )
            time.sleep(_POLL_SECONDS)
        try:
            response = run(request, *args, **kwargs)
        except BaseException:
            IdempotencyRecord.objects.filter(scope=scope, key=key, status=None).delete()
            raise
        _settle(scope, key, response)
        return response

    return wrapper


def _claim(scope: str, key: str, digest: str) -> IdempotencyRecord | None:
    """None if this request now holds the key; else the row of the one that does (or did)."""
    IdempotencyRecord.forget_expired(scope)  # an old answer never stands in for a new request
    try:
        with transaction.atomic():  # committed at once: the others see the claim
            IdempotencyRecord.objects.create(scope=scope, key=key, request_digest=digest)
    except IntegrityError:
        found = IdempotencyRecord.objects.filter(scope=scope, key=key).first()
        if found is None:  # released meanwhile (its request failed): try to claim it again
            return IdempotencyRecord(request_digest=digest, status=None)
        if found.status is None and found.created_at < timezone.now() - ABANDONED_AFTER:
            # Its request died without an answer: release it; the next look claims it.
            IdempotencyRecord.objects.filter(pk=found.pk, status=None).delete()
            return IdempotencyRecord(request_digest=digest, status=None)
        return found
    return None


def _settle(scope: str, key: str, response: HttpResponseBase) -> None:
    """Keep a successful answer; release the key after any other (nothing was done)."""
    held = IdempotencyRecord.objects.filter(scope=scope, key=key, status=None)
    if 200 <= response.status_code < 300 and isinstance(response, HttpResponse):
        held.update(
            status=response.status_code,
            content_type=response.get("Content-Type", ""),
            body=response.content,
            headers={name: response[name] for name in _KEPT_HEADERS if response.has_header(name)},
        )
    else:
        held.delete()
