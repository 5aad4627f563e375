"""PostgreSQL search backend: pgvector HNSW (cosine) + Sudachi full text, fused by score (see score_fuse).

Security (DESIGN.md invariants 4 and 12): every statement names
``ministry_id = %s`` and, for searches, ``workspace_id = ANY(%s)`` in its
WHERE clause; RLS (the ``ministry_isolation`` policy on the table) hides other
ministries' rows on top. Each call MUST run inside the ministry's own scope
(:func:`apps.tenancy.scope.ministry_scope`): a call for another ministry than
the active scope raises instead of silently finding nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from apps.tenancy.scope import ScopeError, current_ministry_id

from .base import ChunkRecord, SearchHealth, SearchHit, bounded_query, rrf_fuse
from .fusion import score_fuse
from .models import IndexedChunk
from .tokenize import index_terms, query_word_groups

TABLE = IndexedChunk._meta.db_table
_COLUMNS = (
    "chunk_id, document_id, workspace_id, ordinal, text, page_start, page_end, char_start, char_end, heading"
)


def _require_scope(ministry_id: int) -> None:
    """Security: the backend acts only for the ministry of the active scope."""
    if current_ministry_id() != ministry_id:
        raise ScopeError(f"search for ministry {ministry_id} outside its scope")


def vector_literal(values: Sequence[float]) -> str:
    """pgvector's text form ``[x,y,…]`` (no client library needed)."""
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def tsquery_text(query: str) -> str:
    """An OR of the query's Sudachi forms and synonym groups, each a quoted tsquery lexeme ('' when none)."""
    seen: dict[str, None] = {}
    for token in index_terms(query):
        seen.setdefault(token, None)
    return " | ".join("'" + t.replace("\\", "\\\\").replace("'", "''") + "'" for t in seen)


def _lexeme(term: str) -> str:
    """One quoted tsquery lexeme."""
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


def word_tsqueries(query: str) -> list[str]:
    """One tsquery per distinct query word: the OR of its form and synonym terms (see score_fuse)."""
    return ["(" + " | ".join(_lexeme(t) for t in sorted(group)) + ")" for group in query_word_groups(query)]


# A tier "at least k of the n query words" is an OR of C(n, k) conjunctions; tiers whose tsquery
# would hold more than this many are skipped (all n and at least 1 are always tried).
MAX_TIER_CONJUNCTIONS = 20


def coverage_tiers(words: Sequence[str]) -> list[tuple[int, str]]:
    """``(k, tsquery)`` for "at least k of the words", k from all of them down to 1."""
    n = len(words)
    tiers: list[tuple[int, str]] = []
    for k in range(n, 0, -1):
        if k not in (1, n) and math.comb(n, k) > MAX_TIER_CONJUNCTIONS:
            continue
        terms = [" & ".join(combo) for combo in itertools.combinations(words, k)]
        tiers.append((k, " | ".join(f"({t})" for t in terms)))
    return tiers


def _hit(row: Sequence[Any], score: float, similarity: float | None = None) -> SearchHit:
    (
        chunk_id,
        document_id,
        workspace_id,
        ordinal,
        text,
        page_start,
        page_end,
        char_start,
        char_end,
        heading,
    ) = row
    return SearchHit(
        chunk_id=chunk_id,
        document_id=document_id,
        workspace_id=workspace_id,
        ordinal=ordinal,
        score=score,
        text=text,
        page_start=page_start,
        page_end=page_end,
        char_start=char_start,
        char_end=char_end,
        heading=heading,
        similarity=similarity,
    )


