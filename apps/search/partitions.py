"""Hash partitions of the PostgreSQL search index (``search_indexedchunk``) by workspace.

Why (docs/performance.md, "Hybrid retrieval", fourth round): a search names a
few of a ministry's workspaces. In one table, their rows are interleaved with
every other workspace's, so the lexical leg's GIN bitmaps and the vector leg's
HNSW walk cover the whole ministry and throw most of it away (a filtered HNSW
walk at 5 % selectivity visits ≈17 candidates per row kept). Partitioned
``BY HASH (workspace_id)``, a search reads only the partitions of its
workspaces (plan-time pruning on ``workspace_id = ANY(…::bigint[])``), each
with its own GIN, HNSW and btree indexes over ≈1/``PARTITIONS`` of the rows.

Keys: PostgreSQL requires every unique key of a partitioned table to contain
the partition key, so the primary key is ``(id, workspace_id)`` and the upsert
key ``(ministry_id, workspace_id, chunk_id)``. A chunk's workspace is its
document's, which never changes; ``PostgresBackend.index_chunks`` still removes
a chunk id's rows in other workspaces before writing it, so a chunk can never
be found through a workspace it has left.

Security: PostgreSQL applies the *parent's* row-level security only to queries
through the parent. A partition is a table of its own, so every partition gets
the same ENABLE + FORCE ROW LEVEL SECURITY and ``ministry_isolation`` policy
(``apps.tenancy.operations.secure_tenant_table``, as for the usage ledger's partitions);
``tests/test_tenancy_sweep.py`` checks every partition of every tenant table.

Index names: each index exists on the parent (``ON ONLY``) and on every
partition as ``<name>_pNN``, attached to it, so plans name the index they use.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections

from apps.tenancy.operations import secure_tenant_table

PARENT = "search_indexedchunk"
LEGACY = f"{PARENT}_legacy"
#: Number of hash partitions. A search over k workspaces reads at most k of them.
PARTITIONS = 32
#: Rows up to ~8 KB stay whole in the heap (search/0002): the vector is not TOASTed.
_STORAGE = "WITH (toast_tuple_target = 8160)"
# Unique keys must contain the partition key.
_UNIQUE = {
    f"{PARENT}_pkey": "PRIMARY KEY (id, workspace_id)",
    "search_chunk_unique_per_ministry": "UNIQUE (ministry_id, workspace_id, chunk_id)",
}


def partition_name(remainder: int) -> str:
    return f"{PARENT}_p{remainder:02d}"


def index_definitions() -> dict[str, str]:
    """Every secondary index of the table: name → what follows ``ON <table>``."""
    dims = int(settings.GENNAI_EMBEDDING_DIMENSIONS)
    return {
        # Every search's scope: WHERE ministry_id = %s AND workspace_id = ANY(…) [AND document_id = ANY(…)].
        "search_chunk_ws_doc": "(ministry_id, workspace_id, document_id)",
        # delete_document.
        "search_chunk_doc": "(ministry_id, document_id)",
        # The exact vector leg's index-only scan (search/0005).
        "search_chunk_ws_doc_vec": "(ministry_id, workspace_id, document_id) INCLUDE (id, embedding)",
        # The lexical leg.
        "search_chunk_tsv": "USING gin (tsv)",
        # The vector leg above the exact threshold (search/0003: half precision).
        "search_chunk_embedding_half": f"USING hnsw ((embedding::halfvec({dims})) halfvec_cosine_ops)",
    }


def is_partitioned(cursor: Any) -> bool:
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [PARENT])
    row = cursor.fetchone()
    return bool(row and row[0] == "p")


def create_index(cursor: Any, name: str, *, quote: Any) -> None:
    """Create index ``name`` (see :func:`index_definitions`) on the parent and on every partition."""
    definition = index_definitions()[name]
    cursor.execute(f"CREATE INDEX {quote(name)} ON ONLY {quote(PARENT)} {definition}")
    for remainder in range(PARTITIONS):
        child = f"{name}_p{remainder:02d}"
        cursor.execute(f"CREATE INDEX {quote(child)} ON {quote(partition_name(remainder))} {definition}")
        cursor.execute(f"ALTER INDEX {quote(name)} ATTACH PARTITION {quote(child)}")


def _fetch(cursor: Any, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    cursor.execute(sql, params)
    return list(cursor.fetchall())


def _totals(cursor: Any, table: str, quote: Any) -> tuple[Any, ...]:
    cursor.execute(
        f"SELECT count(*), coalesce(sum(chunk_id), 0), coalesce(sum(length(text)), 0), "
        f"count(embedding), coalesce(max(id), 0) FROM {quote(table)}"
    )
    return tuple(cursor.fetchone())


def convert_to_partitioned(*, using: str = "default") -> None:
    """Rebuild ``search_indexedchunk`` as ``PARTITIONS`` hash partitions by workspace, rows and ids kept.

    Runs inside the migration's transaction as the owner role: the old table is
    renamed, a partitioned table takes its name (same columns, defaults, checks,
    identity and foreign keys), the rows are copied, counts and sums compared
    (any difference aborts the migration), the old table dropped, and the keys
    and indexes built over the copied rows. The copy holds an exclusive lock on
    the index while it runs: run the migration in a maintenance window (docs/search.md).
    """
    _rebuild(using=using, partitioned=True)


def convert_to_plain(*, using: str = "default") -> None:
    """The reverse of :func:`convert_to_partitioned` (search/0006 backwards): one table, 0005's keys."""
    _rebuild(using=using, partitioned=False)


