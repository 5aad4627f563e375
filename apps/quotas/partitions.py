"""Monthly partitions of the usage ledger (``quotas_usagerecord``), by ``created_at``.

The table is partitioned ``BY RANGE (created_at)``, one partition per calendar
month in ``settings.TIME_ZONE`` (Japan time, like the daily rollups), named
``quotas_usagerecord_YYYY_MM``, plus ``quotas_usagerecord_default`` for anything
outside the months that exist: an insert never fails for want of a partition.
Retention becomes ``DETACH PARTITION`` + ``DROP TABLE`` of whole months.

Security: PostgreSQL applies the *parent's* row-level security to queries
through the parent only. A partition is a table of its own, readable by the
application role (``apps.tenancy.grants`` grants DML on all tables), so every
partition gets the same ENABLE + FORCE ROW LEVEL SECURITY and
``ministry_isolation`` policy as the parent (:func:`_secure`), or a direct
``SELECT … FROM quotas_usagerecord_2026_12`` would cross ministries.
``tests/test_tenancy_sweep.py`` checks every partition of every tenant table.

Creating a partition is DDL, which only the owner role may run. Everything goes
through :func:`ensure_usage_partitions`, called by the migration that
partitions the table, by ``post_migrate`` (every deploy: two months back to
twelve ahead), by ``manage.py usage_partitions --months N`` (ops, with the
migration login) and daily by :func:`usage_partitions_maintain` (Celery beat,
``quotas-usage-partitions``), which also keeps twelve months ahead and drops the
months older than ``GENNAI_USAGE_RETENTION_MONTHS`` (default 24; 0 keeps
everything): ``DETACH PARTITION`` + ``DROP TABLE``, each drop audited
(``quotas.usage_partition_drop``). The daily rollups (``UsageDaily``) are kept.
"""

from __future__ import annotations

import logging
import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from apps.tenancy.operations import secure_tenant_table

PARENT = "quotas_usagerecord"
DEFAULT_PARTITION = f"{PARENT}_default"
MONTHS_BACK = 2
MONTHS_AHEAD = 12
#: Shortest retention accepted: the budget month and the one before it (rollups of
#: yesterday, reseeding the counters) must always be in the ledger.
MIN_RETENTION_MONTHS = 2
_MONTH_NAME = re.compile(rf"^{PARENT}_(\d{{4}})_(\d{{2}})$")

logger = logging.getLogger("gennai.quotas")


def month_start(day: date) -> date:
    return date(day.year, day.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    """The partition of ``month`` (derived from the date, never taken from input)."""
    return f"{PARENT}_{month.year:04d}_{month.month:02d}"


def _bound(month: date) -> str:
    """Midnight of the month's first day in settings.TIME_ZONE, as a timestamptz literal."""
    moment = datetime(month.year, month.month, 1, tzinfo=zoneinfo.ZoneInfo(settings.TIME_ZONE))
    return f"'{moment.isoformat()}'"


def is_partitioned(cursor: Any) -> bool:
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [PARENT])
    row = cursor.fetchone()
    return bool(row and row[0] == "p")


