"""The search index partitioned by workspace (apps/search/partitions.py, search/0006).

What must hold: a search reads only its workspaces' partitions (that is the point
of the layout); a chunk is never findable through a workspace it is not in; the
migration moves an existing index's rows, ids and sequence over unchanged, and
every partition is under the same row-level security as the parent.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.search.base import ChunkRecord
from apps.search.partitions import PARENT, PARTITIONS, is_partitioned
from apps.search.postgres import PostgresBackend, vector_literal
from apps.search.tests.test_postgres_plans import _chunk as plan_chunk
from apps.search.tests.test_postgres_plans import _vector
from apps.tenancy.db import owner_mode
from apps.tenancy.operations import POLICY_NAME
from apps.tenancy.scope import ministry_scope

pytestmark = pytest.mark.django_db


def _chunk(ministry_id: int, chunk_id: int, workspace_id: int) -> ChunkRecord:
    """``test_postgres_plans``' chunk (「旅費の規程。」), in ``workspace_id``."""
    return dataclasses.replace(plan_chunk(ministry_id, chunk_id, "旅費の規程。"), workspace_id=workspace_id)


def _partition_of(workspace_id: int) -> str:
    """The partition a workspace's rows go to, as PostgreSQL computes it."""
    with connection.cursor() as cursor:
        for remainder in range(PARTITIONS):
            cursor.execute(
                "SELECT satisfies_hash_partition(%s::regclass, %s, %s, %s::bigint)",
                [PARENT, PARTITIONS, remainder, workspace_id],
            )
            if cursor.fetchone()[0]:
                return f"{PARENT}_p{remainder:02d}"
    raise AssertionError(f"no partition for workspace {workspace_id}")


