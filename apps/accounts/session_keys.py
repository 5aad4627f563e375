"""Session keys are stored only as digests (:class:`SessionKeyDigestField`).

The threat: someone holding a database backup, or a read-only SQL foothold,
must not be able to replay a live session. Django's database session engine
keeps the browser's session cookie value as the primary key of the session
table, and :class:`apps.accounts.models.OIDCSession` kept the same value: a
backup was a list of valid cookies (admins included) for up to
``SESSION_COOKIE_AGE``.

What this module guarantees:

* A session key is written to the database, and compared there, only as
  :func:`session_key_digest` of it: BLAKE2b, 160 bits, personalised for this
  use. Session keys are 32 random characters from 36 (about 165 bits), so the
  digest cannot be inverted or guessed, and a digest sent as a cookie is
  hashed again like any cookie and names no session.
* The hash is deliberately *unkeyed*: a secret would add nothing against this
  threat (the key itself has full entropy) and rotating ``SECRET_KEY`` would
  then sign everyone out.
* The ORM does it transparently: ``filter(session_key=request.session.session_key)``
  and ``Model(session_key=raw).save()`` hash the raw key. A value read from
  the column (a digest) comes back as :class:`StoredDigest` and is passed to
  the database unchanged, so an instance loaded from the database can be saved
  and deleted, and a key read from one table finds its row in the other
  (back-channel logout: ``OIDCSession.session_key`` to the session store).
  Only digests read from the database are ever ``StoredDigest``; what comes
  from a request (a cookie) is a plain ``str`` and is always hashed.
* Only ``exact``, ``in`` and ``isnull`` lookups exist on the field: a pattern
  or range compared with digests could never mean what it says.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import models
from django.db.models.lookups import Lookup

#: BLAKE2b personalisation: these digests serve this purpose only.
DIGEST_PERSON = b"gennai-session"
#: 20 bytes: 40 hex characters, the width of Django's ``session_key`` column.
DIGEST_SIZE = 20

ALLOWED_LOOKUPS = frozenset({"exact", "in", "isnull"})


class StoredDigest(str):
    """A session-key digest as read from the database; never hashed again on its way back.

    Security: only :meth:`SessionKeyDigestField.from_db_value` creates these.
    Code must not wrap a value from a request in it: that would turn a digest
    revealed by a backup into a valid session key.
    """

    __slots__ = ()


def session_key_digest(session_key: str) -> str:
    """The stored form of ``session_key``: 40 hex characters (see the module docstring)."""
    return hashlib.blake2b(session_key.encode(), digest_size=DIGEST_SIZE, person=DIGEST_PERSON).hexdigest()


class SessionKeyDigestField(models.CharField):  # type: ignore[type-arg]
    """A session key column that stores and compares only digests (see the module docstring).

    A raw key is hashed on its way to the database; a :class:`StoredDigest`
    (a value read from the column) goes back as it is; ``None`` and ``""`` stay.
    """

    description = "Digest of a session key (BLAKE2b-160)"

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "" or isinstance(value, StoredDigest):
            return value
        return session_key_digest(str(value))

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if not value:
            return value
        return StoredDigest(value)

    def get_lookup(self, lookup_name: str) -> type[Lookup[Any]] | None:
        if lookup_name not in ALLOWED_LOOKUPS:
            return None
        return super().get_lookup(lookup_name)
