"""Daily rollups equal the raw sums, re-running changes nothing, and dashboards read them per ministry."""

from __future__ import annotations

import random
from datetime import datetime, time, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.db.models import Count, Q, Sum

from apps.quotas.models import UsageDaily, UsageRecord
from apps.quotas.rollups import local_today, local_zone, usage_rollup, usage_rollup_range, usage_rollup_recent
from apps.quotas.selectors import usage_by_day, usage_csv_rows, usage_totals
from apps.tenancy.models import Membership, Team
from apps.tenancy.scope import ministry_scope
from tests.support.fixtures import make_user

FEATURES = ["chat", "rag", "ingest", "api"]
MODELS = ["llm-jp-4-8b", "swallow-70b"]
STATUSES = ["ok", "ok", "ok", "error", "refused", "interrupted"]


def _at(day_offset: int, hour: int, minute: int = 0) -> datetime:
    """A moment ``day_offset`` days from today, local (Japan) time."""
    day = local_today() + timedelta(days=day_offset)
    return datetime.combine(day, time(hour, minute), tzinfo=local_zone())


def _records(ministry: Any, *, n: int, seed: int, users: list[int], teams: list[int | None]) -> None:
    rng = random.Random(seed)  # noqa: S311  (test data, not secrets)
    rows = []
    for _ in range(n):
        rows.append(
            UsageRecord(
                ministry=ministry,
                alias_name=rng.choice(["standard-chat", "fast-chat"]),
                model_name=rng.choice(MODELS),
                feature=rng.choice(FEATURES),
                user_id=rng.choice(users),
                team_id=rng.choice(teams),
                status=rng.choice(STATUSES),
                prompt_tokens=rng.randint(0, 5000),
                completion_tokens=rng.randint(0, 2000),
                cost_yen=Decimal(rng.randint(0, 100000)) / 10000,
                latency_ms=rng.randint(10, 9000),
                ttft_ms=rng.choice([None, rng.randint(5, 900)]),
                # Includes the minutes around local midnight (day boundaries in Japan time).
                created_at=_at(-rng.randint(0, 5), rng.choice([0, 8, 12, 23]), rng.choice([0, 1, 59])),
            )
        )
    with ministry_scope(ministry_id=ministry.pk):
        UsageRecord.objects.bulk_create(rows)


def _raw_sums(*, first: Any, last: Any) -> dict[str, Any]:
    day_start = datetime.combine(first, time.min, tzinfo=local_zone())
    day_end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=local_zone())
    return UsageRecord.objects.filter(created_at__gte=day_start, created_at__lt=day_end).aggregate(
        requests=Count("id"),
        errors=Count("id", filter=Q(status="error")),
        refused=Count("id", filter=Q(status="refused")),
        prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
        cost_yen=Sum("cost_yen"),
        latency_ms_sum=Sum("latency_ms"),
        ttft_ms_sum=Sum("ttft_ms"),
        ttft_count=Count("ttft_ms"),
    )


def _rolled_sums(*, first: Any, last: Any) -> dict[str, Any]:
    return UsageDaily.objects.filter(day__gte=first, day__lte=last).aggregate(
        requests=Sum("requests"),
        errors=Sum("errors"),
        refused=Sum("refused"),
        prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
        cost_yen=Sum("cost_yen"),
        latency_ms_sum=Sum("latency_ms_sum"),
        ttft_ms_sum=Sum("ttft_ms_sum"),
        ttft_count=Sum("ttft_count"),
    )


@pytest.fixture
def usage(ministries: tuple[Any, Any]) -> dict[str, Any]:
    a, b = ministries
    users_a = [make_user(f"u-a-{i}", a, ["staff"]).pk for i in range(3)]
    users_b = [make_user(f"u-b-{i}", b, ["staff"]).pk for i in range(2)]
    with ministry_scope(ministry_id=a.pk):
        team = Team.objects.create(code="soumu-ka", name="総務課")
    _records(a, n=400, seed=1, users=users_a, teams=[team.pk, None])
    _records(b, n=150, seed=2, users=users_b, teams=[None])
    return {"team": team, "users_a": users_a}


