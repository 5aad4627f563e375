"""Dashboard reads of the usage ledger, always inside the actor's own ministry.

For the console (usage dashboard, CSV export). Every function takes the acting
:class:`~apps.tenancy.models.Membership` and reads only that membership's
ministry: the query runs in ``ministry_scope(actor.ministry_id)`` (ORM filter
and RLS), whatever scope was active before. A platform admin's cross-ministry
view calls these once per ministry with a membership of that ministry — and
audits it — rather than through any parameter here.

Signatures (``start``/``end`` are inclusive local dates, Japan time)::

    usage_by_day(*, actor, start, end, group_by=None) -> list[UsageRow]
        # one row per (day, key); group_by None = one row per day
    usage_totals(*, actor, start, end, group_by=None) -> list[UsageRow]
        # one row per key over the whole period (day=None); group_by None = a single row
    usage_csv_rows(*, actor, start, end, group_by=None) -> Iterator[list[str]]
        # header row, then usage_by_day's rows as strings (for csv.writer)

``group_by`` is one of ``GROUP_BY``: ``model`` | ``feature`` | ``team`` |
``user`` | ``alias`` | ``api_key``. Rows are sorted by day, then by cost
(highest first). ``UsageRow.label`` is a display name (team name, user's
display name, API key name, or the key itself; "" for "none").

Sources: finished days come from :class:`~apps.quotas.rollup_models.UsageDaily`;
today — and yesterday until a rollup ran after midnight — are aggregated from
the raw ``UsageRecord`` rows (one day of one ministry, through the
``(ministry, created_at)`` index), so the numbers are current without writing
anything from a read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import Coalesce, TruncDate

from apps.tenancy.scope import ministry_scope

from .rollups import day_bounds, local_today, local_zone

# Roles that may read a ministry's usage (views check too; this is the second lock).
READER_ROLES = ("ministry_admin", "ministry_auditor", "platform_admin", "auditor")

GROUP_BY: dict[str, str] = {
    "model": "model_name",
    "feature": "feature",
    "team": "team_id",
    "user": "user_id",
    "alias": "alias_name",
    "api_key": "api_key_id",
}

MAX_DAYS = 400  # a dashboard period longer than this is refused (the CSV of a year fits)


@dataclass
class UsageRow:
    day: date | None
    key: str | int | None
    label: str
    requests: int = 0
    errors: int = 0
    refused: int = 0
    interrupted: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_yen: Decimal = Decimal(0)
    latency_ms_sum: int = 0
    ttft_ms_sum: int = 0
    ttft_count: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def avg_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.requests if self.requests else None

    @property
    def avg_ttft_ms(self) -> float | None:
        return self.ttft_ms_sum / self.ttft_count if self.ttft_count else None

    def add(self, other: UsageRow) -> None:
        for name in _SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


_SUMS = (
    "requests",
    "errors",
    "refused",
    "interrupted",
    "prompt_tokens",
    "completion_tokens",
    "cost_yen",
    "latency_ms_sum",
    "ttft_ms_sum",
    "ttft_count",
)


def _check(*, actor: Any, start: date, end: date, group_by: str | None) -> int:
    """Security: only a membership with a reader role, and only its own ministry."""
    ministry_id = getattr(actor, "ministry_id", None)
    if not isinstance(ministry_id, int) or not any(actor.has_role(role) for role in READER_ROLES):
        raise PermissionDenied("usage dashboards need an admin or auditor membership")
    if group_by is not None and group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {sorted(GROUP_BY)}")
    if end < start or (end - start).days > MAX_DAYS:
        raise ValueError("invalid period")
    return ministry_id


def _raw_days(*, start: date, end: date) -> tuple[date, date] | None:
    """The days of [start, end] to read from raw records (inside the scope): today, and
    yesterday if no rollup has finished it since midnight."""
    from .rollup_models import UsageDaily

    today = local_today()
    first_raw = today
    yesterday = today - timedelta(days=1)
    if start <= yesterday <= end:
        midnight, _ = day_bounds(yesterday, yesterday)
        midnight += timedelta(days=1)
        last_run = UsageDaily.objects.filter(day=yesterday).aggregate(at=Max("updated_at"))["at"]
        if last_run is None or last_run < midnight:
            first_raw = yesterday
    first_raw = max(first_raw, start)
    return (first_raw, end) if first_raw <= end else None


def _fields(column: str | None, per_day: bool) -> list[str]:
    return (["day"] if per_day else []) + ([column] if column else [])


def _grouped(queryset: Any, fields: list[str], sums: dict[str, Any]) -> list[dict[str, Any]]:
    """``sums`` per distinct ``fields`` in SQL; with no fields, one row of totals (not per row)."""
    if not fields:
        totals = queryset.aggregate(**sums)
        return [totals] if totals.get("requests") else []
    return list(queryset.values(*fields).annotate(**sums).order_by())


def _rolled(*, start: date, end: date, column: str | None, per_day: bool) -> list[UsageRow]:
    from .rollup_models import UsageDaily

    rows = _grouped(
        UsageDaily.objects.filter(day__gte=start, day__lte=end),
        _fields(column, per_day),
        {name: Sum(name) for name in _SUMS},
    )
    return [_row(row, column) for row in rows]


def _raw(*, start: date, end: date, column: str | None, per_day: bool) -> list[UsageRow]:
    from .models import UsageRecord

    lower, upper = day_bounds(start, end)
    queryset = UsageRecord.objects.filter(created_at__gte=lower, created_at__lt=upper)
    if per_day:
        queryset = queryset.annotate(day=TruncDate("created_at", tzinfo=local_zone()))
    rows = _grouped(
        queryset,
        _fields(column, per_day),
        {
            "requests": Count("id"),
            "errors": Count("id", filter=Q(status="error")),
            "refused": Count("id", filter=Q(status="refused")),
            "interrupted": Count("id", filter=Q(status="interrupted")),
            "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
            "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
            "cost_yen": Sum("cost_yen"),
            "latency_ms_sum": Coalesce(Sum("latency_ms"), 0),
            "ttft_ms_sum": Coalesce(Sum("ttft_ms"), 0),
            "ttft_count": Count("ttft_ms"),
        },
    )
    return [_row(row, column) for row in rows]


def _row(values: dict[str, Any], column: str | None) -> UsageRow:
    sums: dict[str, Any] = {name: values[name] or 0 for name in _SUMS}
    sums["cost_yen"] = Decimal(sums["cost_yen"])
    return UsageRow(day=values.get("day"), key=values[column] if column else None, label="", **sums)


def _labels(rows: list[UsageRow], group_by: str | None, ministry_id: int) -> None:
    """Display names for ids (looked up only for ids that came from this ministry's rows)."""
    if group_by in ("team", "user", "api_key"):
        ids = {row.key for row in rows if isinstance(row.key, int)}
        names: dict[Any, str] = {}
        if ids and group_by == "team":
            from apps.tenancy.models import Team

            names = {t.pk: t.name or t.code for t in Team.objects.filter(pk__in=ids)}
        elif ids and group_by == "user":
            from apps.accounts.models import User

            names = {u.pk: str(u) for u in User.objects.filter(pk__in=ids)}
        elif ids and group_by == "api_key":
            from apps.gateway.models import ApiKey

            # ApiKey is platform-level (no RLS): filter on the ministry explicitly.
            names = dict(ApiKey.objects.filter(pk__in=ids, ministry_id=ministry_id).values_list("pk", "name"))
        for row in rows:
            row.label = names.get(row.key, "" if row.key is None else f"#{row.key}")
    else:
        for row in rows:
            row.label = "" if row.key is None else str(row.key)


def _usage(*, actor: Any, start: date, end: date, group_by: str | None, per_day: bool) -> list[UsageRow]:
    """Rollups for finished days plus raw records for the rest, grouped in SQL (by day if
    ``per_day``); a key may come twice (once from each source) when not per day."""
    ministry_id = _check(actor=actor, start=start, end=end, group_by=group_by)
    column = GROUP_BY[group_by] if group_by else None
    with ministry_scope(ministry_id=ministry_id):
        raw = _raw_days(start=start, end=end)
        rolled_end = end if raw is None else raw[0] - timedelta(days=1)
        rows = (
            _rolled(start=start, end=rolled_end, column=column, per_day=per_day)
            if start <= rolled_end
            else []
        )
        if raw is not None:
            rows += _raw(start=raw[0], end=raw[1], column=column, per_day=per_day)
        _labels(rows, group_by, ministry_id)
    return rows


def usage_by_day(*, actor: Any, start: date, end: date, group_by: str | None = None) -> list[UsageRow]:
    """Usage of the actor's ministry per day (and per ``group_by`` key), days ``start``..``end``."""
    rows = _usage(actor=actor, start=start, end=end, group_by=group_by, per_day=True)
    rows.sort(key=lambda r: (r.day or start, -r.cost_yen, -r.total_tokens, str(r.key)))
    return rows


def usage_totals(*, actor: Any, start: date, end: date, group_by: str | None = None) -> list[UsageRow]:
    """Usage of the actor's ministry over the whole period, one row per ``group_by`` key."""
    totals: dict[Any, UsageRow] = {}
    for row in _usage(actor=actor, start=start, end=end, group_by=group_by, per_day=False):
        total = totals.get(row.key)
        if total is None:
            total = totals[row.key] = UsageRow(day=None, key=row.key, label=row.label)
        total.add(row)
    if not totals and group_by is None:
        return [UsageRow(day=None, key=None, label="")]
    return sorted(totals.values(), key=lambda r: (-r.cost_yen, -r.total_tokens, str(r.key)))


CSV_HEADER = [
    "day",
    "group",
    "key",
    "label",
    "requests",
    "errors",
    "refused",
    "interrupted",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_yen",
    "avg_latency_ms",
    "avg_ttft_ms",
]


#: First characters that make a spreadsheet read a cell as a formula (or, for TAB / CR, that
#: hide one behind them); Japanese spreadsheets take the full-width signs as formulas too.
_FORMULA_STARTS = frozenset("=+-@\t\r＝＋－＠")


def _cell(value: str) -> str:
    """Security: text that would start a formula gets a leading ``'`` (shown, never evaluated).

    Applied to every text cell of the export that comes from data (the group's
    key and its label): a model, alias or team name, a user's display name or
    an API key's name must not run as a formula in the reader's spreadsheet.
    """
    return "'" + value if value[:1] in _FORMULA_STARTS else value


def usage_csv_rows(*, actor: Any, start: date, end: date, group_by: str | None = None) -> Iterator[list[str]]:
    """The CSV export: a header, then one line per day and key (values as strings)."""
    rows = usage_by_day(actor=actor, start=start, end=end, group_by=group_by)
    yield list(CSV_HEADER)
    for row in rows:
        yield [
            row.day.isoformat() if row.day else "",
            group_by or "",
            "" if row.key is None else _cell(str(row.key)),
            _cell(row.label),
            str(row.requests),
            str(row.errors),
            str(row.refused),
            str(row.interrupted),
            str(row.prompt_tokens),
            str(row.completion_tokens),
            str(row.total_tokens),
            f"{row.cost_yen:.4f}",
            "" if row.avg_latency_ms is None else f"{row.avg_latency_ms:.1f}",
            "" if row.avg_ttft_ms is None else f"{row.avg_ttft_ms:.1f}",
        ]
