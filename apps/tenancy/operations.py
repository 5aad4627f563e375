"""Reusable migration operation that puts a tenant table under row-level security."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState, StateApps

from .scope import GUC_NAME

POLICY_NAME = "ministry_isolation"


def _policy_sql(table: str) -> list[str]:
    predicate = f"ministry_id = NULLIF(current_setting('{GUC_NAME}', true), '')::bigint"
    return [
        f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY',
        # FORCE: the policy applies to the table owner too (not to superusers).
        f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY',
        f'DROP POLICY IF EXISTS {POLICY_NAME} ON "{table}"',
        f'CREATE POLICY {POLICY_NAME} ON "{table}" USING ({predicate}) WITH CHECK ({predicate})',
    ]


def secure_tenant_table(cursor: Any, table: str, *, quote: Any) -> None:
    """Put ``table`` under the ministry RLS policy and grant the application role DML on it.

    For tables created outside Django's migration state, above all the partitions
    of a partitioned tenant table (``apps.quotas.partitions``,
    ``apps.search.partitions``). Security: PostgreSQL applies a parent's
    row-level security only to queries through the parent; a partition named
    directly is a table of its own and inherits neither the policy nor the
    grants, so each one needs this. Runs as the owner role.
    """
    for sql in _policy_sql(table):
        cursor.execute(sql)
    app_role = settings.GENNAI_DB_APP_ROLE
    if app_role and settings.GENNAI_DB_OWNER_ROLE:
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {quote(table)} TO {quote(app_role)}")


class EnableRLS(migrations.operations.base.Operation):
    """Enable and force RLS on a TenantModel's table with the ministry policy.

    Use in the migration that creates the model::

        operations = [migrations.CreateModel(...), EnableRLS("Conversation")]

    Security: without a ``gennai.ministry_id`` setting the predicate is NULL and
    no row is visible or writable; ``WITH CHECK`` stops inserts and updates that
    would place a row in another ministry.
    """

    reversible = True
    reduces_to_sql = True

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass  # schema-level only: nothing changes in the model state

    def _table(self, app_label: str, apps: StateApps) -> str:
        model = apps.get_model(app_label, self.model_name)
        return str(model._meta.db_table)

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        table = self._table(app_label, to_state.apps)
        for sql in _policy_sql(table):
            schema_editor.execute(sql)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        table = self._table(app_label, from_state.apps)
        schema_editor.execute(f'DROP POLICY IF EXISTS {POLICY_NAME} ON "{table}"')
        schema_editor.execute(f'ALTER TABLE "{table}" NO FORCE ROW LEVEL SECURITY')
        schema_editor.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')

    def describe(self) -> str:
        return f"Enable row-level security on {self.model_name}"

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (self.__class__.__qualname__, [self.model_name], {})

    @property
    def migration_name_fragment(self) -> str:
        return f"rls_{self.model_name.lower()}"
