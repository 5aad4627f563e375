"""OIDC refresh and access tokens are stored encrypted (apps/accounts/token_crypto.py).

The data step runs while the fields are still plain ``TextField`` (forwards:
before the ``AlterField``; backwards: after it is undone), so it reads and
writes the raw column values.

Forwards encrypts every plain value with the key of ``SECRET_KEY``. A value
that already decrypts is left alone (a re-run, or a row written by new code
during the deploy); so is one that has the shape of a Fernet token but no key
decrypts (it reads as "" and its session signs in again). JWTs start with
``ey`` and are never taken for Fernet tokens.

Backwards decrypts every value that decrypts with ``SECRET_KEY`` or
``SECRET_KEY_FALLBACKS``; an encrypted value no key can read becomes "" (no
token: the claims re-check ends that session), plain values stay.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import InvalidToken
from django.db import migrations

from apps.accounts.token_crypto import (
    EncryptedTextField,
    looks_encrypted,
    token_decrypt,
    token_encrypt,
    token_fernet,
)

FIELDS = ("refresh_token", "access_token")


def _decrypted(value: str, fernet: Any) -> str | None:
    try:
        return token_decrypt(ciphertext=value, fernet=fernet)
    except (InvalidToken, UnicodeError):
        return None


def _encrypted_value(value: str, fernet: Any) -> str:
    if not value or _decrypted(value, fernet) is not None or looks_encrypted(value):
        return value
    return token_encrypt(plaintext=value, fernet=fernet)


def _plain_value(value: str, fernet: Any) -> str:
    if not value:
        return value
    plain = _decrypted(value, fernet)
    if plain is not None:
        return plain
    return "" if looks_encrypted(value) else value


def _rewrite(apps: Any, convert: Any) -> None:
    OIDCSession = apps.get_model("accounts", "OIDCSession")
    fernet = token_fernet()
    for pk, *values in OIDCSession.objects.order_by("pk").values_list("pk", *FIELDS).iterator():
        new = [convert(value, fernet) for value in values]
        if new != values:
            OIDCSession.objects.filter(pk=pk).update(**dict(zip(FIELDS, new, strict=True)))


def encrypt_tokens(apps: Any, schema_editor: Any) -> None:
    _rewrite(apps, _encrypted_value)


def decrypt_tokens(apps: Any, schema_editor: Any) -> None:
    _rewrite(apps, _plain_value)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_local_role_grants"),
    ]

    operations = [
        migrations.RunPython(encrypt_tokens, decrypt_tokens),
        migrations.AlterField(
            model_name="oidcsession",
            name="access_token",
            field=EncryptedTextField(blank=True, default=""),
        ),
        migrations.AlterField(
            model_name="oidcsession",
            name="refresh_token",
            field=EncryptedTextField(blank=True, default=""),
        ),
    ]
