"""``Idempotency-Key``: a retried request gets the first one's answer and acts once.

A client that did not hear back (a timeout, a dropped connection) sends the same request again
with the same key. The first request with a key claims it with a row (``IdempotencyRecord``),
whose unique constraint decides between simultaneous ones; the others wait for its answer and
return it. The same key with a different request is refused (422), as is a key still being
worked on after a while (409, try again). Keys are per caller and forgotten after 24 hours.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from api.auth import presented_token
from api.models import IdempotencyRecord
from api.problems import problem_response

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Visible ASCII, no spaces: what a UUID or a CI job's run ID looks like, and safe in a header.
KEY_PATTERN = re.compile(rf"[!-~]{{1,{MAX_KEY_LENGTH}}}")
# How long a retry waits for the first request's answer before saying to try again.
WAIT_SECONDS = 15.0
_POLL_SECONDS = 0.05
# Headers that belong to the answer (not to the transport) and are replayed with it.
_KEPT_HEADERS = ("Location", "Cache-Control")

Run = Callable[..., HttpResponseBase]


def _scope(request: HttpRequest) -> str | None:
    """Whose key: the token's digest (checked by the operation itself) or the session's user."""
    raw = presented_token(request)
    if raw is not None:
        return "token:" + hashlib.sha256(raw.encode()).hexdigest()
    if request.user.is_authenticated:
        return f"user:{request.user.pk}"
    return None


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
    """Wrap an operation's ``run`` (ninja's ``decorate_view``) to honour ``Idempotency-Key``."""

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
        scope = _scope(request)
        if scope is None:
            return run(request, *args, **kwargs)  # no caller: the operation answers 401
        try:
            digest = _digest(request)
        except RequestDataTooBig:
            return problem_response(413, "The request body is too large.")
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
