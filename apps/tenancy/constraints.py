"""Foreign keys between ministry-owned rows stay inside one ministry.

Row-level security does not cover foreign keys: PostgreSQL checks a foreign key
as the table owner with row security off. Without more, a row of ministry B
could point at a row of ministry A (``chat_message.conversation_id`` = A's
conversation, ``quotas_usagerecord.api_key_id`` = A's key) even though B can
never *see* that row; joins, cascades and counts would then cross the boundary.

The fix is declarative: for every foreign key from a :class:`TenantModel` to a
*ministry-keyed* model (one with a non-null ``ministry`` foreign key, tenant or
not) the database gets a second, composite foreign key::

    ALTER TABLE <target> ADD CONSTRAINT … UNIQUE (ministry_id, id);
    ALTER TABLE <source> ADD CONSTRAINT … FOREIGN KEY (ministry_id, <column>)
        REFERENCES <target> (ministry_id, id) DEFERRABLE INITIALLY IMMEDIATE;

so the referenced row must exist *in the same ministry*. A ``NULL`` reference
is not checked (``MATCH SIMPLE``), as with the plain foreign key.

The pairs are found through the app registry, not listed by hand, and the
constraints are installed by ``post_migrate`` (as the owner role, like the
grants in :mod:`.grants`), so a colleague's new model gets them without writing
anything. ``tests/test_tenancy_sweep.py`` enumerates the same pairs and proves
that each one refuses a cross-ministry reference.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db import connections, models


@dataclass(frozen=True)
class SameMinistryForeignKey:
    """One foreign key from a tenant table to a ministry-keyed table."""

    model: type[models.Model]
    field: str
    table: str
    column: str
    target_model: type[models.Model]
    target_table: str
    target_column: str

    @property
    def constraint_name(self) -> str:
        return _name("same_ministry_fk", self.table, self.column)

    @property
    def target_unique_name(self) -> str:
        return _name("ministry_key", self.target_table, self.target_column)

    def __str__(self) -> str:
        return f"{self.table}.{self.column} -> {self.target_table}.{self.target_column}"


def _name(kind: str, table: str, column: str) -> str:
    """A constraint name under PostgreSQL's 63-byte limit, stable for the pair."""
    digest = hashlib.sha256(f"{table}.{column}".encode()).hexdigest()[:8]
    return f"{table[:30]}_{column[:12]}_{kind}_{digest}"[:63]


def is_ministry_keyed(model: type[models.Model]) -> bool:
    """Whether rows of ``model`` belong to exactly one ministry (non-null ``ministry`` FK)."""
    from .models import Ministry

    try:
        field = model._meta.get_field("ministry")  # type: ignore[misc]  # any model
    except FieldDoesNotExist:
        return False
    return bool(isinstance(field, models.ForeignKey) and field.related_model is Ministry and not field.null)


def same_ministry_foreign_keys() -> list[SameMinistryForeignKey]:
    """Every foreign key from a TenantModel to a ministry-keyed model, from the app registry."""
    from .models import TenantModel

    found: list[SameMinistryForeignKey] = []
    for model in apps.get_models():
        if not issubclass(model, TenantModel) or model._meta.proxy:
            continue
        for field in model._meta.concrete_fields:
            if not isinstance(field, models.ForeignKey) or field.name == "ministry":
                continue
            target = field.related_model
            if not isinstance(target, type) or not is_ministry_keyed(target):
                continue
            found.append(
                SameMinistryForeignKey(
                    model=model,
                    field=field.name,
                    table=model._meta.db_table,
                    column=field.column,
                    target_model=target,
                    target_table=target._meta.db_table,
                    target_column=field.target_field.column,
                )
            )
    return found


def _constraint_exists(cursor: Any, name: str) -> bool:
    cursor.execute("SELECT 1 FROM pg_constraint WHERE conname = %s", [name])
    return cursor.fetchone() is not None


def _table_exists(cursor: Any, table: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{table}"'])
    row = cursor.fetchone()
    return bool(row and row[0])


def install_same_ministry_foreign_keys(*, using: str = "default", **_: Any) -> list[str]:
    """Create the missing composite constraints (idempotent); return their names.

    Runs after every ``migrate`` as the owner role. A pair whose tables do not
    exist yet (a partial migrate) is skipped and created by a later migrate.
    Existing rows that already cross ministries make this fail loudly, which
    is what should happen.
    """
    conn = connections[using]
    if conn.vendor != "postgresql":
        return []
    q = conn.ops.quote_name
    created: list[str] = []
    with conn.cursor() as cursor:
        for fk in same_ministry_foreign_keys():
            if not (_table_exists(cursor, fk.table) and _table_exists(cursor, fk.target_table)):
                continue
            if not _constraint_exists(cursor, fk.target_unique_name):
                cursor.execute(
                    f"ALTER TABLE {q(fk.target_table)} ADD CONSTRAINT {q(fk.target_unique_name)} "
                    f"UNIQUE (ministry_id, {q(fk.target_column)})"
                )
                created.append(fk.target_unique_name)
            if not _constraint_exists(cursor, fk.constraint_name):
                cursor.execute(
                    f"ALTER TABLE {q(fk.table)} ADD CONSTRAINT {q(fk.constraint_name)} "
                    f"FOREIGN KEY (ministry_id, {q(fk.column)}) "
                    f"REFERENCES {q(fk.target_table)} (ministry_id, {q(fk.target_column)}) "
                    "DEFERRABLE INITIALLY IMMEDIATE"
                )
                created.append(fk.constraint_name)
    return created