def _exists(cursor: Any, table: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
    return bool(cursor.fetchone()[0])


def _secure(cursor: Any, table: str, quote: Any) -> None:
    """RLS and grants of a partition, exactly like the parent's (partitions inherit neither)."""
    secure_tenant_table(cursor, table, quote=quote)


def _create_default(cursor: Any, quote: Any) -> bool:
    if _exists(cursor, DEFAULT_PARTITION):
        return False
    cursor.execute(f"CREATE TABLE {quote(DEFAULT_PARTITION)} PARTITION OF {quote(PARENT)} DEFAULT")
    _secure(cursor, DEFAULT_PARTITION, quote)
    return True


def _create_month(cursor: Any, month: date, quote: Any, using: str) -> bool:
    """Create the month's partition; rows of that month already in DEFAULT move into it."""
    name = partition_name(month)
    if _exists(cursor, name):
        return False
    lower, upper = _bound(month), _bound(add_months(month, 1))
    values = f"FOR VALUES FROM ({lower}) TO ({upper})"
    try:
        with transaction.atomic(using=using):
            cursor.execute(f"CREATE TABLE {quote(name)} PARTITION OF {quote(PARENT)} {values}")
    except IntegrityError:
        # The DEFAULT partition holds rows of this month (PostgreSQL refuses the new
        # range then). Build the month as a plain table, move the rows, attach it.
        # FORCE RLS binds the owner too, so it is lifted on DEFAULT for the move only
        # (same transaction: a failure restores it). Deferred foreign-key checks of
        # rows written earlier in this transaction run now: ALTER TABLE needs none pending.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            f"CREATE TABLE {quote(name)} (LIKE {quote(PARENT)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        cursor.execute(f"ALTER TABLE {quote(DEFAULT_PARTITION)} NO FORCE ROW LEVEL SECURITY")
        cursor.execute(
            f"WITH moved AS (DELETE FROM {quote(DEFAULT_PARTITION)} "
            f"WHERE created_at >= {lower} AND created_at < {upper} RETURNING *) "
            f"INSERT INTO {quote(name)} SELECT * FROM moved"
        )
        cursor.execute(f"ALTER TABLE {quote(DEFAULT_PARTITION)} FORCE ROW LEVEL SECURITY")
        cursor.execute(f"ALTER TABLE {quote(PARENT)} ATTACH PARTITION {quote(name)} {values}")
    _secure(cursor, name, quote)
    return True


def ensure_usage_partitions(*, start: date, months: int, using: str = "default") -> list[str]:
    """Create the DEFAULT partition and those of ``months`` months from ``start``'s month.

    Idempotent; returns the names created. Must run as the owner role (a migration,
    ``post_migrate``, the management command). Does nothing before the table is
    partitioned (an early migration state) or on another database vendor.
    """
    conn = connections[using]
    if conn.vendor != "postgresql":
        return []
    quote = conn.ops.quote_name
    created: list[str] = []
    with transaction.atomic(using=using), conn.cursor() as cursor:
        if not is_partitioned(cursor):
            return []
        if _create_default(cursor, quote):
            created.append(DEFAULT_PARTITION)
        first = month_start(start)
        for offset in range(max(months, 0)):
            month = add_months(first, offset)
            if _create_month(cursor, month, quote, using):
                created.append(partition_name(month))
    return created


def ensure_usage_partitions_after_migrate(*, using: str = "default", **_: Any) -> list[str]:
    """``post_migrate``: partitions from two months back to twelve months ahead."""
    this_month = month_start(timezone.localdate())
    return ensure_usage_partitions(
        start=add_months(this_month, -MONTHS_BACK), months=MONTHS_BACK + 1 + MONTHS_AHEAD, using=using
    )


def usage_partitions(*, using: str = "default") -> list[tuple[str, str]]:
    """Every partition of the ledger with its bound, oldest first (DEFAULT last)."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s) "
            "ORDER BY c.relname = %s, c.relname",
            [PARENT, DEFAULT_PARTITION],
        )
        return [(str(name), str(bound)) for name, bound in cursor.fetchall()]


def partition_month(name: str) -> date | None:
    """The month of a monthly partition's name (``None`` for DEFAULT or anything else)."""
    match = _MONTH_NAME.match(name)
    return date(int(match[1]), int(match[2]), 1) if match else None


def retention_cutoff(*, today: date, retention_months: int) -> date | None:
    """First month kept: ``retention_months`` whole months before ``today``'s month (None: keep all)."""
    if retention_months == 0:
        return None
    if retention_months < MIN_RETENTION_MONTHS:
        raise ImproperlyConfigured(
            f"GENNAI_USAGE_RETENTION_MONTHS must be 0 (keep all) or >= {MIN_RETENTION_MONTHS}"
        )
    return add_months(month_start(today), -retention_months)


@dataclass
class MaintenanceResult:
    """What one run of :func:`usage_partitions_maintain` did."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    default_rows_deleted: int = 0
    cutoff: date | None = None


def _drop_month(cursor: Any, name: str, quote: Any) -> None:
    # DETACH first: the parent's lock is short and the table can no longer be
    # reached through the parent; then the months' data goes with DROP TABLE. Deferred
    # foreign-key checks of rows written earlier in this transaction run now (DDL needs none pending).
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cursor.execute(f"ALTER TABLE {quote(PARENT)} DETACH PARTITION {quote(name)}")
    cursor.execute(f"DROP TABLE {quote(name)}")


def _delete_old_default_rows(cursor: Any, cutoff: date, quote: Any) -> int:
    # FORCE RLS binds the owner too: lifted on DEFAULT for this delete only (same transaction).
    cursor.execute(f"ALTER TABLE {quote(DEFAULT_PARTITION)} NO FORCE ROW LEVEL SECURITY")
    cursor.execute(f"DELETE FROM {quote(DEFAULT_PARTITION)} WHERE created_at < {_bound(cutoff)}")
    deleted = int(cursor.rowcount or 0)
    cursor.execute(f"ALTER TABLE {quote(DEFAULT_PARTITION)} FORCE ROW LEVEL SECURITY")
    return deleted


def usage_partitions_maintain(
    *, today: date | None = None, retention_months: int | None = None, using: str = "default"
) -> MaintenanceResult:
    """Keep the ledger's partitions twelve months ahead and drop months past the retention.

    Runs daily from Celery beat (``quotas.usage_partitions_maintain``) and must
    act as the owner role (DDL; the caller enters ``owner_mode``). One
    transaction: the partitions dropped and their ``quotas.usage_partition_drop``
    audit events (actor ``system``, platform-wide) commit together or not at
    all. Rows of expired months that sit in DEFAULT are deleted too (audited
    with their count). Usage older than the cutoff then exists only in the daily
    rollups.
    """
    from apps.audit.services import audit_record

    today = today or timezone.localdate()
    months = settings.GENNAI_USAGE_RETENTION_MONTHS if retention_months is None else retention_months
    cutoff = retention_cutoff(today=today, retention_months=int(months))
    result = MaintenanceResult(cutoff=cutoff)
    conn = connections[using]
    if conn.vendor != "postgresql":
        return result
    quote = conn.ops.quote_name
    result.created = ensure_usage_partitions(start=today, months=MONTHS_AHEAD + 1, using=using)
    if cutoff is None:
        return result
    with transaction.atomic(using=using), conn.cursor() as cursor:
        if not is_partitioned(cursor):
            return result
        for name, _bound_expr in usage_partitions(using=using):
            month = partition_month(name)
            if month is None or month >= cutoff:
                continue
            _drop_month(cursor, name, quote)
            result.dropped.append(name)
            audit_record(
                actor=None,
                action="quotas.usage_partition_drop",
                target_type="usage_partition",
                target_id=name,
                ministry_id=None,
                data={
                    "month": month.isoformat()[:7],
                    "cutoff": cutoff.isoformat()[:7],
                    "retention_months": months,
                },
            )
            logger.info("usage ledger: dropped partition %s (retention %s months)", name, months)
        if _exists(cursor, DEFAULT_PARTITION):
            result.default_rows_deleted = _delete_old_default_rows(cursor, cutoff, quote)
            if result.default_rows_deleted:
                audit_record(
                    actor=None,
                    action="quotas.usage_default_rows_delete",
                    target_type="usage_partition",
                    target_id=DEFAULT_PARTITION,
                    ministry_id=None,
                    data={"rows": result.default_rows_deleted, "before": cutoff.isoformat()[:7]},
                )
    return result


# --- The one-off conversion (migration 0006) ------------------------------------------

LEGACY = f"{PARENT}_legacy"
# Unique keys must contain the partition key: both gain created_at.
_UNIQUE = {
    f"{PARENT}_pkey": "PRIMARY KEY (id, created_at)",
    "usage_ministry_request_at_uniq": "UNIQUE (ministry_id, request_id, created_at)",
}


def _fetch(cursor: Any, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    cursor.execute(sql, params)
    return list(cursor.fetchall())


def _totals(cursor: Any, table: str, quote: Any) -> tuple[Any, ...]:
    cursor.execute(
        f"SELECT count(*), coalesce(sum(prompt_tokens + completion_tokens), 0), "
        f"coalesce(sum(cost_yen), 0), coalesce(min(created_at), now()) FROM {quote(table)}"
    )
    return tuple(cursor.fetchone())


def convert_to_partitioned(*, using: str = "default") -> None:
    """Rebuild ``quotas_usagerecord`` as a partitioned table, rows, ids and keys kept.

    Runs inside the migration's transaction as the owner role: the old table is
    renamed, a partitioned copy takes its name (same columns, defaults, checks,
    identity, non-unique indexes and foreign keys, including the same-ministry
    ones of ``apps.tenancy.constraints``), monthly partitions cover the oldest
    row's month to twelve months ahead, the rows are copied, counts and sums are
    compared, and the old table is dropped. Any difference aborts the migration.
    """
    conn = connections[using]
    if conn.vendor != "postgresql":
        return
    quote = conn.ops.quote_name
    with conn.cursor() as cursor:
        if is_partitioned(cursor):
            return
        referencing = _fetch(
            cursor, "SELECT conname FROM pg_constraint WHERE confrelid = to_regclass(%s)", [PARENT]
        )
        if referencing:
            raise RuntimeError(f"foreign keys point at {PARENT}: {referencing}; partitioning needs none")
        oid_sql = "to_regclass(%s)"
        foreign_keys = _fetch(
            cursor,
            f"SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = {oid_sql} "
            "AND contype = 'f' ORDER BY conname",
            [PARENT],
        )
        indexes = _fetch(
            cursor,
            f"SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique FROM pg_index i "
            f"JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = {oid_sql} ORDER BY c.relname",
            [PARENT],
        )
        expected_unique = (*_UNIQUE, "usage_ministry_request_uniq")
        unknown_unique = [name for name, _d, unique in indexes if unique and name not in expected_unique]
        if unknown_unique:
            raise RuntimeError(f"unexpected unique indexes on {PARENT}: {unknown_unique}")
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [PARENT])
        old_sequence = cursor.fetchone()[0]

        # Move the old table (and its index names, which share the schema's namespace) aside.
        cursor.execute(f"ALTER TABLE {quote(PARENT)} RENAME TO {quote(LEGACY)}")
        for position, (name, _definition, _unique) in enumerate(indexes):
            cursor.execute(f"ALTER INDEX {quote(name)} RENAME TO {quote(f'{LEGACY}_idx{position}')}")
        cursor.execute(f"ALTER SEQUENCE {old_sequence} RENAME TO {quote(f'{LEGACY}_id_seq')}")
        # FORCE RLS binds the owner too; the copy below must see every ministry's rows.
        cursor.execute(f"ALTER TABLE {quote(LEGACY)} NO FORCE ROW LEVEL SECURITY")

        cursor.execute(
            f"CREATE TABLE {quote(PARENT)} (LIKE {quote(LEGACY)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING IDENTITY) PARTITION BY RANGE (created_at)"
        )
        cursor.execute(f"SELECT last_value, is_called FROM {quote(f'{LEGACY}_id_seq')}")
        last_value, is_called = cursor.fetchone()
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, %s)", [PARENT, last_value, is_called]
        )
        for name, definition in _UNIQUE.items():
            cursor.execute(f"ALTER TABLE {quote(PARENT)} ADD CONSTRAINT {quote(name)} {definition}")
        for _name, definition, unique in indexes:
            if not unique:
                cursor.execute(definition)  # CREATE INDEX <original name> ON public.quotas_usagerecord …
        for name, definition in foreign_keys:
            cursor.execute(f"ALTER TABLE {quote(PARENT)} ADD CONSTRAINT {quote(name)} {definition}")

        before = _totals(cursor, LEGACY, quote)
        oldest = timezone.localtime(before[3]).date()
        last = add_months(month_start(timezone.localdate()), MONTHS_AHEAD)
        span = (last.year - oldest.year) * 12 + last.month - oldest.month + 1
        _create_default(cursor, quote)
        for offset in range(span):
            _create_month(cursor, add_months(month_start(oldest), offset), quote, using)

        columns = ", ".join(
            quote(name)
            for (name,) in _fetch(
                cursor,
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum",
                [LEGACY],
            )
        )
        cursor.execute(f"INSERT INTO {quote(PARENT)} ({columns}) SELECT {columns} FROM {quote(LEGACY)}")
        after = _totals(cursor, PARENT, quote)
        if after[:3] != before[:3]:
            raise RuntimeError(f"usage ledger copy differs: {before[:3]} → {after[:3]}")
        cursor.execute(f"DROP TABLE {quote(LEGACY)}")
        _secure(cursor, PARENT, quote)
        app_role = settings.GENNAI_DB_APP_ROLE
        if app_role and settings.GENNAI_DB_OWNER_ROLE:
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [PARENT])
            cursor.execute(f"GRANT USAGE, SELECT ON SEQUENCE {cursor.fetchone()[0]} TO {quote(app_role)}")
