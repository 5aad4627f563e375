"""Usage dashboards at N usage records: raw aggregation vs. daily rollups (not a test).

    .venv/bin/python -m gennai.devstack env -- .venv/bin/python benchmarks/usage_ledger.py --records 1000000

Creates and migrates a scratch database (``bench_gennai_usage``, dropped at the
end), loads N ``UsageRecord`` rows spread over the last 30 days (90 % ministry A,
10 % ministry B; 500 users each in one of 20 teams and with 3 habitual
alias/model/feature combinations out of 15) with one
``INSERT … SELECT generate_series`` per ministry inside its scope (RLS applies),
then times:

* ``raw``: the month's "usage by day and model" of ministry A aggregated straight
  from ``UsageRecord`` (what a dashboard would cost without rollups);
* ``rollup_month``: ``usage_rollup_range`` over the 31 days, every ministry (the backfill);
* ``rollup_recent``: ``usage_rollup_recent`` (yesterday + today: the beat task);
* ``usage_by_day`` / ``usage_totals``: the dashboard selectors over 30 days (finished days
  from ``UsageDaily``, today from the raw records), grouped by model and by user; and
  the two parts alone (today only; the 29 finished days only).

Results go to docs/performance.md ("Usage ledger").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_LOAD = """
INSERT INTO quotas_usagerecord (
    ministry_id, alias_name, endpoint, feature, model_name, level, prompt_tokens,
    prompt_tokens_estimated, completion_tokens, ttft_ms, latency_ms, status, cost_yen, detail,
    created_at, user_id, team_id)
SELECT %(ministry_id)s,
    (ARRAY['standard-chat', 'fast-chat', 'standard-embedding'])[1 + k %% 3],
    'chat',
    (ARRAY['chat', 'rag', 'api', 'ingest', 'search'])[1 + k %% 5],
    (ARRAY['llm-jp-4-8b', 'swallow-70b', 'multilingual-e5'])[1 + k %% 3],
    1,
    (g * 7919) %% 4000,
    false,
    (g * 104729) %% 1500,
    100 + g %% 800,
    1000 + g %% 9000,
    CASE WHEN g %% 50 = 0 THEN 'error' ELSE 'ok' END,
    ((g %% 1000) / 100.0)::numeric(14, 4),
    '',
    now() - ((g * 2654435761) %% (30 * 86400)) * interval '1 second',
    (%(users)s::bigint[])[1 + u],
    (%(teams)s::bigint[])[1 + u %% %(n_teams)s]
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g,
    -- each request: a user (always in the same team) and one of that user's 3 habits
    LATERAL (SELECT (g / 11) %% %(n_users)s AS u) AS who,
    LATERAL (SELECT (who.u + g %% 3) %% 15 AS k) AS habit
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", default="bench_gennai_usage")
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def setup_django(database: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "gennai.settings.test"
    os.environ["GENNAI_TEST_DB_NAME"] = database
    import django

    django.setup()


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(samples), 1), "max_ms": round(max(samples), 1)}


