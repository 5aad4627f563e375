"""Hybrid retrieval latency on the PostgreSQL backend at N synthetic chunks (not a test).

    .venv/bin/python -m gennai.devstack env -- .venv/bin/python benchmarks/retrieval.py --chunks 100000

Creates a scratch database (``bench_gennai_retrieval``), loads N chunks of ≈200
Japanese characters (random kanji-pair words, so the lexical leg's posting lists
are long: a pessimistic case) with random unit 384-d vectors through
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
KANJI = (
    "国民行政制度規則予算職員申請審査契約調達情報管理安全保障災害対策地方自治財政税務統計医療介護年金"
    "教育文化科学技術環境資源農林水産経済産業交通観光労働雇用福祉子育支援通信放送防衛外交警察消防司法"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--database", default="bench_gennai_retrieval")
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def setup_django(database: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "gennai.settings.test"
    os.environ["GENNAI_TEST_DB_NAME"] = database
    import django

    django.setup()


def text(rng: random.Random) -> str:
    words = ["".join(rng.choices(KANJI, k=2)) for _ in range(60)]
    return "".join(w + rng.choice("のをはにがと、") for w in words)[:200] + "。"


def unit(rng: random.Random, dims: int) -> tuple[float, ...]:
    v = [rng.gauss(0, 1) for _ in range(dims)]
    norm = sum(x * x for x in v) ** 0.5
    return tuple(x / norm for x in v)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


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
        samples: list[tuple[str, tuple[float, ...]]] = []
        for start in range(0, args.chunks, args.batch):
            ministry = b if (start // args.batch) % 100 == 99 else a
            chunks = []
            for i in range(start, min(start + args.batch, args.chunks)):
                body, vector = text(rng), unit(rng, dims)
                if len(samples) < args.queries and rng.random() < 0.01:
                    samples.append((body, vector))
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
            cursor.execute(f"ANALYZE {TABLE}")
        connection.close()
        workspaces = list(range(1, 101))
        for mode in ("hybrid", "lexical", "vector"):
            timings = []
            for n, (body, vector) in enumerate(samples):
                # A query: three words of a chunk, and a vector near that chunk's.
                words = [body[k : k + 2] for k in (0, 9, 18)]
                query = " ".join(words) if mode != "vector" else ""
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
            timings = timings[5:]  # warm-up
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
