"""Errors as ``application/problem+json`` (RFC 9457), in the same words as the pages.

Every refusal the API gives is a problem document: ``type``, ``title``, ``status``, ``detail``
and, for invalid input, ``errors``: each field's messages, exactly those the dashboard's form
shows for it (the naming rule's message and suggestion included).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    ValidationError,
)
from django.http import Http404, HttpRequest, HttpResponse

from networking import contention

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://docs.stackblaze.cloud/api/problems/"

TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    422: "Invalid input",
    429: "Too many requests",
    500: "Server error",
}
SLUGS = {
    400: "bad-request",
    401: "not-authenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    422: "invalid-input",
    429: "throttled",
    500: "server-error",
}


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self, status: int, detail: str, *, errors: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors


class NotAnObject(ValueError):
    """A request body that is JSON, but not the object the operation reads."""


def problem_response(
    status: int, detail: str, *, errors: dict[str, list[str]] | None = None
) -> HttpResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + SLUGS.get(status, "error"),
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    response = HttpResponse(json.dumps(body), status=status, content_type=CONTENT_TYPE)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def invalid(error: ValidationError, *, fields: dict[str, str] | None = None) -> Problem:
    """A 422 carrying a ``ValidationError``'s messages per field (renamed by ``fields``)."""
    errors: dict[str, list[str]] = {}
    if hasattr(error, "error_dict"):
        for field, messages in error.message_dict.items():
            name = (fields or {}).get(field, field)
            errors.setdefault("non_field_errors" if name == "__all__" else name, []).extend(
                messages
            )
    else:
        errors["non_field_errors"] = list(error.messages)
    return Problem(422, _summary(errors), errors=errors)


def form_invalid(form_errors: Any, *, fields: dict[str, str] | None = None) -> Problem:
    """A 422 from a Django form's ``errors``, each field's messages as the form shows them."""
    errors: dict[str, list[str]] = {}
    for field, messages in form_errors.items():
        name = (fields or {}).get(field, field)
        errors.setdefault("non_field_errors" if name == "__all__" else name, []).extend(
            str(message) for message in messages
        )
    return Problem(422, _summary(errors), errors=errors)


def _summary(errors: dict[str, list[str]]) -> str:
    """The detail line: the first message, which is what a script's log most needs."""
    for messages in errors.values():
        if messages:
            return messages[0]
    return "The input is not valid."


def _ninja_validation_errors(raw: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Pydantic's errors, keyed by the field they are about (``ports``, ``limit``)."""
    errors: dict[str, list[str]] = {}
    for error in raw:
        location = [part for part in error.get("loc", ()) if isinstance(part, str)]
        # ("body", "payload", "ports") / ("query", "limit"): the field is the last name.
        field = location[-1] if len(location) > 1 else "non_field_errors"
        if field in ("payload", "body"):
            field = "non_field_errors"
        message = str(error.get("msg", "Invalid value."))
        if error.get("type") == "string_pattern_mismatch":
            message = (
                "Use the next_cursor of the previous page, as it is."
                if field == "cursor"
                else "This can’t contain control characters."
            )
        message = message.removeprefix("Value error, ")
        if message not in errors.setdefault(field, []):  # three bad ports: said once
            errors[field].append(message)
    return errors


def to_response(request: HttpRequest, exc: Exception) -> HttpResponse:
    """Every exception an API operation raises, as a problem document. Never a bare 500 page."""
    from ninja.errors import AuthenticationError, HttpError, Throttled
    from ninja.errors import ValidationError as NinjaValidationError

    if isinstance(exc, Problem):
        return problem_response(exc.status, exc.detail, errors=exc.errors)
    if isinstance(exc, NinjaValidationError):
        errors = _ninja_validation_errors(list(exc.errors))
        return problem_response(422, _summary(errors), errors=errors)
    if isinstance(exc, Throttled):
        return problem_response(
            429, "Too many requests for this token. Wait as Retry-After says, then try again."
        )
    if isinstance(exc, AuthenticationError):
        return problem_response(
            401,
            "Send an API token as “Authorization: Bearer sbk_…”. Create one on your "
            "organization’s API tokens page.",
        )
    if isinstance(exc, RequestDataTooBig):
        return problem_response(413, "The request body is too large.")
    if isinstance(exc, HttpError):
        status = exc.status_code
        if status == 400 and isinstance(exc.__cause__, NotAnObject):
            message = "Send a JSON object as the body, as the documentation shows it."
            return problem_response(422, message, errors={"non_field_errors": [message]})
        if status == 400:
            return problem_response(400, "The request body is not valid JSON.")
        return problem_response(status, str(exc))
    if isinstance(exc, Http404):
        return problem_response(404, str(exc) or "Not found.")
    if isinstance(exc, PermissionDenied):
        return problem_response(
            403, str(exc) or "Your role in this organization can’t make this change."
        )
    if isinstance(exc, ValidationError):
        problem = invalid(exc)
        return problem_response(problem.status, problem.detail, errors=problem.errors)
    if isinstance(exc, SuspiciousOperation):
        return problem_response(400, "The request was refused as malformed.")
    if contention.lost_a_race(exc):
        logger.warning("Concurrent change on %s %s: %s", request.method, request.path, exc)
        return problem_response(409, contention.CONFLICT_FOR_API)
    logger.exception("API error on %s %s", request.method, request.path)
    return problem_response(
        500, "Something went wrong on our side. Try again; if it goes on, contact support."
    )
