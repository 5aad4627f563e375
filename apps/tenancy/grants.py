"""Privileges of the application role, re-applied after every migrate."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections


def grant_app_role_privileges(*, using: str = "default", **_: Any) -> None:
    """Give the application role DML on every table, nothing more.

    Security: no ownership, no TRUNCATE/REFERENCES/TRIGGER, no DDL, and no write
    access to the migration history. Runs as the owner role (inside ``migrate``).
    """
    app_role = settings.GENNAI_DB_APP_ROLE
    owner_role = settings.GENNAI_DB_OWNER_ROLE
    if not app_role or not owner_role:
        return
    conn = connections[using]
    q = conn.ops.quote_name
    with conn.cursor() as cursor:
        cursor.execute(f"GRANT USAGE ON SCHEMA public TO {q(app_role)}")
        cursor.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {q(app_role)}"
        )
        cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {q(app_role)}")
        cursor.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {q(owner_role)} IN SCHEMA public "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {q(app_role)}"
        )
        cursor.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {q(owner_role)} IN SCHEMA public "
            f"GRANT USAGE, SELECT ON SEQUENCES TO {q(app_role)}"
        )
        cursor.execute(f"REVOKE INSERT, UPDATE, DELETE ON django_migrations FROM {q(app_role)}")
        # The audit log is append-only for the application.
        cursor.execute("SELECT to_regclass('audit_auditevent') IS NOT NULL")
        if cursor.fetchone()[0]:
            cursor.execute(f"REVOKE UPDATE, DELETE ON audit_auditevent FROM {q(app_role)}")
