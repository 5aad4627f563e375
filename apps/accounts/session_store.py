"""The session engine (``SESSION_ENGINE``): Django's database engine on :class:`apps.accounts.models.Session`.

Security: the session table holds only digests of session keys
(:mod:`apps.accounts.session_keys`), so a database backup or a read-only SQL
foothold yields no cookie that names a live session. Everything else is
Django's database engine unchanged (the documented way to extend it: a
``SessionStore`` subclass whose ``get_model_class()`` names the model); its
lookups, saves and deletes pass keys through the model field, which hashes a
raw key and passes a digest read from the database unchanged.
"""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends.db import SessionStore as DBStore


class SessionStore(DBStore):
    """Database sessions keyed by the digest of the session key."""

    @classmethod
    def get_model_class(cls) -> Any:
        from apps.accounts.models import Session  # the engine is importable before the app registry

        return Session
