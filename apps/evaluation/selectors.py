"""Reads of evaluation: suites, runs, the comparison report, promotions and arena leaderboards."""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Count, QuerySet
from django.http import Http404

from apps.registry.models import DeploymentZone
from apps.registry.permissions import VIEW_ROLES, access_for_user
from apps.tenancy.models import Membership, Ministry
from apps.tenancy.scope import current_ministry_id, ministry_scope

from .models import (
    ArenaOutcome,
    ArenaVote,
    ItemStatus,
    MetricKind,
    MinistryRun,
    MinistrySuite,
    Promotion,
    Run,
    Suite,
)
from .ratings import Rating, Vote, bradley_terry
from .stores import PLATFORM_STORE, Store, store_for


def _check_actor(actor: Any) -> None:
    """Security: "missing" and "not allowed to see evaluation data" are the same 404."""
    if not access_for_user(actor).can_view:
        raise Http404


def suite_list() -> QuerySet[Suite]:
    """Platform suites (visible to every procurement officer, platform admin and auditor)."""
    return Suite.objects.annotate(task_count=Count("tasks")).order_by("name")


def may_see_ministry_suites(actor: Any) -> bool:
    """Security: a ministry's own suites and runs are that ministry's content, so the evaluation
    role must be held in the membership *of the active ministry* (invariant 9). The registry's
    pages accept a role from any membership; a ``procurement_officer`` of A by A's group who acts
    in B as staff must not read B's suites (tasks, references, the models' answers). Realm roles
    (platform auditor/officer/admin) are on every membership and still qualify."""
    ministry_id = current_ministry_id()
    if ministry_id is None:
        return False
    return Membership.objects.filter(
        user_id=int(getattr(actor, "pk", 0) or 0),
        ministry_id=ministry_id,
        ministry__active=True,
        roles__overlap=sorted(VIEW_ROLES),
    ).exists()


def ministry_suite_list(*, actor: Any) -> QuerySet[MinistrySuite]:
    """The active ministry's own suites (none without a scope or a role in it); the scoped manager
    and RLS keep other ministries' suites out."""
    if not may_see_ministry_suites(actor):
        return MinistrySuite.objects.none()
    suites: QuerySet[MinistrySuite] = MinistrySuite.objects.annotate(task_count=Count("tasks"))
    return suites.order_by("name")


def recent_runs(*, actor: Any, limit: int = 20) -> list[Run | MinistryRun]:
    """The latest platform runs and the active ministry's own runs (for a role in it), newest first."""
    runs: list[Run | MinistryRun] = list(Run.objects.select_related("suite")[:limit])
    if may_see_ministry_suites(actor):
        runs += list(MinistryRun.objects.select_related("suite")[:limit])
    return sorted(runs, key=lambda r: r.created_at, reverse=True)[:limit]


def _scoped(store: Store, actor: Any) -> None:
    """Security: a ministry suite or run is looked up only inside the active ministry's scope
    (the scoped manager and RLS then hide every other ministry's rows: another ministry's id is
    the same 404 as a missing one), and only for a role held in that ministry
    (:func:`may_see_ministry_suites`)."""
    if store.is_ministry and not may_see_ministry_suites(actor):
        raise Http404


def get_suite_for_actor(*, actor: Any, suite_id: int, store: Store = PLATFORM_STORE) -> Any:
    _check_actor(actor)
    _scoped(store, actor)
    suite = store.suite.objects.filter(pk=suite_id).first()
    if suite is None:
        raise Http404
    return suite


def get_run_for_actor(*, actor: Any, run_id: int, store: Store = PLATFORM_STORE) -> Any:
    _check_actor(actor)
    _scoped(store, actor)
    run = store.run.objects.select_related("suite", "judge_deployment").filter(pk=run_id).first()
    if run is None:
        raise Http404
    return run


def get_promotion_for_actor(*, actor: Any, promotion_id: int) -> Promotion:
    _check_actor(actor)
    promotion = Promotion.objects.select_related("alias", "deployment").filter(pk=promotion_id).first()
    if promotion is None:
        raise Http404
    return promotion


def promotions_of_run(run: Any) -> QuerySet[Promotion]:
    """Promotions started from this run's report (a ministry run is referenced by plain id)."""
    rows = Promotion.objects.select_related("alias", "deployment")
    if store_for(run).is_ministry:
        return rows.filter(ministry_run_id=run.pk)
    return rows.filter(run=run)


