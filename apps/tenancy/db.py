"""Database roles: which role a connection acts as.

Two roles (created by ``manage.py db_bootstrap`` in development, by the DBA in
production; see docs/tenancy.md):

* the **owner role** owns every table and runs migrations;
* the **application role** owns nothing, has no ``BYPASSRLS``, and only has
  ``SELECT/INSERT/UPDATE/DELETE`` on tables and ``USAGE`` on sequences.

Normal connections act as the application role. Owner mode is for migrations,
test-database creation and flushing only.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from django.conf import settings
from django.db import DatabaseError, connections

_state = threading.local()


def in_owner_mode() -> bool:
    return bool(getattr(_state, "owner_mode", False))


def role_for_new_connection() -> str:
    """Role that a freshly opened connection must ``SET ROLE`` to ('' for none)."""
    if in_owner_mode():
        return str(settings.GENNAI_DB_OWNER_ROLE or "")
    return str(settings.GENNAI_DB_APP_ROLE or "")


def _set_role_on_open_connections(role: str) -> None:
    for conn in connections.all(initialized_only=True):
        if conn.vendor != "postgresql" or conn.connection is None:
            continue
        try:
            with conn.cursor() as cursor:
                if role:
                    cursor.execute(f"SET ROLE {conn.ops.quote_name(role)}")
                else:
                    cursor.execute("RESET ROLE")
        except DatabaseError:
            # E.g. a production migration login that may act as the owner but not
            # as the app role: drop the connection; a new one sets its role anew.
            if conn.in_atomic_block:
                raise
            conn.close()


@contextlib.contextmanager
def owner_mode() -> Iterator[None]:
    """Act as the owner role (migrations, test DB setup) for the duration.

    Security: only management commands that change the schema and the test
    harness use this. It works only where the login role is a member of the owner
    role, which production's application login is not.
    """
    previous = in_owner_mode()
    _state.owner_mode = True
    _set_role_on_open_connections(str(settings.GENNAI_DB_OWNER_ROLE or ""))
    try:
        yield
    finally:
        _state.owner_mode = previous
        _set_role_on_open_connections(role_for_new_connection())