# The unique keys of each layout (a partitioned table's must contain the partition key).
_PLAIN_UNIQUE = {
    f"{PARENT}_pkey": "PRIMARY KEY (id)",
    "search_chunk_unique_per_ministry": "UNIQUE (ministry_id, chunk_id)",
}


def _rebuild(*, using: str, partitioned: bool) -> None:
    conn = connections[using]
    if conn.vendor != "postgresql":
        return
    quote = conn.ops.quote_name
    with conn.cursor() as cursor:
        if is_partitioned(cursor) == partitioned:
            return
        # Deferred foreign-key checks of rows written earlier in this transaction run now:
        # ALTER TABLE needs none pending.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        referencing = _fetch(
            cursor, "SELECT conname FROM pg_constraint WHERE confrelid = to_regclass(%s)", [PARENT]
        )
        if referencing:
            raise RuntimeError(f"foreign keys point at {PARENT}: {referencing}; partitioning needs none")
        foreign_keys = _fetch(
            cursor,
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(%s) "
            "AND contype = 'f' ORDER BY conname",
            [PARENT],
        )
        indexes = _fetch(
            cursor,
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(%s) ORDER BY c.relname",
            [PARENT],
        )
        # Indexes Django made that this module does not define (the foreign key's index on
        # ministry_id): rebuilt from their own definitions, which name the table by PARENT.
        other_indexes = [
            definition
            for (definition,) in _fetch(
                cursor,
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = to_regclass(%s) AND c.relname <> ALL(%s) "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) "
                "ORDER BY c.relname",
                [PARENT, list(index_definitions())],
            )
        ]
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [PARENT])
        old_sequence = cursor.fetchone()[0]
        old_tables = [
            name
            for (name,) in _fetch(
                cursor, "SELECT relid::regclass::text FROM pg_partition_tree(%s::regclass)", [PARENT]
            )
        ]

        # Move the old table (and its index names, which share the schema's namespace) aside. Its
        # partitions' indexes are renamed with their parent's: they keep their names, which would
        # clash with the new partitions' (<name>_pNN).
        cursor.execute(f"ALTER TABLE {quote(PARENT)} RENAME TO {quote(LEGACY)}")
        for position, (name,) in enumerate(indexes):
            cursor.execute(f"ALTER INDEX {quote(name)} RENAME TO {quote(f'{LEGACY}_idx{position}')}")
        for position, table in enumerate(old_tables[1:]):
            cursor.execute(f"ALTER TABLE {table} RENAME TO {quote(f'{LEGACY}_part{position}')}")
        for position, (name,) in enumerate(
            _fetch(
                cursor,
                "SELECT c.relname FROM pg_inherits h JOIN pg_index i ON i.indrelid = h.inhrelid "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE h.inhparent = to_regclass(%s) ORDER BY 1",
                [LEGACY],
            )
        ):
            cursor.execute(f"ALTER INDEX {quote(name)} RENAME TO {quote(f'{LEGACY}_pidx{position}')}")
        cursor.execute(f"ALTER SEQUENCE {old_sequence} RENAME TO {quote(f'{LEGACY}_id_seq')}")
        # FORCE RLS binds the owner too; the copy below must see every ministry's rows (read
        # through the parent, only the parent's policy applies).
        cursor.execute(f"ALTER TABLE {quote(LEGACY)} NO FORCE ROW LEVEL SECURITY")

        layout = "PARTITION BY HASH (workspace_id)" if partitioned else _STORAGE
        cursor.execute(
            f"CREATE TABLE {quote(PARENT)} (LIKE {quote(LEGACY)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            f"INCLUDING IDENTITY INCLUDING STORAGE) {layout}"
        )
        cursor.execute(f"SELECT last_value, is_called FROM {quote(f'{LEGACY}_id_seq')}")
        last_value, is_called = cursor.fetchone()
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, %s)", [PARENT, last_value, is_called]
        )
        tables = [PARENT]
        if partitioned:
            for remainder in range(PARTITIONS):
                cursor.execute(
                    f"CREATE TABLE {quote(partition_name(remainder))} PARTITION OF {quote(PARENT)} "
                    f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {remainder}) {_STORAGE}"
                )
                tables.append(partition_name(remainder))

        columns = ", ".join(
            quote(name)
            for (name,) in _fetch(
                cursor,
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum",
                [LEGACY],
            )
        )
        before = _totals(cursor, LEGACY, quote)
        cursor.execute(f"INSERT INTO {quote(PARENT)} ({columns}) SELECT {columns} FROM {quote(LEGACY)}")
        after = _totals(cursor, PARENT, quote)
        if after != before:
            raise RuntimeError(f"search index copy differs: {before} → {after}")
        cursor.execute(f"DROP TABLE {quote(LEGACY)}")

        for name, definition in (_UNIQUE if partitioned else _PLAIN_UNIQUE).items():
            cursor.execute(f"ALTER TABLE {quote(PARENT)} ADD CONSTRAINT {quote(name)} {definition}")
        for name, definition in foreign_keys:
            cursor.execute(f"ALTER TABLE {quote(PARENT)} ADD CONSTRAINT {quote(name)} {definition}")
        for name, definition in index_definitions().items():
            if partitioned:
                create_index(cursor, name, quote=quote)
            else:
                cursor.execute(f"CREATE INDEX {quote(name)} ON {quote(PARENT)} {definition}")
        for definition in other_indexes:
            cursor.execute(definition)
        for table in tables:
            secure_tenant_table(cursor, table, quote=quote)
        app_role = settings.GENNAI_DB_APP_ROLE
        if app_role and settings.GENNAI_DB_OWNER_ROLE:
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [PARENT])
            cursor.execute(f"GRANT USAGE, SELECT ON SEQUENCE {cursor.fetchone()[0]} TO {quote(app_role)}")