def test_search_reads_only_the_partitions_of_its_workspaces(ministries: tuple[Any, Any]) -> None:
    ministry = ministries[0]
    asked = 7
    others = [w for w in range(8, 200) if _partition_of(w) != _partition_of(asked)][:5]
    backend = PostgresBackend()
    with ministry_scope(ministry_id=ministry.pk):
        backend.index_chunks(
            ministry_id=ministry.pk,
            chunks=[_chunk(ministry.pk, 1, asked)] + [_chunk(ministry.pk, 10 + w, w) for w in others],
        )
    sent: list[tuple[str, Any]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append((sql, params))
        return execute(sql, params, many, context)

    with ministry_scope(ministry_id=ministry.pk):
        with connection.execute_wrapper(record):
            hits = backend.search(
                ministry_id=ministry.pk, workspace_ids=[asked], query="旅費", query_embedding=_vector(1)
            )
        assert [hit.chunk_id for hit in hits] == [1]
        plans = []
        with connection.cursor() as cursor:
            for sql, params in sent:
                cursor.execute("EXPLAIN " + sql, params)
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
    read = set(re.findall(rf"\b{PARENT}_p\d\d\b", "\n".join(plans)))
    assert read == {_partition_of(asked)}, plans


def test_a_chunk_indexed_under_another_workspace_leaves_the_old_one(ministries: tuple[Any, Any]) -> None:
    """The upsert key holds the workspace; the old workspace must not keep a copy of the chunk."""
    ministry = ministries[0]
    old, new = 7, next(w for w in range(8, 200) if _partition_of(w) != _partition_of(7))
    backend = PostgresBackend()
    with ministry_scope(ministry_id=ministry.pk):
        backend.index_chunks(ministry_id=ministry.pk, chunks=[_chunk(ministry.pk, 1, old)])
        backend.index_chunks(ministry_id=ministry.pk, chunks=[_chunk(ministry.pk, 1, new)])
        for workspace, expected in ((old, []), (new, [1])):
            hits = backend.search(
                ministry_id=ministry.pk, workspace_ids=[workspace], query="旅費", query_embedding=_vector(1)
            )
            assert [hit.chunk_id for hit in hits] == expected, workspace
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT workspace_id FROM {PARENT} WHERE chunk_id = 1")
            assert cursor.fetchall() == [(new,)]


def _security(cursor: Any, table: str) -> tuple[Any, ...]:
    cursor.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s", [table])
    flags = cursor.fetchone()
    cursor.execute(
        "SELECT count(*) FROM pg_policies WHERE tablename = %s AND policyname = %s", [table, POLICY_NAME]
    )
    return (*flags, cursor.fetchone()[0])


def _rows(cursor: Any) -> list[tuple[Any, ...]]:
    cursor.execute(
        f"SELECT id, ministry_id, chunk_id, workspace_id, text, embedding::text FROM {PARENT} ORDER BY id"
    )
    return list(cursor.fetchall())


def test_migration_moves_rows_ids_and_security_both_ways(ministries: tuple[Any, Any]) -> None:
    """search/0006 backwards and forwards with rows in the index (all inside the test's transaction)."""
    a, b = ministries
    executor = MigrationExecutor(connection)
    with owner_mode():
        executor.migrate([("search", "0005_vector_leg_covering_index")])
    with connection.cursor() as cursor:
        assert not is_partitioned(cursor)
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
            [PARENT, "%(ministry_id)"],
        )
        [ministry_index] = [name for (name,) in cursor.fetchall()]
    for ministry, workspaces in ((a, (7, 8, 9)), (b, (7, 50))):
        with ministry_scope(ministry_id=ministry.pk), connection.cursor() as cursor:
            for n, workspace in enumerate(workspaces, start=1):
                cursor.execute(
                    f"INSERT INTO {PARENT} (ministry_id, chunk_id, workspace_id, document_id, ordinal, "
                    "text, heading, page_start, page_end, char_start, char_end, tokens, tsv, embedding, "
                    "indexed_at) "
                    "VALUES (%s, %s, %s, %s, 0, %s, '', 1, 1, 0, 4, %s, to_tsvector('simple', %s), "
                    "%s::vector, now())",
                    [ministry.pk, n, workspace, n, f"旅費{n}", "旅費", "旅費", vector_literal(_vector(n))],
                )
    with owner_mode(), connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {PARENT} NO FORCE ROW LEVEL SECURITY")  # the owner reads every row
        before = _rows(cursor)
        cursor.execute(f"ALTER TABLE {PARENT} FORCE ROW LEVEL SECURITY")
    assert len(before) == 5

    executor = MigrationExecutor(connection)
    with owner_mode():
        executor.migrate([("search", "0006_partition_by_workspace")])
    with owner_mode(), connection.cursor() as cursor:
        assert is_partitioned(cursor)
        cursor.execute(f"ALTER TABLE {PARENT} NO FORCE ROW LEVEL SECURITY")
        assert _rows(cursor) == before
        cursor.execute(f"ALTER TABLE {PARENT} FORCE ROW LEVEL SECURITY")
        cursor.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree(%s::regclass) WHERE isleaf", [PARENT]
        )
        partitions = [name for (name,) in cursor.fetchall()]
        assert len(partitions) == PARTITIONS
        for table in [PARENT, *partitions]:
            assert _security(cursor, table) == (True, True, 1), table
        # Django's index of the ministry foreign key survives the rebuild, under its own name.
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
            [PARENT, "%(ministry_id)"],
        )
        assert [name for (name,) in cursor.fetchall()] == [ministry_index], "ministry_id index lost"
    # The application role sees its own ministry only, through the parent and through a partition
    # named directly; the sequence goes on after the copied ids; searches work on the new layout.
    with ministry_scope(ministry_id=b.pk), connection.cursor() as cursor:
        cursor.execute(f"SELECT ministry_id FROM {PARENT}")
        assert {row[0] for row in cursor.fetchall()} == {b.pk}
        cursor.execute(f"SELECT count(*) FROM {_partition_of(8)} WHERE ministry_id = %s", [a.pk])
        assert cursor.fetchone()[0] == 0
    backend = PostgresBackend()
    with ministry_scope(ministry_id=a.pk):
        backend.index_chunks(ministry_id=a.pk, chunks=[_chunk(a.pk, 99, 8)])
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {PARENT} WHERE chunk_id = 99")
            assert cursor.fetchone()[0] > max(row[0] for row in before)
        hits = backend.search(ministry_id=a.pk, workspace_ids=[8], query="旅費", query_embedding=_vector(2))
        assert {hit.chunk_id for hit in hits} == {2, 99}
