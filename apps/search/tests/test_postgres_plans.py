"""Plans of the PostgreSQL backend's search statement (docs/performance.md: retrieval).

Results alone cannot tell the two vector paths apart on a tiny table (exact and
HNSW agree), so this checks the plans: below the threshold the vector leg must
never walk the HNSW index (a 5 % filter would leave it short of neighbours),
above it the leg must use the index (an exact scan over a ministry's whole
table would not scale).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from apps.search.base import ChunkRecord
from apps.search.postgres import PostgresBackend
from apps.tenancy.scope import ministry_scope

pytestmark = pytest.mark.django_db


def _vector(n: int) -> tuple[float, ...]:
    return (1.0, float(n)) + (0.0,) * (settings.GENNAI_EMBEDDING_DIMENSIONS - 2)


def _plan_of_search(backend: PostgresBackend, ministry_id: int) -> str:
    """EXPLAIN of the statement ``search`` sends that ranks the legs (run as sent, same transaction)."""
    sent: list[tuple[str, Any]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append((sql, params))
        return execute(sql, params, many, context)

    with ministry_scope(ministry_id=ministry_id):
        with connection.execute_wrapper(record):
            hits = backend.search(
                ministry_id=ministry_id, workspace_ids=[7], query="旅費", query_embedding=_vector(0)
            )
        assert hits
        (sql, params) = next((s, p) for s, p in sent if "UNION ALL" in s)
        with connection.cursor() as cursor:
            # A tiny table must not hide the index choice: with scans and sorts priced out, the HNSW
            # index is taken wherever it can serve the ORDER BY, and only there.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_sort = off")
            # (search's own set_config of the HNSW settings is still in force: same transaction)
            cursor.execute("EXPLAIN " + sql, params)
            return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.parametrize(("threshold", "uses_hnsw"), [(20_000, False), (0, True)])
def test_vector_leg_uses_hnsw_only_above_the_threshold(
    ministries: tuple[Any, Any], threshold: int, uses_hnsw: bool
) -> None:
    ministry = ministries[0]
    backend = PostgresBackend()
    backend.exact_vector_threshold = threshold
    with ministry_scope(ministry_id=ministry.pk):
        backend.index_chunks(
            ministry_id=ministry.pk,
            chunks=[
                ChunkRecord(
                    chunk_id=n,
                    ministry_id=ministry.pk,
                    workspace_id=7,
                    document_id=1,
                    ordinal=n,
                    text=f"旅費の規程 第{n}条",
                    page_start=1,
                    page_end=1,
                    char_start=0,
                    char_end=8,
                    embedding=_vector(n),
                )
                for n in range(1, 4)
            ],
        )
    plan = _plan_of_search(backend, ministry.pk)
    assert ("search_chunk_embedding" in plan) is uses_hnsw, plan
