"""Create the owner and application roles and the database (development).

Production creates these once, by hand or by Terraform (see docs/tenancy.md);
this command does the same against a server where the login role is allowed to
create roles, e.g. the embedded PostgreSQL of ``make run``.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand
from psycopg import sql


def bootstrap_database(*, conninfo: str, dbname: str, owner_role: str, app_role: str) -> list[str]:
    """Idempotently create both roles and the database. Returns what was done."""
    done: list[str] = []
    with psycopg.connect(conninfo, dbname="postgres", autocommit=True) as conn:
        login = conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
        for role, attrs in ((owner_role, "NOLOGIN CREATEDB"), (app_role, "NOLOGIN")):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE ROLE {} " + attrs + " NOSUPERUSER NOBYPASSRLS").format(
                        sql.Identifier(role)
                    )
                )
                done.append(f"created role {role}")
            # The login role may SET ROLE to either (dev/test only).
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(login)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(dbname), sql.Identifier(owner_role)
                )
            )
            done.append(f"created database {dbname}")
    return done


class Command(BaseCommand):
    help = "Create the owner/application database roles and the database if missing."
    requires_system_checks: list[str] = []  # runs before the database exists

    def handle(self, *args: Any, **options: Any) -> None:
        db = settings.DATABASES["default"]
        conninfo = psycopg.conninfo.make_conninfo(
            host=str(db.get("HOST") or "") or None,
            port=str(db.get("PORT") or "") or None,
            user=str(db.get("USER") or "") or None,
            password=str(db.get("PASSWORD") or "") or None,
        )
        done = bootstrap_database(
            conninfo=conninfo,
            dbname=str(db["NAME"]),
            owner_role=settings.GENNAI_DB_OWNER_ROLE,
            app_role=settings.GENNAI_DB_APP_ROLE,
        )
        for line in done or ["database and roles already present"]:
            self.stdout.write(line)
