"""The API itself: ``/api/v1/``, its OpenAPI document and its docs page."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import URLPattern
from ninja import NinjaAPI
from ninja.openapi.docs import Swagger
from ninja.parser import Parser

from api import problems
from api.auth import SessionAuth, TokenAuth
from api.idempotency import HEADER, KEY_PATTERN
from api.notification_views import router as notification_router
from api.organization_views import router as organization_router
from api.throttling import PerCallerThrottle
from api.views import router

DESCRIPTION = """\
Everything the dashboard does, for scripts and CI, with the same rules: another organization's
objects are not found (404), a role that may not act is refused (403), a viewer's token changes
nothing.

Authenticate with a personal API token, `Authorization: Bearer sbk_…`, created on your
organization's **API tokens** page. Errors are `application/problem+json` (RFC 9457): `detail`
says what went wrong and `errors` gives each field's message, once, as the dashboard's forms
word it. Input the schemas below refuse (a pattern, a length, a range) is refused with 422; a
well-formed request that the state of things refuses (a name taken, a label no service of the
project has, a port for a database, a name typed back that is not the project's) is a
conflict, 409. Send an `Idempotency-Key` header with a change to make retrying it safe.
Reveals (a database's password, a secret's value) are POSTs, audited and never cached; every
other answer masks them.
"""

# Each create's answer leads to reading, changing and deleting what it made.
_LINKS: dict[str, dict[str, tuple[str, str]]] = {
    "create_service": {
        "GetService": ("get_service", "service_id"),
        "UpdateService": ("update_service", "service_id"),
        "DeleteService": ("delete_service", "service_id"),
    },
    "create_secret": {
        "GetSecret": ("get_secret", "secret_id"),
        "GetRotation": ("get_rotation", "secret_id"),
        "DeleteSecret": ("delete_secret", "secret_id"),
    },
    "create_project": {
        "GetProject": ("get_project", "project_id"),
        "RenameProject": ("rename_project", "project_id"),
        "DeleteProject": ("delete_project", "project_id"),
    },
    "request_peering": {
        "CancelPeering": ("cancel_peering", "peering_id"),
    },
}
# Answers whose bodies hold a secret: never cached, never stored for a retry.
REVEALS = frozenset({"reveal_service_credentials", "reveal_secret", "create_token"})


class JsonObjects(Parser):
    """Every request body the document describes is a JSON object (``null`` is no body at all).
    Ninja's own parser passes any JSON on, and its schemas, which read attributes too, would
    take a list or a number for an object with nothing set."""

    def parse_body(self, request: HttpRequest) -> Any:
        data = super().parse_body(request)
        if data is not None and not isinstance(data, dict):
            raise problems.NotAnObject(type(data).__name__)
        return data


class StackblazeAPI(NinjaAPI):
    def set_default_exception_handlers(self) -> None:
        # Instead of ninja's own (``{"detail": ...}`` as application/json): every error,
        # whatever raised it, becomes one problem document (api/problems.py).
        self.add_exception_handler(Exception, problems.to_response)  # type: ignore[arg-type]

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        """Ninja's schema, plus what it cannot infer from the operations' signatures."""
        schema = super().get_openapi_schema(*args, **kwargs)
        for path in schema["paths"].values():
            for method, operation in path.items():
                _describe(method, operation)
        return schema


def _describe(method: str, operation: dict[str, Any]) -> None:
    operation_id = operation.get("operationId", "")
    for status, response in operation.get("responses", {}).items():
        if int(status) >= 400 and "content" in response:
            response["content"] = {problems.CONTENT_TYPE: response["content"]["application/json"]}
            response["description"] = problems.TITLES.get(int(status), "Error")
        if int(status) == 429:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before trying again",
                    "schema": {"type": "integer"},
                }
            }
    if method in ("post", "put", "patch", "delete") and operation_id not in REVEALS:
        operation.setdefault("parameters", []).append(
            {
                "name": HEADER,
                "in": "header",
                "required": False,
                "description": "Retrying with the same key returns the first answer and acts once",
                "schema": {"type": "string", "pattern": KEY_PATTERN.pattern.join("^$")},
            }
        )
    links = _LINKS.get(operation_id)
    if links:
        created = next(code for code in operation["responses"] if 200 <= int(code) < 300)
        operation["responses"][created]["links"] = {
            name: {
                "operationId": target,
                "parameters": {
                    "project_id": "$request.path.project_id",
                    parameter: "$response.body#/id",
                },
            }
            for name, (target, parameter) in links.items()
        }


api = StackblazeAPI(
    title="Stackblaze private networking API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api-v1",
    docs=Swagger(settings={"persistAuthorization": False}),
    docs_url="/docs",
    openapi_url="/openapi.json",
    auth=[TokenAuth(), SessionAuth()],
    throttle=[PerCallerThrottle()],
    parser=JsonObjects(),
)
api.add_router("/", router)
api.add_router("/", organization_router)
api.add_router("/", notification_router)


def _problem_for_405(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if response.status_code == 405 and "problem" not in response.get("Content-Type", ""):
            allowed = response.get("Allow", "")
            problem = problems.problem_response(
                405, f"{request.method} is not allowed here; this endpoint takes {allowed}."
            )
            problem["Allow"] = allowed
            return problem
        return response

    return wrapper


def urls() -> tuple[list[Any], str, str]:
    """``api.urls``, with ninja's plain-text 405 answers turned into problem documents."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if isinstance(pattern, URLPattern):
            pattern.callback = _problem_for_405(pattern.callback)
    return patterns, app_name, namespace


def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other path under /api/: a problem document, not the dashboard's 404 page."""
    return problems.problem_response(
        404, "No such API endpoint. The list is at /api/v1/openapi.json."
    )
