from __future__ import annotations

import pickle

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.test import override_settings

from networking.crypto import DecryptionError, SecretText
from networking.models import Service
from tests.conftest import World


def test_a_secret_prints_as_a_mask() -> None:
    secret = SecretText.seal("s3cr3t-value")
    assert "s3cr3t" not in str(secret)
    assert "s3cr3t" not in repr(secret)
    assert "s3cr3t" not in f"{secret} {secret!r}"
    assert secret.reveal() == "s3cr3t-value"


def test_a_secret_refuses_to_be_pickled() -> None:
    with pytest.raises(TypeError, match="pass an id"):
        pickle.dumps(SecretText.seal("x"))


def test_matches_compares_values() -> None:
    secret = SecretText.seal("abc")
    assert secret.matches("abc")
    assert not secret.matches("abd")


def test_key_rotation_reencrypts_and_the_old_key_can_go(world: World, settings: object) -> None:
    old_keys = list(settings.FIELD_ENCRYPTION_KEYS)  # type: ignore[attr-defined]
    passwords = {
        s.pk: s.database_password.reveal()
        for s in Service.objects.exclude(database_password="")
        if s.database_password is not None
    }
    assert len(passwords) == 2
    new_key = Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key, *old_keys]):
        call_command("reencrypt_secrets", stdout=open("/dev/null", "w"))  # noqa: SIM115
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):
        for pk, password in passwords.items():
            stored = Service.objects.get(pk=pk).database_password
            assert stored is not None
            assert stored.reveal() == password


def test_a_missing_key_is_a_clear_error(world: World) -> None:
    with override_settings(FIELD_ENCRYPTION_KEYS=[Fernet.generate_key().decode()]):
        password = Service.objects.get(pk=world.postgres.pk).database_password
        assert password is not None
        with pytest.raises(DecryptionError, match="FIELD_ENCRYPTION_KEYS"):
            password.reveal()
