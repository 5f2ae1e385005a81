from __future__ import annotations

from django.apps import AppConfig


class NetworkingConfig(AppConfig):
    name = "networking"
    verbose_name = "Private networking"

    def ready(self) -> None:
        from networking import signals  # noqa: F401 (registers the receivers)
