"""Filters for the log records Django writes about requests."""

from __future__ import annotations

import logging


class RefusalsWithoutTraceback(logging.Filter):
    """A refusal (403, 400, any answer below 500) is one line, not a traceback.

    Django's ``django.request`` logger records a ``PermissionDenied`` with the exception
    attached, so every "your role can't do that" filled the log with a stack trace as if
    something had broken. Nothing broke: the line (status, path) says all there is to know.
    Server errors (500 and up) keep their traceback: that is how one is found.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