def test_rollup_equals_raw_sums_per_day_and_key(ministries: tuple[Any, Any], usage: dict[str, Any]) -> None:
    a, b = ministries
    first, last = local_today() - timedelta(days=5), local_today()
    usage_rollup_range(first=first, last=last)
    for ministry in (a, b):
        with ministry_scope(ministry_id=ministry.pk):
            assert _rolled_sums(first=first, last=last) == _raw_sums(first=first, last=last)
            for offset in range(6):
                day = last - timedelta(days=offset)
                assert _rolled_sums(first=day, last=day) == _raw_sums(first=day, last=day), day
            # Per key: each (day, user, model, feature) group matches the raw group.
            for daily in UsageDaily.objects.all()[:50]:
                lower = datetime.combine(daily.day, time.min, tzinfo=local_zone())
                raw = UsageRecord.objects.filter(
                    created_at__gte=lower,
                    created_at__lt=lower + timedelta(days=1),
                    user_id=daily.user_id,
                    team_id=daily.team_id,
                    api_key_id=daily.api_key_id,
                    alias_name=daily.alias_name,
                    model_name=daily.model_name,
                    feature=daily.feature,
                ).aggregate(n=Count("id"), tokens=Sum("prompt_tokens"))
                assert (raw["n"], raw["tokens"]) == (daily.requests, daily.prompt_tokens)
    with ministry_scope(ministry_id=b.pk):
        assert not UsageDaily.objects.filter(user_id__in=usage["users_a"]).exists()


def test_rerunning_is_idempotent_and_picks_up_late_rows(
    ministries: tuple[Any, Any], usage: dict[str, Any]
) -> None:
    a, _ = ministries
    today = local_today()
    usage_rollup(ministry_id=a.pk, first=today - timedelta(days=5), last=today)
    with ministry_scope(ministry_id=a.pk):
        before = sorted(
            UsageDaily.objects.values_list("day", "user_id", "feature", "model_name", "requests", "cost_yen")
        )
    usage_rollup(ministry_id=a.pk, first=today - timedelta(days=5), last=today)
    usage_rollup_recent()
    with ministry_scope(ministry_id=a.pk):
        after = sorted(
            UsageDaily.objects.values_list("day", "user_id", "feature", "model_name", "requests", "cost_yen")
        )
        assert after == before
        # A late record (journal drain) is counted by the next run, not added twice.
        UsageRecord.objects.create(
            alias_name="standard-chat", feature="chat", status="ok", prompt_tokens=7, created_at=_at(0, 12)
        )
    usage_rollup_recent()
    usage_rollup_recent()
    with ministry_scope(ministry_id=a.pk):
        assert _rolled_sums(first=today, last=today) == _raw_sums(first=today, last=today)


def test_key_that_disappeared_is_removed(ministries: tuple[Any, Any], usage: dict[str, Any]) -> None:
    """A deleted user's usage moves to the "no user" key (UsageRecord.user is SET NULL)."""
    a, _ = ministries
    today = local_today()
    usage_rollup(ministry_id=a.pk, first=today - timedelta(days=5), last=today)
    gone = usage["users_a"][0]
    with ministry_scope(ministry_id=a.pk):
        assert UsageDaily.objects.filter(user_id=gone).exists()
        UsageRecord.objects.filter(user_id=gone).update(user=None)
    usage_rollup(ministry_id=a.pk, first=today - timedelta(days=5), last=today)
    with ministry_scope(ministry_id=a.pk):
        assert not UsageDaily.objects.filter(user_id=gone).exists()
        assert _rolled_sums(first=today - timedelta(days=5), last=today) == _raw_sums(
            first=today - timedelta(days=5), last=today
        )


def test_backfill_command(ministries: tuple[Any, Any], usage: dict[str, Any]) -> None:
    a, b = ministries
    today = local_today()
    out = StringIO()
    start = (today - timedelta(days=5)).isoformat()
    call_command(
        "usage_rollup", "--start", start, "--end", today.isoformat(), "--ministry", "digital", stdout=out
    )
    assert "digital" in out.getvalue()
    with ministry_scope(ministry_id=a.pk):
        assert _rolled_sums(first=today - timedelta(days=5), last=today) == _raw_sums(
            first=today - timedelta(days=5), last=today
        )
    with ministry_scope(ministry_id=b.pk):
        assert not UsageDaily.objects.exists()


def _admin(ministry: Any, name: str, roles: list[str]) -> Membership:
    user = make_user(name, ministry, roles)
    return Membership.objects.get(user=user, ministry=ministry)


