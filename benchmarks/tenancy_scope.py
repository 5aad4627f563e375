"""Per-request cost of the ministry scope, and of a scoped vs. a plain query.

Run (embedded PostgreSQL started and stopped for you)::

    .venv/bin/python -m gennai.devstack env -- .venv/bin/python benchmarks/tenancy_scope.py

or against any server whose login may ``SET ROLE`` to the owner and app roles
(``manage.py db_bootstrap`` done) with ``DATABASE_URL=... python benchmarks/tenancy_scope.py``.

It configures Django with ``gennai.settings.test``, creates and migrates a
scratch database (``bench_gennai_tenancy`` by default) in owner mode exactly as
the test suite does, fills it with a small table, and then measures as the
unprivileged app role, so row-level security is in force as in production. The
scratch database is dropped at the end, also on failure or Ctrl-C.

Cases (each iteration is one request's worth of work; all cases run
interleaved, round by round, so drift affects them equally):

``select1``         ``SELECT 1`` in autocommit: the round-trip floor
``atomic_select1``  ``transaction.atomic()`` + ``SELECT 1``: BEGIN/COMMIT floor
``scope_empty``     ``ministry_scope()`` with an empty body
``scope_select1``   ``ministry_scope()`` + ``SELECT 1``
``plain_sql``       ``atomic()`` + the ORM's latest-20 query on an identical table without RLS
``rls_sql``         ``ministry_scope()`` + the same query on the RLS table
``rls_only_sql``    ``ministry_scope()`` + that query without its ``WHERE ministry_id`` (RLS alone filters)
``scoped_orm``      ``ministry_scope()`` + ``list(Announcement.objects.all()[:20])`` (the app's path)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLAIN_TABLE = "bench_plain_announcement"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--iterations", type=int, default=2000, help="measured iterations per case")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured iterations per case")
    parser.add_argument("--ministries", type=int, default=10, help="ministries in the table")
    parser.add_argument("--rows", type=int, default=100, help="announcements per ministry")
    parser.add_argument("--limit", type=int, default=20, help="rows per query (the home page shows 20)")
    parser.add_argument("--database", default="bench_gennai_tenancy", help="scratch database (dropped)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    return parser.parse_args()


def setup_django(database: str) -> None:
    """Configure Django with the test settings; the scratch DB replaces the test DB name."""
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "gennai.settings.test"
    os.environ["GENNAI_TEST_DB_NAME"] = database  # read by settings at import
    import django

    django.setup()


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    index = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def fill(*, ministries: int, rows: int) -> list[int]:
    """Create the ministries, their announcements and the plain copy; return ministry ids."""
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from apps.console.models import Announcement
    from apps.tenancy.db import owner_mode
    from apps.tenancy.models import Ministry
    from apps.tenancy.scope import ministry_scope

    created = Ministry.objects.bulk_create(
        [
            Ministry(code=f"bench-{i:02d}", name_ja=f"ベンチ省{i}", name_en=f"Bench {i}")
            for i in range(ministries)
        ]
    )
    ids = [m.pk for m in created]
    table = connection.ops.quote_name(Announcement._meta.db_table)
    plain = connection.ops.quote_name(PLAIN_TABLE)
    with owner_mode(), connection.cursor() as cursor:
        # Same columns, defaults and indexes; no RLS. Created by the owner like every table.
        cursor.execute(f"CREATE TABLE {plain} (LIKE {table} INCLUDING ALL)")
        cursor.execute(
            f"GRANT SELECT, INSERT ON {plain} TO {connection.ops.quote_name(settings.GENNAI_DB_APP_ROLE)}"
        )
    start = timezone.now()
    for ministry_id in ids:
        with ministry_scope(ministry_id=ministry_id):
            Announcement.objects.bulk_create(
                [
                    Announcement(
                        ministry_id=ministry_id,
                        title=f"お知らせ {i}",
                        body="本文 " * 50,
                        created_at=start - timedelta(minutes=i),
                    )
                    for i in range(rows)
                ]
            )
            with connection.cursor() as cursor:
                # RLS returns this ministry's rows only, so each scope copies its own.
                cursor.execute(f"INSERT INTO {plain} SELECT * FROM {table}")
    with owner_mode(), connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
        cursor.execute(f"ANALYZE {plain}")
    return ids


def build_cases(ministry_id: int, limit: int) -> dict[str, Callable[[], object]]:
    """One callable per case, each doing one request's worth of database work."""
    from django.db import connection, transaction

    from apps.console.models import Announcement
    from apps.tenancy.scope import ministry_scope

    with ministry_scope(ministry_id=ministry_id):
        orm_sql, orm_params = Announcement.objects.all()[:limit].query.sql_with_params()
    table = connection.ops.quote_name(Announcement._meta.db_table)
    plain_sql = orm_sql.replace(table, connection.ops.quote_name(PLAIN_TABLE))
    where = f"WHERE {table}.{connection.ops.quote_name('ministry_id')} = %s "
    if where not in orm_sql:
        raise RuntimeError(f"unexpected ORM SQL, update the benchmark: {orm_sql}")
    rls_only_sql = orm_sql.replace(where, "")
    rls_only_params = orm_params[1:]

    def query(sql: str, params: Any) -> list[tuple[Any, ...]]:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def select1() -> object:
        return query("SELECT 1", None)

    def atomic_select1() -> object:
        with transaction.atomic():
            return query("SELECT 1", None)

    def scope_empty() -> object:
        with ministry_scope(ministry_id=ministry_id):
            return None

    def scope_select1() -> object:
        with ministry_scope(ministry_id=ministry_id):
            return query("SELECT 1", None)

    def plain() -> object:
        with transaction.atomic():
            return query(plain_sql, orm_params)

    def rls() -> object:
        with ministry_scope(ministry_id=ministry_id):
            return query(orm_sql, orm_params)

    def rls_only() -> object:
        with ministry_scope(ministry_id=ministry_id):
            return query(rls_only_sql, rls_only_params)

    def scoped_orm_rows() -> list[Announcement]:
        return list(Announcement.objects.all()[:limit])

    def scoped_orm() -> object:
        with ministry_scope(ministry_id=ministry_id):
            return scoped_orm_rows()

    # Sanity: every query path returns the same rows.
    with ministry_scope(ministry_id=ministry_id):
        rows = [query(orm_sql, orm_params), query(rls_only_sql, rls_only_params)]
        rows.append(
            [tuple(a.__dict__[f.attname] for f in a._meta.concrete_fields) for a in scoped_orm_rows()]
        )
    with transaction.atomic():
        rows.append(query(plain_sql, orm_params))
    if any(r != rows[0] for r in rows) or len(rows[0]) != limit:
        raise RuntimeError("the query cases disagree on the rows they return")
    plans = {}
    with ministry_scope(ministry_id=ministry_id):
        for name, sql, params in (
            ("rls_sql", orm_sql, orm_params),
            ("rls_only_sql", rls_only_sql, rls_only_params),
        ):
            plans[name] = [row[0] for row in query("EXPLAIN (COSTS OFF) " + sql, params)]
    with transaction.atomic():
        plans["plain_sql"] = [row[0] for row in query("EXPLAIN (COSTS OFF) " + plain_sql, orm_params)]
    for name, plan in plans.items():
        print(f"plan of {name}:\n  " + "\n  ".join(plan))
    return {
        "select1": select1,
        "atomic_select1": atomic_select1,
        "scope_empty": scope_empty,
        "scope_select1": scope_select1,
        "plain_sql": plain,
        "rls_sql": rls,
        "rls_only_sql": rls_only,
        "scoped_orm": scoped_orm,
    }