def main() -> int:
    args = parse_args()
    setup_django(args.database)
    from django.db import connection
    from django.db.models import Count, Sum
    from django.db.models.functions import TruncDate
    from django.test.utils import setup_databases, teardown_databases

    from apps.accounts.models import User
    from apps.quotas.models import UsageDaily, UsageRecord
    from apps.quotas.rollups import local_today, local_zone, usage_rollup_range, usage_rollup_recent
    from apps.quotas.selectors import usage_by_day, usage_totals
    from apps.tenancy.db import owner_mode
    from apps.tenancy.models import Membership, Ministry, Team
    from apps.tenancy.scope import ministry_scope

    with owner_mode():
        config = setup_databases(verbosity=0, interactive=False, keepdb=False)
    results: dict[str, Any] = {"records": args.records}
    try:
        a = Ministry.objects.create(code="bench-a", name_ja="A", name_en="A")
        b = Ministry.objects.create(code="bench-b", name_ja="B", name_en="B")
        users = User.objects.bulk_create([User(username=f"u{i}", subject=f"s{i}") for i in range(500)])
        admin = User.objects.create(username="admin", subject="admin")
        actor = Membership.objects.create(user=admin, ministry=a, roles=["ministry_admin"])
        shares = {a: int(args.records * 0.9), b: args.records - int(args.records * 0.9)}
        started = time.perf_counter()
        for ministry, count in shares.items():
            with ministry_scope(ministry_id=ministry.pk):
                teams = Team.objects.bulk_create(
                    [Team(ministry=ministry, code=f"t{i}", name=f"課{i}") for i in range(20)]
                )
                team_ids = [t.pk for t in teams]
                user_ids = [u.pk for u in users]
                step = 200_000
                with connection.cursor() as cursor:
                    for first in range(0, count, step):
                        cursor.execute(
                            _LOAD,
                            {
                                "ministry_id": ministry.pk,
                                "users": user_ids,
                                "n_users": len(user_ids),
                                "teams": team_ids,
                                "n_teams": len(team_ids),
                                "first": first,
                                "last": min(first + step, count) - 1,
                            },
                        )
        with owner_mode(), connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE) quotas_usagerecord")
        results["load_s"] = round(time.perf_counter() - started, 1)
        print("load_s", results["load_s"], flush=True)

        today = local_today()
        start = today - timedelta(days=29)

        def raw_month() -> None:
            lower = start
            with ministry_scope(ministry_id=a.pk):
                list(
                    UsageRecord.objects.filter(created_at__date__gte=lower)
                    .annotate(day=TruncDate("created_at", tzinfo=local_zone()))
                    .values("day", "model_name")
                    .annotate(
                        n=Count("id"), p=Sum("prompt_tokens"), c=Sum("completion_tokens"), y=Sum("cost_yen")
                    )
                    .order_by()
                )

        results["raw"] = timed(raw_month, args.repeat)
        print("raw", results["raw"], flush=True)

        t = time.perf_counter()
        usage_rollup_range(first=today - timedelta(days=30), last=today)
        results["rollup_month_s"] = round(time.perf_counter() - t, 1)
        print("rollup_month_s", results["rollup_month_s"], flush=True)
        results["rollup_recent"] = timed(usage_rollup_recent, max(1, args.repeat // 2))
        print("rollup_recent", results["rollup_recent"], flush=True)
        with ministry_scope(ministry_id=a.pk):
            results["usage_daily_rows_a"] = UsageDaily.objects.count()

        results["usage_by_day_model"] = timed(
            lambda: usage_by_day(actor=actor, start=start, end=today, group_by="model"), args.repeat
        )
        results["usage_totals_user"] = timed(
            lambda: usage_totals(actor=actor, start=start, end=today, group_by="user"), args.repeat
        )
        results["usage_totals"] = timed(
            lambda: usage_totals(actor=actor, start=start, end=today), args.repeat
        )
        # The part read from raw records (today only), and the rolled-up days alone.
        results["today_only_by_model"] = timed(
            lambda: usage_by_day(actor=actor, start=today, end=today, group_by="model"), args.repeat
        )
        results["rolled_days_only_by_model"] = timed(
            lambda: usage_by_day(actor=actor, start=start, end=today - timedelta(days=1), group_by="model"),
            args.repeat,
        )
        # The totals must equal the raw sums (the benchmark checks what it measures).
        (total,) = usage_totals(actor=actor, start=start, end=today)
        with ministry_scope(ministry_id=a.pk):
            raw_n = UsageRecord.objects.filter(created_at__date__gte=start).count()
        results["totals_match_raw"] = total.requests == raw_n
        print(json.dumps(results, indent=2), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        connection.close()
        with owner_mode():
            teardown_databases(config, verbosity=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
