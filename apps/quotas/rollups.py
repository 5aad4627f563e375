"""Daily rollups of the usage ledger: ``UsageRecord`` → ``UsageDaily`` (idempotent).

:func:`usage_rollup` recomputes whole days of one ministry from the raw records
with one ``INSERT … SELECT … GROUP BY … ON CONFLICT DO UPDATE``, then deletes
the rollup rows of those days whose key no longer occurs (a user deleted since:
``UsageRecord.user`` became NULL, so the usage moved to the "no user" key).
Running it again over the same days rewrites the same numbers: the sums are
recomputed, never added to. Days without any raw record are left alone, so the
rollups outlive the raw rows if these are ever purged.

Celery beat runs :func:`usage_rollup_recent` (yesterday and today, every
ministry) every few minutes (``quotas-usage-rollup`` in ``CELERY_BEAT_SCHEDULE``);
``manage.py usage_rollup --start … --end …`` backfills a range. Days are
calendar days in ``settings.TIME_ZONE`` (Japan time).

Concurrency: a transaction-level advisory lock per ministry serialises two
rollups of the same ministry (a beat run and a backfill), so neither deletes
rows the other just wrote.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.tenancy.scope import ministry_scope

# pg_advisory_xact_lock(class, ministry_id): the class keeps these locks apart from others.
_LOCK_CLASS = 0x55534147  # "USAG"

_KEY = "ministry_id, day, team_id, user_id, api_key_id, alias_name, model_name, feature"

_UPSERT = f"""
INSERT INTO quotas_usagedaily ({_KEY},
    requests, errors, refused, interrupted, prompt_tokens, completion_tokens, cost_yen,
    latency_ms_sum, ttft_ms_sum, ttft_count, updated_at)
SELECT ministry_id, (created_at AT TIME ZONE %(tz)s)::date AS day, team_id, user_id, api_key_id,
    alias_name, model_name, feature,
    count(*),
    count(*) FILTER (WHERE status = 'error'),
    count(*) FILTER (WHERE status = 'refused'),
    count(*) FILTER (WHERE status = 'interrupted'),
    coalesce(sum(prompt_tokens), 0),
    coalesce(sum(completion_tokens), 0),
    coalesce(sum(cost_yen), 0),
    coalesce(sum(latency_ms), 0),
    coalesce(sum(ttft_ms), 0),
    count(ttft_ms),
    %(stamp)s
FROM quotas_usagerecord
WHERE ministry_id = %(ministry_id)s AND created_at >= %(start)s AND created_at < %(end)s
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
ON CONFLICT ({_KEY}) DO UPDATE SET
    requests = EXCLUDED.requests,
    errors = EXCLUDED.errors,
    refused = EXCLUDED.refused,
    interrupted = EXCLUDED.interrupted,
    prompt_tokens = EXCLUDED.prompt_tokens,
    completion_tokens = EXCLUDED.completion_tokens,
    cost_yen = EXCLUDED.cost_yen,
    latency_ms_sum = EXCLUDED.latency_ms_sum,
    ttft_ms_sum = EXCLUDED.ttft_ms_sum,
    ttft_count = EXCLUDED.ttft_count,
    updated_at = EXCLUDED.updated_at
"""

# Stale keys of the recomputed days (those that got at least one fresh row).
_DELETE_STALE = """
DELETE FROM quotas_usagedaily
WHERE ministry_id = %(ministry_id)s AND day >= %(first)s AND day <= %(last)s
  AND updated_at < %(stamp)s
  AND day IN (
      SELECT day FROM quotas_usagedaily
      WHERE ministry_id = %(ministry_id)s AND day >= %(first)s AND day <= %(last)s
        AND updated_at = %(stamp)s
  )
"""


@dataclass(frozen=True)
class RollupResult:
    ministry_id: int
    first: date
    last: date
    upserted: int
    deleted: int


def local_zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def local_today() -> date:
    return timezone.localdate(timezone=local_zone())


def day_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """[start of ``first``, start of the day after ``last``) in local time, as aware datetimes."""
    zone = local_zone()
    return (
        datetime.combine(first, time.min, tzinfo=zone),
        datetime.combine(last + timedelta(days=1), time.min, tzinfo=zone),
    )


def usage_rollup(*, ministry_id: int, first: date, last: date) -> RollupResult:
    """Recompute the ``UsageDaily`` rows of ``ministry_id`` for days ``first``..``last`` (inclusive).

    Runs inside the ministry's own scope: RLS lets the statement read and write
    only that ministry's rows, whatever the SQL says.
    """
    if last < first:
        raise ValueError("last must not be before first")
    start, end = day_bounds(first, last)
    with ministry_scope(ministry_id=ministry_id), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, ministry_id])
        # Taken after the lock: later than any stamp a finished concurrent run wrote.
        stamp = timezone.now()
        params: dict[str, Any] = {
            "tz": settings.TIME_ZONE,
            "stamp": stamp,
            "ministry_id": ministry_id,
            "start": start,
            "end": end,
            "first": first,
            "last": last,
        }
        cursor.execute(_UPSERT, params)
        upserted = cursor.rowcount
        cursor.execute(_DELETE_STALE, params)
        deleted = cursor.rowcount
    return RollupResult(ministry_id=ministry_id, first=first, last=last, upserted=upserted, deleted=deleted)


def usage_rollup_range(
    *, first: date, last: date, ministry_ids: list[int] | None = None
) -> list[RollupResult]:
    """Roll up ``first``..``last`` for the given (default: every) ministry, a day at a time.

    One transaction per ministry and day keeps each lock and each statement short
    when backfilling months of records.
    """
    from apps.tenancy.models import Ministry

    if ministry_ids is None:
        ministry_ids = list(Ministry.objects.order_by("id").values_list("id", flat=True))
    results: list[RollupResult] = []
    for ministry_id in ministry_ids:
        day = first
        while day <= last:
            results.append(usage_rollup(ministry_id=ministry_id, first=day, last=day))
            day += timedelta(days=1)
    return results


def usage_rollup_recent() -> list[RollupResult]:
    """Yesterday and today for every ministry (what beat runs): records arrive late by
    up to the journal's settle time, and yesterday is final once a run after midnight did it."""
    today = local_today()
    return usage_rollup_range(first=today - timedelta(days=1), last=today)
