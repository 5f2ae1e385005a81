"""Counting and fault injection at the kubernetes client's HTTP layer.

The client's ``rest_client.pool_manager`` (a urllib3 ``PoolManager``) is wrapped, so everything
above it (serialization, status handling, our error translation, retries) runs for real against
the real API server, and the wrapper only sees or spoils HTTP exchanges.
"""

from __future__ import annotations

import io
import json
import random
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Call:
    method: str
    path: str
    outcome: str  # "ok", "500", "429", "timeout-before", "timeout-after"


def _status_response(
    status: int, reason: str, retry_after: int | None = None
) -> urllib3.HTTPResponse:
    body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": reason,
            "code": status,
        }
    ).encode()
    return urllib3.HTTPResponse(
        body=io.BytesIO(body),
        status=status,
        reason=reason,
        headers={
            "Content-Type": "application/json",
            **({"Retry-After": str(retry_after)} if retry_after is not None else {}),
        },
        preload_content=False,
    )


@dataclass
class HttpRecorder:
    """Delegates to the real pool manager; records calls and fails a share of them."""

    inner: Any
    fault_rate: float = 0.0
    seed: int = 0
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        # (how many more requests answer 429, with this Retry-After)
        self._rate_limit: tuple[int, int] = (0, 0)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = urlsplit(url).path
        fault = None
        with self._lock:
            limited, retry_after = self._rate_limit
            if limited:
                self._rate_limit = (limited - 1, retry_after)
                fault = "429-retry-after"
            elif self.fault_rate and self._random.random() < self.fault_rate:
                fault = self._random.choice(["500", "429", "timeout-before", "timeout-after"])
            self.calls.append(Call(method, path, fault or "ok"))
        if fault == "429-retry-after":
            return _status_response(429, "injected rate limit", retry_after=retry_after)
        if fault == "500":
            return _status_response(500, "injected internal error")
        if fault == "429":
            return _status_response(429, "injected rate limit")
        if fault == "timeout-before":
            raise urllib3.exceptions.ReadTimeoutError(None, url, "injected timeout")  # type: ignore[arg-type]
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = self.inner.request(method, url, *args, **kwargs)
        finally:
            with self._lock:
                self.in_flight -= 1
        if fault == "timeout-after":
            # The server did the work; the answer was lost on the way back.
            response.read()
            raise urllib3.exceptions.ReadTimeoutError(None, url, "injected timeout after write")  # type: ignore[arg-type]
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reset(self) -> None:
        self.calls.clear()
        self.max_in_flight = 0

    def rate_limit(self, requests: int, retry_after: int) -> None:
        """The next ``requests`` requests answer 429 with ``Retry-After``, as API Priority and
        Fairness does when it sheds load."""
        self._rate_limit = (requests, retry_after)

    def inject_faults(self, rate: float, seed: int = 0) -> None:
        self.fault_rate = rate
        self._random = random.Random(seed)

    @property
    def writes(self) -> list[Call]:
        return [call for call in self.calls if call.method in WRITE_METHODS]

    @property
    def reads(self) -> list[Call]:
        return [call for call in self.calls if call.method not in WRITE_METHODS]
