"""Re-encrypt every stored secret under the newest key in FIELD_ENCRYPTION_KEYS.

Key rotation: put a new key first in FIELD_ENCRYPTION_KEYS (keep the old ones after it), deploy,
run this command, then remove the old keys.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from networking.crypto import EncryptedTextField, SecretText, reencrypt


def encrypted_fields() -> list[tuple[type[Any], list[str]]]:
    result = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.get_fields() if isinstance(f, EncryptedTextField)]
        if names:
            result.append((model, names))
    return result


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the first key of FIELD_ENCRYPTION_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        for model, names in encrypted_fields():
            with transaction.atomic():
                for row in model._default_manager.select_for_update().only("pk", *names):
                    for name in names:
                        value = getattr(row, name)
                        if isinstance(value, SecretText):
                            setattr(row, name, SecretText(reencrypt(value.token)))
                            total += 1
                    row.save(update_fields=names)
        self.stdout.write(f"Re-encrypted {total} value(s) with the newest key.")
