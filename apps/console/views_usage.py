"""The usage dashboard (利用状況) of a ministry: by day, model, feature, team or user; CSV export.

Reads come from :mod:`apps.quotas.selectors` with the request's active
membership as the actor: they run in that ministry's scope (ORM and RLS), so
the dashboard cannot show another ministry's usage whatever the query string
says. The chart's data is embedded as JSON in the canvas's ``data-chart`` attribute and drawn by
``gennai/js/usage-chart.js`` with the vendored Chart.js: no inline script, so
the page keeps the strict Content-Security-Policy.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from apps.audit.services import audit_record
from apps.quotas.selectors import UsageRow, usage_by_day, usage_csv_rows
from apps.tenancy.models import Membership

from .forms_insight import UsageFilterForm
from .permissions import console_required

#: Series drawn per group (the rest are summed into "others"), so the chart stays legible.
CHART_SERIES = 8


def _acting(request: HttpRequest) -> Membership:
    membership: Membership = request.membership  # type: ignore[attr-defined]
    return membership


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def chart_data(*, rows: list[UsageRow], totals: list[UsageRow], start: date, end: date) -> dict[str, Any]:
    """Chart.js ``data``: one dataset of total tokens per day, or one per group key (top N + others)."""
    days = _days(start, end)
    index = {day: n for n, day in enumerate(days)}
    if not any(row.key is not None for row in rows):
        tokens = [0] * len(days)
        for row in rows:
            if row.day in index:
                tokens[index[row.day]] += row.total_tokens
        datasets = [{"label": _("トークン数"), "data": tokens}]
    else:
        top = [t.key for t in totals[:CHART_SERIES]]
        labels = {t.key: t.label or _("（なし）") for t in totals}
        series: dict[Any, list[int]] = defaultdict(lambda: [0] * len(days))
        for row in rows:
            if row.day not in index:
                continue
            key = row.key if row.key in top else "__others__"
            series[key][index[row.day]] += row.total_tokens
        datasets = [{"label": str(labels.get(key, "")), "data": series[key]} for key in top if key in series]
        if "__others__" in series:
            datasets.append({"label": _("その他"), "data": series["__others__"]})
    return {"labels": [d.isoformat() for d in days], "datasets": datasets}


def _totals(rows: list[UsageRow]) -> list[UsageRow]:
    """Per-key sums over the period (as ``usage_totals``, without reading the ledger twice)."""
    totals: dict[Any, UsageRow] = {}
    for row in rows:
        total = totals.get(row.key)
        if total is None:
            total = totals[row.key] = UsageRow(day=None, key=row.key, label=row.label)
        total.add(row)
    return sorted(totals.values(), key=lambda r: (-r.cost_yen, -r.total_tokens, str(r.key)))


def _summary(totals: list[UsageRow]) -> UsageRow:
    summary = UsageRow(day=None, key=None, label="")
    for row in totals:
        summary.add(row)
    return summary


@require_GET
@console_required()
def usage_dashboard(request: HttpRequest) -> HttpResponse:
    """Usage of the active ministry over a period; HTMX requests get the results region only."""
    form = UsageFilterForm(request.GET or None)
    start, end = form.period()
    group_by = form.group()
    actor = _acting(request)
    rows = usage_by_day(actor=actor, start=start, end=end, group_by=group_by)
    totals = _totals(rows)
    context = {
        "section": "usage",
        "form": form,
        "start": start,
        "end": end,
        "group_by": group_by or "",
        "totals": totals if group_by else [],
        "day_rows": rows if not group_by else [],
        "summary": _summary(totals),
        # Autoescaped into the canvas's data-chart attribute (JSON text, never markup).
        "chart_json": json.dumps(
            chart_data(rows=rows, totals=totals, start=start, end=end), ensure_ascii=False
        ),
        "csv_query": f"start={start.isoformat()}&end={end.isoformat()}&group_by={group_by or ''}",
    }
    if getattr(request, "htmx", False):
        return render(request, "console/insight/_usage_results.html", context)
    return render(request, "console/insight/usage.html", context)


class _Echo:
    def write(self, value: str) -> str:
        return value


@require_GET
@console_required()  # type: ignore[arg-type]  # a streaming response; the decorator only passes it on
def usage_csv(request: HttpRequest) -> HttpResponseBase:
    """The dashboard's rows as CSV (UTF-8 with BOM, so Excel opens Japanese labels); audited."""
    form = UsageFilterForm(request.GET or None)
    if request.GET and not form.is_valid():
        return HttpResponse(
            "\n".join(str(e) for errors in form.errors.values() for e in errors),
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    start, end = form.period()
    group_by = form.group()
    actor = _acting(request)
    rows = list(usage_csv_rows(actor=actor, start=start, end=end, group_by=group_by))
    audit_record(
        actor=request.user,
        action="usage.export",
        target_type="ministry",
        target_id=actor.ministry_id,
        ministry_id=actor.ministry_id,
        data={"start": start, "end": end, "group_by": group_by or "", "rows": len(rows) - 1},
    )
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield "\ufeff"
        for row in rows:
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    code = actor.ministry.code
    response["Content-Disposition"] = (
        f'attachment; filename="usage-{code}-{start}-{end}-{group_by or "day"}.csv"'
    )
    response["Cache-Control"] = "no-store"
    return response
