"""Plans of the PostgreSQL backend's search statement (docs/performance.md: retrieval).

Results alone cannot tell the two vector paths apart on a tiny table (exact and
HNSW agree), so this checks the plans: below the threshold the vector leg must
never walk the HNSW index (a 5 % filter would leave it short of neighbours),
above it the leg must use the index (an exact scan over a ministry's whole
table would not scale).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from apps.search.base import ChunkRecord
from apps.search.postgres import PostgresBackend
from apps.tenancy.db import owner_mode
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
    assert ("search_chunk_embedding_half" in plan) is uses_hnsw, plan


def _chunk(ministry_id: int, chunk_id: int, text: str) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=chunk_id,
        ministry_id=ministry_id,
        workspace_id=7,
        document_id=1,
        ordinal=chunk_id,
        text=text,
        page_start=1,
        page_end=1,
        char_start=0,
        char_end=len(text),
        embedding=_vector(chunk_id),
    )


def _lexical_plan(
    backend: PostgresBackend, ministry_id: int, query: str, *, planner: Sequence[str] = ()
) -> tuple[list[int], str]:
    """Lexical-only search's hits and the EXPLAIN ANALYZE of its statement (same transaction)."""
    sent: list[tuple[str, Any]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append((sql, params))
        return execute(sql, params, many, context)

    with ministry_scope(ministry_id=ministry_id):
        with connection.execute_wrapper(record):
            hits = backend.search(ministry_id=ministry_id, workspace_ids=[7], query=query, limit=2)
        (sql, params) = next((s, p) for s, p in sent if "lex_0" in s)
        with connection.cursor() as cursor:
            for setting in planner:
                cursor.execute(f"SET LOCAL {setting} = off")
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql, params)
            return [hit.chunk_id for hit in hits], "\n".join(row[0] for row in cursor.fetchall())


def _tier_ran(plan: str, tier: int) -> bool:
    """Whether CTE ``lex_<tier>``'s table scan ran (a skipped tier's scan reads "never executed")."""
    lines = plan.splitlines()
    start = next(n for n, line in enumerate(lines) if line.strip() == f"CTE lex_{tier}")
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = []
    for line in lines[start + 1 :]:
        if len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    scans = [line for line in block if " on search_indexedchunk" in line]
    assert scans, "\n".join(block)
    return not all("never executed" in line for line in scans)


def test_lexical_leg_ranks_rows_covering_every_query_word_first(ministries: tuple[Any, Any]) -> None:
    """Rows with both query words beat rows that repeat one of them (score_fuse counts coverage)."""
    ministry = ministries[0]
    backend = PostgresBackend()
    with ministry_scope(ministry_id=ministry.pk):
        backend.index_chunks(
            ministry_id=ministry.pk,
            chunks=[_chunk(ministry.pk, n, "旅費、旅費、旅費の支給。旅費の精算。") for n in range(1, 46)]
            + [_chunk(ministry.pk, n, "旅費の規程。") for n in (100, 101)],
        )
    hits, plan = _lexical_plan(backend, ministry.pk, "旅費の規程")
    assert hits == [100, 101], plan
    # Fewer than 40 rows hold both words: the "at least one word" tier had to run.
    assert _tier_ran(plan, 1), plan


def test_lexical_leg_skips_the_any_word_tier_once_all_words_fill_it(ministries: tuple[Any, Any]) -> None:
    """With ≥ 40 rows holding every query word, the OR over the caller's rows is never scanned."""
    ministry = ministries[0]
    backend = PostgresBackend()
    with ministry_scope(ministry_id=ministry.pk):
        backend.index_chunks(
            ministry_id=ministry.pk,
            chunks=[_chunk(ministry.pk, n, "旅費の規程。") for n in range(1, 46)]
            + [_chunk(ministry.pk, n, "旅費の支給。") for n in (100, 101)],
        )
    hits, plan = _lexical_plan(backend, ministry.pk, "旅費の規程")
    assert set(hits) <= set(range(1, 46)), plan
    assert _tier_ran(plan, 0), plan
    assert not _tier_ran(plan, 1), plan


def test_lexical_tier_cap_bounds_the_rows_ranked(ministries: tuple[Any, Any]) -> None:
    """A tier stops after ``lexical_tier_rows`` rows and the workspace filter holds inside it."""
    ministry = ministries[0]
    backend = PostgresBackend()
    backend.lexical_tier_rows = 3
    other = dataclasses.replace(_chunk(ministry.pk, 200, "旅費の規程。"), workspace_id=8)  # not asked for
    with ministry_scope(ministry_id=ministry.pk):
        backend.index_chunks(
            ministry_id=ministry.pk,
            chunks=[_chunk(ministry.pk, n, "旅費の規程。") for n in range(1, 11)] + [other],
        )
    hits, plan = _lexical_plan(backend, ministry.pk, "旅費の規程")
    assert len(hits) == 2 and 200 not in hits, plan
    assert re.search(r"actual rows=3(\.00)? loops=1", plan.split("CTE lex_0", 1)[1].splitlines()[1]), plan


def test_lexical_tier_uses_the_gin_index_under_row_level_security(ministries: tuple[Any, Any]) -> None:
    """Selective words are looked up in the GIN index, also as the application role under RLS.

    Fails where ``ts_match_vq`` is not LEAKPROOF (search/0004): the planner then cannot use
    ``tsv @@ …`` as an index condition before the policy and scans every row of the workspaces.
    """
    ministry = ministries[0]
    backend = PostgresBackend()
    with ministry_scope(ministry_id=ministry.pk):
        backend.index_chunks(
            ministry_id=ministry.pk,
            chunks=[_chunk(ministry.pk, n, f"会議の議事録 第{n}回。") for n in range(1, 400)]
            + [_chunk(ministry.pk, n, "旅費の規程。") for n in (1000, 1001)],
        )
    with owner_mode(), connection.cursor() as cursor:
        # What autovacuum would have done: the GIN pending list merged, the word frequencies known.
        cursor.execute(
            "SELECT gin_clean_pending_list(relid) FROM pg_partition_tree('search_chunk_tsv'::regclass) "
            "WHERE isleaf"
        )
        cursor.execute("ANALYZE search_indexedchunk")
    # A tiny table hides index choices behind start-up costs: with plain index scans priced out, the
    # tier has two ways to its rows, the workspace index (read all 400 rows) or the GIN index.
    hits, plan = _lexical_plan(
        backend, ministry.pk, "旅費の規程", planner=["enable_indexscan", "enable_seqscan"]
    )
    assert hits == [1000, 1001], plan
    tier = plan.split("CTE lex_0", 1)[1].split("CTE lex_1", 1)[0]
    assert "search_chunk_tsv" in tier, plan