def measure(
    cases: dict[str, Callable[[], object]], *, iterations: int, warmup: int
) -> dict[str, list[float]]:
    """Interleaved rounds: each round runs every case once. Returns µs per call."""
    timings: dict[str, list[float]] = {name: [] for name in cases}
    clock = time.perf_counter_ns
    for round_no in range(warmup + iterations):
        for name, case in cases.items():
            started = clock()
            case()
            elapsed = clock() - started
            if round_no >= warmup:
                timings[name].append(elapsed / 1000)
    return timings


def summarise(timings: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for name, values in timings.items():
        ordered = sorted(values)
        summary[name] = {
            "median_us": statistics.median(ordered),
            "p95_us": percentile(ordered, 0.95),
            "mean_us": statistics.fmean(ordered),
            "min_us": ordered[0],
        }
    return summary


def environment() -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
        cursor.execute("SELECT current_user")
        user = cursor.fetchone()[0]
    return {
        "postgresql": server,
        "db_user": user,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def main() -> int:
    args = parse_args()
    setup_django(args.database)
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    from apps.tenancy.db import owner_mode

    with owner_mode():
        config = setup_databases(verbosity=0, interactive=False, keepdb=False)
    try:
        ids = fill(ministries=args.ministries, rows=args.rows)
        cases = build_cases(ids[len(ids) // 2], args.limit)
        env = environment()
        timings = measure(cases, iterations=args.iterations, warmup=args.warmup)
        summary = summarise(timings)
    finally:
        connection.close()
        with owner_mode():
            teardown_databases(config, verbosity=0)

    print(
        f"PostgreSQL {env['postgresql']} as {env['db_user']}, Python {env['python']}, {env['cpus']} CPUs; "
        f"{args.ministries}×{args.rows} rows, LIMIT {args.limit}, "
        f"{args.iterations} iterations (+{args.warmup} warm-up)\n"
    )
    print(f"{'case':<16} {'median µs':>10} {'p95 µs':>10} {'mean µs':>10} {'min µs':>10}")
    for name, row in summary.items():
        print(
            f"{name:<16} {row['median_us']:>10.1f} {row['p95_us']:>10.1f} "
            f"{row['mean_us']:>10.1f} {row['min_us']:>10.1f}"
        )
    med = {name: row["median_us"] for name, row in summary.items()}
    derived = {
        "scope_overhead_us": med["scope_select1"] - med["atomic_select1"],
        "rls_query_overhead_us": (med["rls_sql"] - med["plain_sql"])
        - (med["scope_select1"] - med["atomic_select1"]),
        "orm_overhead_us": med["scoped_orm"] - med["rls_sql"],
    }
    print(
        "\nderived (medians): scope entry/exit per request "
        f"{derived['scope_overhead_us']:.1f} µs; RLS predicate on the query "
        f"{derived['rls_query_overhead_us']:.1f} µs; "
        f"ORM on top of raw SQL {derived['orm_overhead_us']:.1f} µs"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"environment": env, "args": {k: str(v) for k, v in vars(args).items()}, "summary": summary}
                | {"derived": derived},
                indent=2,
                ensure_ascii=False,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
