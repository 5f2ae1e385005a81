"""Errors from a backend, saying whether trying again can help.

Backends raise one of these, and the Celery task decides (bounded exponential backoff for
transient errors, fail fast for permanent ones). The one retry a backend makes inline is the
API server's own: a 429 that says when to come back (``Retry-After``), within a bound; past
it, the error carries ``retry_after`` and the task waits at least that long.
"""

from __future__ import annotations


class ClusterError(Exception):
    """A change could not be applied. ``str()`` is a plain-words reason for the UI.

    The reason is what a customer reads on the project's Sync page, so it names what failed
    and what happens next, never the server's insides (a file path, a kubeconfig, another
    server's error text, a traceback). Those go in ``detail``, which only the log shows.
    """

    transient = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        # Seconds the API server asked us to wait before trying again (a 429's Retry-After).
        self.retry_after = retry_after
        # For the server log only: what the operator needs to find the cause.
        self.detail = detail

    @property
    def for_log(self) -> str:
        """The reason and, for the operator, its detail."""
        return f"{self} [{self.detail}]" if self.detail else str(self)

    def redacted(self, sensitive: list[str]) -> ClusterError:
        """The same error with every occurrence of the given values masked."""
        message, detail = str(self), self.detail
        for value in sorted(sensitive, key=len, reverse=True):
            if value:
                message = message.replace(value, "[redacted]")
                detail = detail.replace(value, "[redacted]")
        return type(self)(message, status=self.status, retry_after=self.retry_after, detail=detail)


class TransientClusterError(ClusterError):
    """The cluster may recover by itself: 5xx, 429, 409, timeouts, refused connections."""

    transient = True


class PermanentClusterError(ClusterError):
    """Retrying the same request will fail again: 400, 403, 422 and the like."""


TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


def error_for_status(
    status: int, action: str, detail: str, *, retry_after: float | None = None
) -> ClusterError:
    """Turn an API status into an error whose message a customer can act on."""
    detail = detail.strip().rstrip(".:")
    if status == 403:
        message = (
            f"The cluster did not allow {action} (403 Forbidden): {detail}. "
            "The worker's service account lacks a permission; see deploy/rbac.yaml."
        )
    elif status in (400, 422):
        message = f"The cluster rejected {action} as invalid ({status}): {detail}."
    elif status == 409:
        message = f"Someone else changed the object during {action} (409 Conflict)."
    elif status == 429:
        message = f"The cluster is rate-limiting requests (429) during {action}."
    elif status >= 500:
        # What a failing server says about itself (a webhook's traceback, a path on its disk)
        # is for the operator: the log has it.
        message = (
            f"The cluster's API server failed during {action} ({status}). Nothing is wrong "
            "with the project: the worker tries again by itself, and Retry tries now."
        )
    else:
        message = f"The cluster answered {status} to {action}: {detail}."
    error_class = (
        TransientClusterError
        if status in TRANSIENT_STATUSES or status >= 500
        else (PermanentClusterError)
    )
    return error_class(message, status=status, retry_after=retry_after, detail=detail)