class PostgresBackend:
    """The default backend (embedded PostgreSQL 18 ships pgvector)."""

    name = "postgres"
    candidates_factor = 4  # each leg ranks limit × 4 (at least 40) before fusion
    # Below this many visible rows the vector leg computes exact distances instead of
    # using HNSW (docs/performance.md: retrieval). Partitioned by workspace, a filtered HNSW
    # walk covers only the partitions of the caller's workspaces, so it is as fast as the exact
    # path from ≈10,000 rows on (sweep at 1M chunks); below 5,000 the exact path is certain to
    # find every neighbour and cheap, and counting up to 5,000 rows costs ≈2 ms (20,000: ≈9 ms).
    exact_vector_threshold = 5_000
    # Rows one coverage tier of the lexical leg looks at, at most (see _lexical_leg).
    lexical_tier_rows = 2_000
    # Weight of word coverage against cosine similarity in score_fuse: 0.06 suits
    # multilingual-e5-small, whose similarities for Japanese passages span about
    # 0.75–0.93 (0.02–0.10 all scored within one question of the best on the quality corpus).
    lexical_weight = float(getattr(settings, "GENNAI_SEARCH_LEXICAL_WEIGHT", 0.06))

    def index_chunks(self, *, ministry_id: int, chunks: Sequence[ChunkRecord]) -> None:
        _require_scope(ministry_id)
        dimensions = settings.GENNAI_EMBEDDING_DIMENSIONS
        rows: list[list[Any]] = []
        for chunk in chunks:
            if chunk.ministry_id != ministry_id:
                raise ScopeError(f"chunk {chunk.chunk_id} belongs to ministry {chunk.ministry_id}")
            if chunk.embedding is not None and len(chunk.embedding) != dimensions:
                raise ValueError(
                    f"chunk {chunk.chunk_id}: {len(chunk.embedding)}-d vector, index is {dimensions}-d"
                )
            rows.append(
                [
                    ministry_id,
                    chunk.chunk_id,
                    chunk.workspace_id,
                    chunk.document_id,
                    chunk.ordinal,
                    chunk.text,
                    chunk.heading,
                    chunk.page_start,
                    chunk.page_end,
                    chunk.char_start,
                    chunk.char_end,
                    " ".join(index_terms(f"{chunk.heading}\n{chunk.text}")),
                    None if chunk.embedding is None else vector_literal(chunk.embedding),
                ]
            )
        if not rows:
            return
        # The upsert key holds the workspace (the partition key, apps/search/partitions.py).
        sql = f"""
            INSERT INTO {TABLE} (ministry_id, chunk_id, workspace_id, document_id, ordinal, text, heading,
                page_start, page_end, char_start, char_end, tokens, tsv, embedding, indexed_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, %s::vector, now())
            ON CONFLICT (ministry_id, workspace_id, chunk_id) DO UPDATE SET
                document_id = EXCLUDED.document_id,
                ordinal = EXCLUDED.ordinal, text = EXCLUDED.text, heading = EXCLUDED.heading,
                page_start = EXCLUDED.page_start, page_end = EXCLUDED.page_end,
                char_start = EXCLUDED.char_start, char_end = EXCLUDED.char_end,
                tokens = EXCLUDED.tokens, embedding = EXCLUDED.embedding, indexed_at = now()
        """
        chunk_ids = [r[1] for r in rows]
        workspaces = sorted({r[2] for r in rows})
        with transaction.atomic(), connection.cursor() as cursor:
            # Security: a chunk is indexed under one workspace only. A chunk's workspace is its
            # document's and does not change, but should it ever, the upsert (keyed by workspace)
            # would leave the old row findable through the old workspace: remove such rows first.
            cursor.execute(
                f"DELETE FROM {TABLE} t "
                "USING unnest(%s::bigint[], %s::bigint[]) AS n(chunk_id, workspace_id) "
                "WHERE t.ministry_id = %s AND t.document_id = ANY(%s::bigint[]) "
                "AND t.chunk_id = n.chunk_id AND t.workspace_id <> n.workspace_id",
                [chunk_ids, [r[2] for r in rows], ministry_id, sorted({r[3] for r in rows})],
            )
            cursor.executemany(sql, rows)
            # tsv from tokens in one statement (to_tsvector per row in executemany would parse twice).
            cursor.execute(
                f"UPDATE {TABLE} SET tsv = to_tsvector('simple', tokens) "
                "WHERE ministry_id = %s AND workspace_id = ANY(%s::bigint[]) "
                "AND chunk_id = ANY(%s::bigint[])",
                [ministry_id, workspaces, chunk_ids],
            )

    def delete_document(self, *, ministry_id: int, document_id: int) -> int:
        _require_scope(ministry_id)
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {TABLE} WHERE ministry_id = %s AND document_id = %s", [ministry_id, document_id]
            )
            return int(cursor.rowcount)

    def delete_workspace(self, *, ministry_id: int, workspace_id: int) -> int:
        _require_scope(ministry_id)
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {TABLE} WHERE ministry_id = %s AND workspace_id = %s",
                [ministry_id, workspace_id],
            )
            return int(cursor.rowcount)

    def search(
        self,
        *,
        ministry_id: int,
        workspace_ids: Sequence[int],
        query: str,
        query_embedding: Sequence[float] | None = None,
        limit: int = 10,
        document_ids: Sequence[int] | None = None,
    ) -> list[SearchHit]:
        _require_scope(ministry_id)
        workspaces = sorted({int(w) for w in workspace_ids})
        if not workspaces or limit <= 0:
            return []  # nothing is public by default
        query = bounded_query(query)  # one tsquery term per word: bounded
        # Security: the access rule is in the SQL of every leg and of the final fetch.
        # The planner reads only the partitions of these workspaces (apps/search/partitions.py).
        # bigint[]: the column's own type; psycopg sends small ids as smallint[] (pruning and the
        # btree indexes work with either; the cast keeps one plan shape whatever the ids' size).
        where = "ministry_id = %s AND workspace_id = ANY(%s::bigint[])"
        # The same, on the final join's alias.
        where_t = "t.ministry_id = %s AND t.workspace_id = ANY(%s::bigint[])"
        params: list[Any] = [ministry_id, workspaces]
        if document_ids is not None:
            where += " AND document_id = ANY(%s::bigint[])"
            where_t += " AND t.document_id = ANY(%s::bigint[])"
            params.append(sorted({int(d) for d in document_ids}))
        depth = max(limit * self.candidates_factor, 40)
        lexeme_query = tsquery_text(query)
        # One statement ranks both legs and returns every candidate's row (id, leg, rank, distance,
        # stored tokens, columns): one round trip instead of one per leg plus two fetches
        # (docs/performance.md: retrieval). savepoint=False: the caller's scope is already a
        # transaction, and a savepoint would cost two more round trips for nothing to roll back.
        legs: list[str] = []
        leg_params: list[Any] = []
        ctes: list[str] = []
        cte_params: list[Any] = []
        with transaction.atomic(savepoint=False), connection.cursor() as cursor:
            if lexeme_query:
                self._lexical_leg(
                    words=word_tsqueries(query),
                    any_word=lexeme_query,
                    where=where,
                    params=params,
                    depth=depth,
                    ctes=ctes,
                    cte_params=cte_params,
                    legs=legs,
                    leg_params=leg_params,
                )
            if query_embedding is not None:
                vector = vector_literal(query_embedding)
                if self._few_rows(cursor, where=where, params=params):
                    # Few rows: exact distances over just those rows beat walking the whole
                    # ministry's HNSW graph for the few neighbours that pass the filter. "+ 0"
                    # keeps the planner off the HNSW index (an ORDER BY it cannot serve) without
                    # materialising 1.5 KB vectors in a CTE, which spilled to disk.
                    nearest = (
                        f"SELECT id, distance FROM (SELECT id, embedding <=> %s::vector AS distance "
                        f"FROM {TABLE} WHERE {where} AND embedding IS NOT NULL) scored "
                        "ORDER BY distance + 0 LIMIT %s"
                    )
                    leg_params += [vector, *params, depth]
                else:
                    # Filtered HNSW over the half-precision index (search/0003: half the pages to
                    # walk and cache): keep scanning until enough rows pass the filters (pgvector
                    # ≥ 0.8). The distance handed to the fusion is the full-precision one.
                    cursor.execute(
                        "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                        "set_config('hnsw.ef_search', %s, true)",
                        [str(depth)],
                    )
                    half = f"halfvec({int(settings.GENNAI_EMBEDDING_DIMENSIONS)})"
                    nearest = (
                        "SELECT id, embedding <=> %s::vector AS distance FROM "
                        f"(SELECT id, embedding FROM {TABLE} WHERE {where} AND embedding IS NOT NULL "
                        f"ORDER BY embedding::{half} <=> %s::{half} LIMIT %s) nearest_half"
                    )
                    leg_params += [vector, *params, vector, depth]
                legs.append(
                    "SELECT id, 'v' AS leg, row_number() OVER (ORDER BY distance, id) AS rank_no, distance "
                    f"FROM ({nearest}) nearest"
                )
            if not legs:
                return []
            union = " UNION ALL ".join(f"({leg})" for leg in legs)
            with_clause = ("WITH " + ", ".join(ctes) + " ") if ctes else ""
            # Security: the final join repeats the access rule on the rows it returns.
            cursor.execute(
                with_clause
                + "SELECT c.id, c.leg, c.rank_no, c.distance, t.tokens, "
                + ", ".join(f"t.{column.strip()}" for column in _COLUMNS.split(","))
                + f" FROM ({union}) c JOIN {TABLE} t ON t.id = c.id "
                f"WHERE {where_t}",
                [*cte_params, *leg_params, *params],
            )
            fetched = cursor.fetchall()
        rankings: dict[str, list[tuple[int, int]]] = {"l": [], "v": []}
        similarity: dict[int, float] = {}  # cosine similarity of the vector leg's rows
        stored_tokens: dict[int, str] = {}
        columns: dict[int, Sequence[Any]] = {}
        for key, leg, rank_no, distance, tokens, *row in fetched:
            rankings[leg].append((rank_no, key))
            if distance is not None:
                similarity[key] = 1.0 - float(distance)
            stored_tokens[key] = tokens
            columns[key] = row
        if similarity:
            # Both legs' candidates, scored together (see score_fuse); the tokens were
            # stored at index time, so the query is not re-tokenised per candidate.
            fused = score_fuse(
                query_words=query_word_groups(query),
                similarity=similarity,
                stored_tokens=stored_tokens,
                lexical_weight=self.lexical_weight,
            )
        else:
            fused = rrf_fuse(
                [[key for _rank, key in sorted(ranking)] for ranking in rankings.values() if ranking]
            )
        best = sorted(fused, key=lambda key: (-fused[key], key))[:limit]
        return [_hit(columns[key], fused[key], similarity.get(key)) for key in best]

    def _lexical_leg(
        self,
        *,
        words: Sequence[str],
        any_word: str,
        where: str,
        params: list[Any],
        depth: int,
        ctes: list[str],
        cte_params: list[Any],
        legs: list[str],
        leg_params: list[Any],
    ) -> None:
        """The lexical leg: the ``depth`` matching rows that cover the most query words (ts_rank, id).

        score_fuse scores a candidate by its word coverage, so those are the rows the fusion would
        pick from every match. Ranking every row that matches any query word cost time linear in
        the caller's rows (one common word matches most of them: docs/performance.md), so the
        rows are looked for tier by tier, "all words" first (a GIN AND, selective), then "at least
        k" for smaller k, each tier stopping after ``lexical_tier_rows`` rows and later tiers
        skipped as soon as one found ``depth``. A tier with fewer rows than its cap is complete, so
        the result is exact unless a tier held more than ``lexical_tier_rows`` rows; then its
        rows are the first ones found, ranked within it by coverage and ts_rank.

        Security: every tier's statement carries the caller's ``where`` (ministry, workspaces,
        documents); the final join repeats it.
        """
        coverage = " + ".join("(tsv @@ to_tsquery('simple', %s))::int" for _ in words) or "0"
        for number, (_k, tier_query) in enumerate(coverage_tiers(words)):
            # Later tiers run only while every earlier one found fewer than depth rows (a one-time
            # filter: the scan does not start otherwise).
            gate = "".join(f" AND (SELECT count(*) FROM lex_{j}) < %s" for j in range(number))
            ctes.append(
                f"lex_{number} AS MATERIALIZED (SELECT id, {coverage} AS cov, "
                f"ts_rank(tsv, to_tsquery('simple', %s)) AS rank FROM {TABLE} "
                f"WHERE {where} AND tsv @@ to_tsquery('simple', %s){gate} LIMIT %s)"
            )
            cte_params += [*words, any_word, *params, tier_query, *([depth] * number), self.lexical_tier_rows]
        tiers = " UNION ".join(f"SELECT id, cov, rank FROM lex_{j}" for j in range(len(ctes)))
        legs.append(
            "SELECT id, 'l' AS leg, row_number() OVER (ORDER BY cov DESC, rank DESC, id) AS rank_no, "
            f"NULL::float8 AS distance FROM ({tiers}) matched ORDER BY cov DESC, rank DESC, id LIMIT %s"
        )
        leg_params.append(depth)

    def _few_rows(self, cursor: Any, *, where: str, params: list[Any]) -> bool:
        """Whether the caller sees fewer than ``exact_vector_threshold`` rows (index-only count, capped)."""
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} WHERE {where} LIMIT %s) scoped",
            [*params, self.exact_vector_threshold],
        )
        return bool(cursor.fetchone()[0] < self.exact_vector_threshold)

    def health(self) -> SearchHealth:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                row = cursor.fetchone()
                if row is None:
                    return SearchHealth(ok=False, detail="pgvector extension missing")
                cursor.execute(f"SELECT 1 FROM {TABLE} LIMIT 0")
        except DatabaseError as exc:
            return SearchHealth(ok=False, detail=f"postgres: {type(exc).__name__}")
        return SearchHealth(ok=True, detail=f"postgres (pgvector {row[0]})")