def promotion_list() -> QuerySet[Promotion]:
    return Promotion.objects.select_related("alias", "deployment", "change_request", "created_by")


def _percentile(values: list[int], q: float) -> int | None:
    """Nearest-rank percentile (no interpolation: a reported p95 is a latency that happened)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class CandidateReport:
    """One column of the procurement report."""

    label: str
    deployment: str
    model: str
    vendor: str
    licence: str
    zone: str
    clearance: int
    items: int
    errors: int
    judge_errors: int
    quality: dict[str, float | None] = field(default_factory=dict)  # mean score (0..1) per metric
    quality_overall: float | None = None
    latency_p50_ms: int | None = None
    latency_p95_ms: int | None = None
    ttft_p50_ms: int | None = None
    ttft_p95_ms: int | None = None
    tokens_per_s_p50: float | None = None
    tokens: int = 0
    cost_yen: str = "0"
    cost_per_1k_tokens_yen: str | None = None
    price_input_per_1m_yen: str = "0"
    price_output_per_1m_yen: str = "0"
    bench_tokens_per_s: float | None = None
    bench_concurrency: int | None = None
    registry_throughput_tokens_per_s: int | None = None  # the deployment's measured value, if set
    deployment_id: int = 0

    @property
    def zone_label(self) -> str:
        return str(DeploymentZone(self.zone).label) if self.zone in DeploymentZone.values else self.zone

    @property
    def quality_in_order(self) -> list[float | None]:
        """Quality per metric in ``MetricKind`` order (the report's columns); None where no task used it."""
        return [self.quality.get(metric) for metric in MetricKind.values]


def _bench_best(bench: Any) -> tuple[float | None, int | None]:
    """Highest aggregate throughput over the bench's concurrency levels (``inference bench --json``)."""
    levels = bench.get("levels") if isinstance(bench, dict) else None
    best: tuple[float | None, int | None] = (None, None)
    for level in levels if isinstance(levels, list) else []:
        if not isinstance(level, dict):
            continue
        value = level.get("aggregate_tokens_per_s")
        if isinstance(value, int | float) and (best[0] is None or value > best[0]):
            concurrency = level.get("concurrency")
            best = (float(value), concurrency if isinstance(concurrency, int) else None)
    return best


def run_report(run: Any) -> list[CandidateReport]:
    store = store_for(run)
    candidates = list(store.candidate.objects.filter(run=run).select_related("deployment__model__vendor"))
    items = list(store.item.objects.filter(run=run).select_related("task").order_by("pk"))
    reports = []
    for candidate in candidates:
        mine = [i for i in items if i.candidate_id == candidate.pk]
        answered = [i for i in mine if i.status == ItemStatus.DONE]
        model = candidate.deployment.model
        quality: dict[str, float | None] = {}
        for metric in MetricKind.values:
            scores = [i.score for i in mine if i.task.metric == metric and i.status != ItemStatus.PENDING]
            if scores:
                # A failed call or an unscorable judge reply scores 0: a procurement report must not
                # reward a model for failing on the hard tasks.
                quality[metric] = round(sum(s or 0.0 for s in scores) / len(scores), 4)
        finished = [i for i in mine if i.status != ItemStatus.PENDING]
        overall = round(sum(i.score or 0.0 for i in finished) / len(finished), 4) if finished else None
        tokens = sum(i.prompt_tokens + i.completion_tokens for i in mine)
        cost = sum((i.cost_yen for i in mine), Decimal(0))
        rates = [i.tokens_per_s for i in answered if i.tokens_per_s is not None]
        bench_tps, bench_conc = _bench_best(run.bench.get(str(candidate.pk)))
        reports.append(
            CandidateReport(
                label=candidate.label,
                deployment=candidate.deployment.name,
                deployment_id=candidate.deployment_id,
                model=f"{model.family} {model.version}",
                vendor=model.vendor.name,
                licence=model.license,
                zone=candidate.deployment.zone,
                clearance=candidate.deployment.effective_clearance,
                items=len(mine),
                errors=sum(1 for i in mine if i.status == ItemStatus.ERROR),
                judge_errors=sum(1 for i in mine if i.judge_error),
                quality=quality,
                quality_overall=overall,
                latency_p50_ms=_percentile([i.latency_ms for i in answered if i.latency_ms is not None], 0.5),
                latency_p95_ms=_percentile(
                    [i.latency_ms for i in answered if i.latency_ms is not None], 0.95
                ),
                ttft_p50_ms=_percentile([i.ttft_ms for i in answered if i.ttft_ms is not None], 0.5),
                ttft_p95_ms=_percentile([i.ttft_ms for i in answered if i.ttft_ms is not None], 0.95),
                tokens_per_s_p50=round(statistics.median(rates), 2) if rates else None,
                tokens=tokens,
                cost_yen=str(cost),
                cost_per_1k_tokens_yen=str((cost * 1000 / tokens).quantize(Decimal("0.0001")))
                if tokens
                else None,
                price_input_per_1m_yen=str(model.price_input_per_1m),
                price_output_per_1m_yen=str(model.price_output_per_1m),
                bench_tokens_per_s=bench_tps,
                bench_concurrency=bench_conc,
                registry_throughput_tokens_per_s=candidate.deployment.throughput_tokens_per_s,
            )
        )
    return reports


REPORT_COLUMNS = [
    "label", "deployment", "model", "vendor", "licence", "zone", "clearance", "items", "errors",
    "judge_errors",
    *[f"quality_{m}" for m in MetricKind.values], "quality_overall", "latency_p50_ms", "latency_p95_ms",
    "ttft_p50_ms", "ttft_p95_ms", "tokens_per_s_p50", "bench_tokens_per_s", "bench_concurrency",
    "registry_throughput_tokens_per_s", "tokens",
    "cost_yen", "cost_per_1k_tokens_yen", "price_input_per_1m_yen", "price_output_per_1m_yen",
]  # fmt: skip


def _flat(report: CandidateReport) -> dict[str, Any]:
    row = asdict(report)
    for metric in MetricKind.values:
        row[f"quality_{metric}"] = report.quality.get(metric)
    return {name: row.get(name) for name in REPORT_COLUMNS}


def _csv_safe(value: Any) -> Any:
    """Spreadsheet formula injection: a cell starting with = + - @ is quoted as text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def run_report_csv(run: Any) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    for report in run_report(run):
        row = _flat(report)
        writer.writerow([_csv_safe(row[name]) for name in REPORT_COLUMNS])
    return out.getvalue()


def run_report_json(run: Any) -> dict[str, Any]:
    return {
        "run": run.pk,
        "suite": {
            "id": run.suite_id,
            "name": run.suite.name,
            "level": run.suite.level,
            "owner": store_for(run).owner,
        },
        "status": run.status,
        "progress": {"done": run.done, "total": run.total},
        "judge": run.judge_deployment.name if run.judge_deployment else None,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "candidates": [_flat(r) for r in run_report(run)],
    }


# --- Arena leaderboards --------------------------------------------------------------------

_WINNER = {ArenaOutcome.A: "a", ArenaOutcome.B: "b", ArenaOutcome.TIE: "tie", ArenaOutcome.BOTH_BAD: "tie"}


def _scope_votes() -> list[Vote]:
    """The active ministry's votes (RLS and the tenant manager keep them to it)."""
    rows = ArenaVote.objects.values_list("battle__alias_a__name", "battle__alias_b__name", "outcome")
    return [Vote(a=a, b=b, winner=_WINNER[ArenaOutcome(outcome)]) for a, b, outcome in rows]


def ministry_leaderboard() -> list[Rating]:
    """Bradley–Terry ratings from the active ministry's votes only."""
    return bradley_terry(_scope_votes())


def overall_leaderboard(*, visible: set[str] | None) -> list[Rating]:
    """Ratings from every ministry's votes (read inside each ministry's scope; only alias names and
    outcomes leave it). ``visible``: alias names the viewer may see (``None``: all, for procurement);
    security: an alias granted only to another ministry is never listed to staff."""
    votes: list[Vote] = []
    for ministry_id in Ministry.objects.filter(active=True).values_list("pk", flat=True):
        with ministry_scope(ministry_id=ministry_id):
            votes.extend(_scope_votes())
    ratings = bradley_terry(votes)
    return ratings if visible is None else [r for r in ratings if r.candidate in visible]
