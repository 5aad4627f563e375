"""Hybrid retrieval latency on the PostgreSQL backend at N synthetic chunks (not a test).

    .venv/bin/python -m gennai.devstack env -- .venv/bin/python benchmarks/retrieval.py --chunks 100000

Creates a scratch database (``bench_gennai_retrieval``), loads N chunks of ≈200
Japanese characters (made-up katakana words drawn from a Zipf distribution, joined
by particles) with random unit 384-d vectors through
``PostgresBackend.index_chunks`` (Sudachi tokenising included), spread over 100
workspaces of one ministry plus 1 % for a second ministry; builds the GIN and
HNSW indexes after the load (as one would for a bulk import) and then times
``search`` for queries that filter on 5 of the 100 workspaces: hybrid, lexical
only, vector only. Results go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KATAKANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン"
# A Zipf-distributed vocabulary of made-up katakana words (Sudachi keeps each as one token): term
# frequencies like real text, so the lexical leg's posting lists range from huge to tiny.
VOCABULARY = ["".join(random.Random(i).choices(KATAKANA, k=3 + i % 3)) for i in range(20_000)]  # noqa: S311
WEIGHTS = [1 / (rank + 1) for rank in range(len(VOCABULARY))]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--database", default="bench_gennai_retrieval")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each leg once")
    return parser.parse_args()


def setup_django(database: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "gennai.settings.test"
    os.environ["GENNAI_TEST_DB_NAME"] = database
    import django

    django.setup()


def text(rng: random.Random) -> tuple[str, list[str]]:
    words = rng.choices(VOCABULARY, weights=WEIGHTS, k=40)
    return "".join(w + rng.choice("のをはにがと、") for w in words)[:200] + "。", words


def unit(rng: random.Random, dims: int) -> tuple[float, ...]:
    v = [rng.gauss(0, 1) for _ in range(dims)]
    norm = sum(x * x for x in v) ** 0.5
    return tuple(x / norm for x in v)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def explain(ministry_id: int, sample: tuple[list[str], tuple[float, ...]], dims: int) -> None:
    from django.db import connection, transaction

    from apps.search.postgres import TABLE, tsquery_text, vector_literal
    from apps.tenancy.scope import ministry_scope

    words, vector = sample
    query = tsquery_text(" ".join(words[k] for k in (0, 9, 18)))
    where = "ministry_id = %s AND workspace_id = ANY(%s)"
    params = [ministry_id, [1, 8, 15, 22, 50]]
    with ministry_scope(ministry_id=ministry_id), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute("SET LOCAL hnsw.ef_search = 40")
        for label, sql, extra in (
            (
                "lexical",
                f"SELECT id FROM {TABLE}, to_tsquery('simple', %s) q WHERE {where} AND tsv @@ q "
                "ORDER BY ts_rank_cd(tsv, q) DESC, id LIMIT 40",
                [query, *params],
            ),
            (
                "vector",
                f"SELECT id FROM {TABLE} WHERE {where} AND embedding IS NOT NULL "
                "ORDER BY embedding <=> %s::vector LIMIT 40",
                [*params, vector_literal(vector)],
            ),
        ):
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, extra)
            plan = [row[0] for row in cursor.fetchall() if "::vector" not in row[0]]
            print(f"--- {label} ({query})", *plan, sep="\n")


def main() -> int:
    args = parse_args()
    setup_django(args.database)
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    from apps.search.base import ChunkRecord
    from apps.search.postgres import TABLE, PostgresBackend
    from apps.tenancy.db import owner_mode
    from apps.tenancy.models import Ministry
    from apps.tenancy.scope import ministry_scope

    with owner_mode():
        config = setup_databases(verbosity=0, interactive=False, keepdb=False)
    results: dict[str, object] = {"chunks": args.chunks}
    try:
        a = Ministry.objects.create(code="bench-a", name_ja="A", name_en="A")
        b = Ministry.objects.create(code="bench-b", name_ja="B", name_en="B")
        dims = int(settings.GENNAI_EMBEDDING_DIMENSIONS)
        with owner_mode(), connection.cursor() as cursor:
            cursor.execute("DROP INDEX IF EXISTS search_chunk_tsv")
            cursor.execute("DROP INDEX IF EXISTS search_chunk_embedding")
        connection.close()
        backend = PostgresBackend()
        rng = random.Random(7)  # noqa: S311 - synthetic data
        started = time.perf_counter()
        samples: list[tuple[list[str], tuple[float, ...]]] = []
        for start in range(0, args.chunks, args.batch):
            ministry = b if (start // args.batch) % 100 == 99 else a
            chunks = []
            for i in range(start, min(start + args.batch, args.chunks)):
                (body, words), vector = text(rng), unit(rng, dims)
                if len(samples) < args.queries and rng.random() < 0.01:
                    samples.append((words, vector))
                chunks.append(
                    ChunkRecord(
                        chunk_id=i + 1,
                        ministry_id=ministry.pk,
                        workspace_id=1 + i % 100,
                        document_id=1 + i // 20,
                        ordinal=i % 20,
                        text=body,
                        page_start=1,
                        page_end=1,
                        char_start=0,
                        char_end=len(body),
                        embedding=vector,
                    )
                )
            with ministry_scope(ministry_id=ministry.pk):
                backend.index_chunks(ministry_id=ministry.pk, chunks=chunks)
        results["load_s"] = round(time.perf_counter() - started, 1)
        with owner_mode(), connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '512MB'")
            t = time.perf_counter()
            cursor.execute(f"CREATE INDEX search_chunk_tsv ON {TABLE} USING gin (tsv)")
            results["gin_build_s"] = round(time.perf_counter() - t, 1)
            t = time.perf_counter()
            cursor.execute(
                f"CREATE INDEX search_chunk_embedding ON {TABLE} USING hnsw (embedding vector_cosine_ops)"
            )
            results["hnsw_build_s"] = round(time.perf_counter() - t, 1)
        connection.close()
        with owner_mode(), connection.cursor() as cursor:
            # Hint bits and the visibility map after a bulk load, as autovacuum would set them.
            t = time.perf_counter()
            cursor.execute(f"VACUUM (ANALYZE) {TABLE}")
            results["vacuum_s"] = round(time.perf_counter() - t, 1)
        connection.close()
        workspaces = list(range(1, 101))
        if args.explain:
            explain(a.pk, samples[0], dims)
        # Two rounds over the same queries; the first warms the caches and is not reported.
        for mode in ("hybrid", "lexical", "vector", "hybrid", "lexical", "vector"):
            timings = []
            for n, (words, vector) in enumerate(samples):
                # A query: three words of a chunk, and a vector near that chunk's.
                query = " ".join(words[k] for k in (0, 9, 18)) if mode != "vector" else ""
                qrng = random.Random(n)  # noqa: S311 - synthetic data
                noisy = tuple(x + qrng.gauss(0, 0.01) for x in vector)
                chosen = [1 + (n * 7 + k) % 100 for k in range(4)] + qrng.sample(workspaces, 1)
                t = time.perf_counter()
                with ministry_scope(ministry_id=a.pk):
                    backend.search(
                        ministry_id=a.pk,
                        workspace_ids=chosen,
                        query=query,
                        query_embedding=noisy if mode != "lexical" else None,
                        limit=10,
                    )
                timings.append((time.perf_counter() - t) * 1000)
            results[mode] = {
                "p50_ms": round(statistics.median(timings), 1),
                "p95_ms": round(pct(timings, 95), 1),
                "queries": len(timings),
            }
            print(mode, results[mode], flush=True)
    finally:
        connection.close()
        with owner_mode():
            teardown_databases(config, verbosity=0)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