def test_dashboard_reads_match_raw_and_stay_in_the_ministry(
    ministries: tuple[Any, Any], usage: dict[str, Any]
) -> None:
    a, b = ministries
    admin_a = _admin(a, "admin-a", ["ministry_admin"])
    admin_b = _admin(b, "admin-b", ["ministry_admin"])
    today = local_today()
    first = today - timedelta(days=5)
    # Only older days are rolled up: today (and yesterday) must come from the raw rows.
    usage_rollup_range(first=first, last=today - timedelta(days=2))
    for admin, ministry in ((admin_a, a), (admin_b, b)):
        with ministry_scope(ministry_id=ministry.pk):
            raw = _raw_sums(first=first, last=today)
        (total,) = usage_totals(actor=admin, start=first, end=today)
        assert (total.requests, total.prompt_tokens, total.cost_yen) == (
            raw["requests"],
            raw["prompt_tokens"],
            raw["cost_yen"],
        )
        by_feature = usage_totals(actor=admin, start=first, end=today, group_by="feature")
        assert sum(r.requests for r in by_feature) == raw["requests"]
    by_team = usage_totals(actor=admin_a, start=first, end=today, group_by="team")
    assert {r.label for r in by_team} == {"総務課", ""}
    by_user = usage_by_day(actor=admin_b, start=first, end=today, group_by="user")
    assert not {r.key for r in by_user} & set(usage["users_a"]), "B must never see A's users"
    days = usage_by_day(actor=admin_a, start=first, end=today)
    assert [r.day for r in days] == sorted({r.day for r in days if r.day is not None})
    lines = list(usage_csv_rows(actor=admin_a, start=first, end=today, group_by="model"))
    assert lines[0][:3] == ["day", "group", "key"] and len(lines) > 1
    assert sum(int(line[4]) for line in lines[1:]) == total_requests(admin_a, first, today)


def total_requests(actor: Membership, first: Any, last: Any) -> int:
    return usage_totals(actor=actor, start=first, end=last)[0].requests


def test_dashboard_refuses_staff_and_bad_input(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    staff = _admin(a, "staff-only", ["staff"])
    today = local_today()
    with pytest.raises(PermissionDenied):
        usage_totals(actor=staff, start=today, end=today)
    admin = _admin(a, "admin-x", ["ministry_admin"])
    with pytest.raises(ValueError):
        usage_totals(actor=admin, start=today, end=today, group_by="ministry")
    with pytest.raises(ValueError):
        usage_totals(actor=admin, start=today, end=today - timedelta(days=1))


def test_csv_neutralises_formulas(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    admin = _admin(a, "admin-csv", ["ministry_auditor"])
    with ministry_scope(ministry_id=a.pk):
        UsageRecord.objects.create(alias_name="=HYPERLINK(1)", status="ok", created_at=_at(0, 9))
    lines = list(usage_csv_rows(actor=admin, start=local_today(), end=local_today(), group_by="alias"))
    assert lines[1][3] == "'=HYPERLINK(1)"


def test_beat_runs_the_recent_rollup(
    ministries: tuple[Any, Any], usage: dict[str, Any], settings: Any
) -> None:
    from apps.quotas.tasks import usage_rollup_recent_task

    entry = settings.CELERY_BEAT_SCHEDULE["quotas-usage-rollup"]
    assert entry["task"] == usage_rollup_recent_task.name == "quotas.usage_rollup_recent"
    assert usage_rollup_recent_task() > 0
    a, _ = ministries
    today = local_today()
    with ministry_scope(ministry_id=a.pk):
        assert _rolled_sums(first=today - timedelta(days=1), last=today) == _raw_sums(
            first=today - timedelta(days=1), last=today
        )
        assert not UsageDaily.objects.filter(day__lt=today - timedelta(days=1)).exists()


def test_purged_days_keep_their_rollups(ministries: tuple[Any, Any], usage: dict[str, Any]) -> None:
    """Raw records of a day deleted (retention): re-running the backfill keeps that day's rollup."""
    a, _ = ministries
    today = local_today()
    old_day = today - timedelta(days=4)
    usage_rollup(ministry_id=a.pk, first=today - timedelta(days=5), last=today)
    with ministry_scope(ministry_id=a.pk):
        kept = _rolled_sums(first=old_day, last=old_day)
        assert kept["requests"]
        lower = datetime.combine(old_day, time.min, tzinfo=local_zone())
        UsageRecord.objects.filter(created_at__gte=lower, created_at__lt=lower + timedelta(days=1)).delete()
    usage_rollup(ministry_id=a.pk, first=today - timedelta(days=5), last=today)
    with ministry_scope(ministry_id=a.pk):
        assert _rolled_sums(first=old_day, last=old_day) == kept
