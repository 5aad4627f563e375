"""Encryption at rest of the OIDC tokens kept in :class:`apps.accounts.models.OIDCSession`.

What this module guarantees:

* A refresh or access token is written to the database only as a Fernet token
  (AES-128-CBC with a random IV, authenticated with HMAC-SHA256): a database
  dump or backup holds no usable Keycloak token and no recognisable part of
  one. Anyone who also holds ``SECRET_KEY`` can decrypt, as they could forge
  sessions anyway.
* The Fernet keys are derived from ``SECRET_KEY`` and then each of
  ``SECRET_KEY_FALLBACKS`` with HKDF-SHA256 and a purpose string of its own, so
  the derived key is useless for anything else Django signs with the same
  secret and reveals nothing about it. New values are encrypted with the key of
  ``SECRET_KEY``; values of a fallback key still decrypt (rotation works as for
  Django's signing) and are re-encrypted with the current key when the row is
  next saved.
* A value that no key decrypts (``SECRET_KEY`` rotated without keeping the old
  one in ``SECRET_KEY_FALLBACKS``, a corrupted row, a plain-text row) reads as
  ``""`` and logs a warning, never an exception out of a query. ``""`` means
  "no token": the claims re-check (:mod:`apps.accounts.recheck`) ends such a
  session and the user signs in again.
* Only ``isnull`` and a comparison with ``""`` are allowed as lookups on an
  encrypted field: ciphertexts are randomised, so comparing with a token could
  never match and is refused instead of silently finding nothing.
"""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import models
from django.db.models.lookups import Exact, IsNull, Lookup

logger = logging.getLogger("gennai.accounts")

#: HKDF ``info``: the purpose these keys serve, and nothing else.
KEY_PURPOSE = b"gennai.accounts.oidc-tokens"
#: What every Fernet token (version byte 0x80, then a 64-bit timestamp) starts with.
FERNET_PREFIX = "gAAAAA"


def token_key_derive(*, secret: str | bytes) -> bytes:
    """The Fernet key (urlsafe base64 of 32 bytes) for one Django secret key.

    Security: HKDF-SHA256 with :data:`KEY_PURPOSE` as ``info``; deterministic,
    so every process with the same secret derives the same key.
    """
    material = secret.encode() if isinstance(secret, str) else secret
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_PURPOSE)
    return base64.urlsafe_b64encode(hkdf.derive(material))


@functools.lru_cache(maxsize=8)
def _multi_fernet(secrets: tuple[str | bytes, ...]) -> MultiFernet:
    return MultiFernet([Fernet(token_key_derive(secret=secret)) for secret in secrets])


def token_fernet(
    *, secret_key: str | bytes | None = None, fallbacks: Sequence[str | bytes] | None = None
) -> MultiFernet:
    """The keys for OIDC tokens: ``secret_key``'s first (it encrypts), then each fallback's.

    Defaults to the current ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``. Cached
    on the values themselves, so a changed setting (rotation, ``override_settings``)
    never gets a stale key.
    """
    key = settings.SECRET_KEY if secret_key is None else secret_key
    rest = getattr(settings, "SECRET_KEY_FALLBACKS", []) if fallbacks is None else fallbacks
    return _multi_fernet((key, *rest))


def token_encrypt(*, plaintext: str, fernet: MultiFernet | None = None) -> str:
    """Encrypt a token with the current key; ``""`` (no token) stays ``""``."""
    if not plaintext:
        return ""
    return (fernet or token_fernet()).encrypt(plaintext.encode()).decode("ascii")


def token_decrypt(*, ciphertext: str, fernet: MultiFernet | None = None) -> str:
    """Decrypt a stored token with any of the keys; raises ``InvalidToken`` if none can."""
    if not ciphertext:
        return ""
    return (fernet or token_fernet()).decrypt(ciphertext.encode()).decode()


def looks_encrypted(value: str) -> bool:
    """Whether ``value`` has the shape of a Fernet token (not whether it decrypts).

    A JWT starts with ``ey`` (base64 of ``{"``) and never with :data:`FERNET_PREFIX`;
    the check also requires the decoded version byte and a payload long enough
    for timestamp, IV and HMAC.
    """
    if not value.startswith(FERNET_PREFIX):
        return False
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return len(raw) >= 1 + 8 + 16 + 16 + 32 and raw[0] == 0x80  # Fernet: version, time, IV, block, HMAC


class _EmptyOnlyExact(Exact):  # type: ignore[type-arg]
    """``field=""`` only: any other value could never match a randomised ciphertext."""

    def get_prep_lookup(self) -> Any:
        if self.rhs != "":
            raise TypeError("an encrypted field can only be compared with '' (no value)")
        return super().get_prep_lookup()


class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """A text column stored encrypted (see the module docstring); ``""`` is stored as ``""``.

    Reads that cannot be decrypted return ``""`` and log a warning.
    """

    description = "Text encrypted with a key derived from SECRET_KEY"

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return token_encrypt(plaintext=str(value))

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if not value:
            return value
        try:
            return token_decrypt(ciphertext=value)
        except (InvalidToken, UnicodeError):
            logger.warning(
                "%s.%s: a stored value could not be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS; "
                "treated as empty",
                self.model.__name__,
                self.name,
            )
            return ""

    def get_lookup(self, lookup_name: str) -> type[Lookup[Any]] | None:
        if lookup_name == "exact":
            return _EmptyOnlyExact
        if lookup_name == "isnull":
            return IsNull
        return None
