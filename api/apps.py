from __future__ import annotations

from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The HTTP API for automation (``/api/v1/``): the same access rules as the pages."""

    name = "api"
    verbose_name = "HTTP API"

    def ready(self) -> None:
        from api import signals  # noqa: F401  (connects its receivers)
