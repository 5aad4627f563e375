"""PostgreSQL backend that drops to the unprivileged application role.

Every new connection runs ``SET ROLE <GENNAI_DB_APP_ROLE>``: a role that owns no
table and has no BYPASSRLS, so row-level security applies to every query the
application makes. Migrations and test-database setup enter *owner mode*
(:func:`apps.tenancy.db.owner_mode`), which switches to the owner role instead.

In production the app may log in directly as the application role; set
``GENNAI_DB_APP_ROLE=""`` then and the ``SET ROLE`` is skipped.
"""

from __future__ import annotations

from django.db.backends.postgresql.base import DatabaseWrapper as PostgresDatabaseWrapper

from apps.tenancy import db as tenancy_db


class DatabaseWrapper(PostgresDatabaseWrapper):
    def init_connection_state(self) -> None:
        super().init_connection_state()
        role = tenancy_db.role_for_new_connection()
        if role:
            with self.connection.cursor() as cursor:
                cursor.execute(f"SET ROLE {self.ops.quote_name(role)}")
            if not self.get_autocommit():
                self.connection.commit()
