"""The API as the CLI sees it: one authenticated client, errors in the API's own words."""

from __future__ import annotations

import ipaddress
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

USER_AGENT = "stackblaze-cli/0.1"
# A change is sent again after a network error or a 5xx, with the same Idempotency-Key, so the
# retry acts at most once.
RETRIES = 2


class Refused(Exception):
    """The API refused the request (4xx); ``problem`` is its problem document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(str(problem.get("detail") or f"HTTP {status}"))
        self.status = status
        self.problem = problem


class Failed(Exception):
    """The request could not be answered (network, timeout, 5xx)."""


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "stackblaze" / "config.json"


def load_config() -> dict[str, str]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {key: str(value) for key, value in data.items()} if isinstance(data, dict) else {}


def save_config(config: dict[str, str]) -> Path:
    """Written with mode 0600 from the start (never world-readable, even for a moment)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # 0600 before a byte is written: an older file keeps its mode through O_CREAT, so it is
    # set on the open file first.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(config, handle, indent=2)
    return path


ALLOW_HTTP_VARIABLE = "STACKBLAZE_ALLOW_HTTP"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str | None:
    """Why the token must not be sent to ``url``, or None if it may."""
    try:
        parsed = httpx.URL(url) if "://" in url else None
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        return f"“{url}” is not the dashboard's address; give it whole, as https://dash.example."
    if (
        parsed.scheme == "http"
        and not _loopback(parsed.host)
        and os.environ.get(ALLOW_HTTP_VARIABLE) != "1"
    ):
        return (
            f"{url} is plain http: the token would cross the network unencrypted. Use https://, "
            f"or set {ALLOW_HTTP_VARIABLE}=1 for a network you trust."
        )
    return None


@dataclass
class Api:
    url: str
    token: str
    timeout: float = 30.0
    _http: httpx.Client | None = field(default=None, repr=False)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.url.rstrip("/") + "/api/v1",
                headers={"Authorization": f"Bearer {self.token}", "User-Agent": USER_AGENT},
                timeout=self.timeout,
            )
        return self._http

    def get(self, path: str, **params: Any) -> Any:
        clean = {key: value for key, value in params.items() if value not in (None, "")}
        return self.request("GET", path, params=clean)

    def send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """A change, with an Idempotency-Key: sent again after a network error or a 5xx."""
        return self.request(
            method, path, params=params, json=body, idempotency_key=str(uuid.uuid4())
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        attempts = RETRIES + 1 if idempotency_key or method == "GET" else 1
        for attempt in range(attempts):
            try:
                response = self.http.request(
                    method, path, params=params, json=json, headers=headers
                )
            except httpx.HTTPError as error:
                if attempt + 1 < attempts:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise Failed(f"Could not reach {self.url}: {error.__class__.__name__}") from None
            if response.status_code >= 500 and attempt + 1 < attempts:
                time.sleep(0.5 * (attempt + 1))
                continue
            return _answer(response)
        raise AssertionError("unreachable")  # pragma: no cover


def _answer(response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    if 300 <= response.status_code < 400:
        where = response.headers.get("Location", "elsewhere")
        raise Failed(
            f"The server answered with a redirect to {where} (HTTP {response.status_code}): "
            "log in again with the address it redirects to."
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 500:
        detail = body.get("detail") if isinstance(body, dict) else None
        raise Failed(detail or f"The server answered {response.status_code}.")
    if not isinstance(body, dict | list):
        # A proxy's or another site's page, not the API's answer.
        raise Failed(
            f"{response.request.url} did not answer as the Stackblaze API does (HTTP "
            f"{response.status_code}, not JSON): is the address the dashboard's?"
        )
    if response.status_code >= 400:
        if not isinstance(body, dict):
            body = {"detail": f"The API answered {response.status_code}."}
        raise Refused(response.status_code, body)
    return body
