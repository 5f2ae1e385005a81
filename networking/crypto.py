"""Encryption at rest for secret values.

Values are sealed with ``MultiFernet`` over ``settings.FIELD_ENCRYPTION_KEYS`` (newest first):
new values are encrypted with the first key, old ones still decrypt with any, and
``reencrypt`` moves a token onto the first key so an old key can be retired.

In memory a stored value is a ``SecretText``: it holds the token, not the plaintext, and prints
as a mask. Code has to call ``reveal()`` to get the value, which keeps secrets out of
``__str__``, ``repr``, log lines and the locals shown on error pages by accident.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

MASK = "••••••••"


class DecryptionError(Exception):
    """No configured key opens this value: a key was removed before re-encryption."""


@cache
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _fernet() -> MultiFernet:
    return _fernet_for(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def _open(operation: Callable[[bytes], bytes], token: str) -> str:
    try:
        return operation(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            "A stored secret could not be decrypted with any key in FIELD_ENCRYPTION_KEYS."
        ) from None


def decrypt(token: str) -> str:
    return _open(_fernet().decrypt, token)


def reencrypt(token: str) -> str:
    """The same value sealed under the newest key."""
    return _open(_fernet().rotate, token)


class SecretText:
    """An encrypted value. ``str()`` and ``repr()`` show a mask; ``reveal()`` decrypts."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    @classmethod
    def seal(cls, plaintext: str) -> SecretText:
        return cls(encrypt(plaintext))

    def reveal(self) -> str:
        return decrypt(self.token)

    def matches(self, candidate: str) -> bool:
        """Constant-time comparison with a plaintext candidate."""
        return hmac.compare_digest(self.reveal().encode(), candidate.encode())

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"SecretText({MASK!r})"

    def __copy__(self) -> SecretText:
        return SecretText(self.token)

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretText:
        return SecretText(self.token)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling would carry the token into caches or task messages; refuse instead.
        raise TypeError("SecretText values are not serialisable; pass an id instead.")


class EncryptedTextField(models.TextField[SecretText | str | None, SecretText | None]):
    """A text column that stores a Fernet token and loads as ``SecretText``.

    Assign a ``SecretText`` (or a plain ``str``, sealed on save). Blank means "no value".
    """

    description = "Text encrypted at rest"

    def from_db_value(
        self, value: str | None, expression: Any, connection: Any
    ) -> SecretText | None:
        if not value:
            return None
        return SecretText(value)

    def to_python(self, value: Any) -> SecretText | None:
        if value is None or isinstance(value, SecretText):
            return value
        return SecretText.seal(str(value))

    def get_prep_value(self, value: Any) -> str:
        if value is None or value == "":
            return ""
        if isinstance(value, SecretText):
            return value.token
        return encrypt(str(value))

    def value_to_string(self, obj: models.Model) -> str:
        # Serialisers (dumpdata) get the token, never the plaintext.
        value = self.value_from_object(obj)
        return value.token if isinstance(value, SecretText) else ""
