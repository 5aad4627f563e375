"""Promoting a candidate: alias → canary N % → full, with automatic rollback on the canary's health.

Route changes go through the registry's own services (``alias_set_routes``,
``alias_rollback``), so the four-eyes rule applies unchanged: a canary that
gives traffic to a deployment outside the on-prem zone becomes a pending
ChangeRequest, and the promotion waits for its approval. Every step is audited
(the registry audits the route change; this module audits the promotion).

The watch (a beat task) is the system acting, not a person: its rollback is
published directly (``actor=None``), restoring the routes of the revision
before the canary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.quotas.models import UsageRecord
from apps.registry.models import Alias, AliasRevision, ChangeRequest, ChangeStatus, Deployment
from apps.registry.services import alias_rollback, alias_set_routes
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope

from .models import MinistryRun, Promotion, PromotionState, Run
from .permissions import require_edit

ERROR_STATUSES = ("error", "interrupted")


def canary_routes(alias: Alias, deployment: Deployment, percent: int) -> list[tuple[Deployment, int]]:
    """The current routes scaled to ``100 - percent`` in total, plus ``percent`` for the candidate."""
    if not 1 <= percent <= 99:
        raise ValidationError(_("カナリアの割合は1〜99パーセントで指定してください。"))
    current = []
    if alias.current_revision is not None:
        current = [
            (r.deployment, r.weight)
            for r in alias.current_revision.routes.select_related("deployment__model")
            if r.deployment_id != deployment.pk and r.weight > 0
        ]
    total = sum(w for _d, w in current)
    if total <= 0:
        raise ValidationError(_("このエイリアスには現在の経路がないため、カナリアにできません。"))
    rest = 100 - percent
    scaled = [(d, max(1, round(w * rest / total))) for d, w in current]
    return [*scaled, (deployment, percent)]


def _audit(actor: Any, promotion: Promotion, action: str, **data: Any) -> None:
    audit_record(
        actor=actor,
        action=f"evaluation.promotion.{action}",
        target_type="promotion",
        target_id=promotion.pk,
        data={"alias": promotion.alias.name, "deployment": promotion.deployment.name, **data},
    )


@transaction.atomic
def promotion_start(
    *,
    actor: Any,
    alias: Alias,
    deployment: Deployment,
    percent: int,
    reason: str,
    run: Run | MinistryRun | None = None,
    max_error_rate: float = 0.05,
    max_p95_latency_ms: int = 10_000,
    window_minutes: int = 30,
    min_requests: int = 20,
) -> Promotion:
    """Give ``deployment`` ``percent`` % of ``alias``'s traffic (or propose it for approval)."""
    require_edit(actor)
    # Lock the alias first: two officers starting canaries at once are serialised here.
    alias = Alias.objects.select_for_update().get(pk=alias.pk)
    if Promotion.objects.filter(
        alias=alias, state__in=[PromotionState.CANARY, PromotionState.AWAITING_APPROVAL]
    ).exists():
        raise ValidationError(
            _("このエイリアスには進行中のカナリアがあります。先に完了かロールバックをしてください。")
        )
    if not 0 < max_error_rate <= 1 or window_minutes < 1 or max_p95_latency_ms < 1:
        raise ValidationError(_("しきい値が正しくありません。"))
    alias = Alias.objects.select_related("current_revision").get(pk=alias.pk)
    routes = canary_routes(alias, deployment, percent)
    outcome = alias_set_routes(actor=actor, alias=alias, routes=routes, reason=reason)
    promotion = Promotion(
        alias=alias,
        deployment=deployment,
        run=run if isinstance(run, Run) else None,
        ministry_run_id=run.pk if isinstance(run, MinistryRun) else None,
        percent=percent,
        max_error_rate=max_error_rate,
        max_p95_latency_ms=max_p95_latency_ms,
        window_minutes=window_minutes,
        min_requests=min_requests,
        created_by=actor,
    )
    if isinstance(outcome, ChangeRequest):
        promotion.state = PromotionState.AWAITING_APPROVAL
        promotion.change_request = outcome
    else:
        promotion.state = PromotionState.CANARY
        promotion.canary_revision = outcome.number
        promotion.canary_started_at = timezone.now()
    promotion.save()
    _audit(
        actor,
        promotion,
        "start",
        percent=percent,
        state=promotion.state,
        reason=reason,
        run=promotion.run_id,
        ministry_run=promotion.ministry_run_id,
    )
    return promotion


def _is_current(promotion: Promotion) -> bool:
    alias = Alias.objects.select_related("current_revision").get(pk=promotion.alias_id)
    return alias.current_revision is not None and alias.current_revision.number == promotion.canary_revision


@transaction.atomic
def promotion_full(*, actor: Any, promotion: Promotion, reason: str) -> Promotion:
    """Canary → full: the candidate takes all of the alias's traffic."""
    require_edit(actor)
    promotion = (
        Promotion.objects.select_for_update().select_related("alias", "deployment").get(pk=promotion.pk)
    )
    if promotion.state != PromotionState.CANARY or not _is_current(promotion):
        raise ValidationError(_("カナリア中のプロモーションだけを全面切替できます。"))
    outcome = alias_set_routes(
        actor=actor, alias=promotion.alias, routes=[(promotion.deployment, 100)], reason=reason
    )
    if not isinstance(outcome, AliasRevision):
        # Not expected (the candidate already has traffic, so four-eyes has nothing new to
        # approve), but if the registry asks for approval, the promotion waits for it.
        promotion.state = PromotionState.AWAITING_APPROVAL
        promotion.change_request = outcome
        promotion.save(update_fields=["state", "change_request", "updated_at"])
        _audit(actor, promotion, "full_proposed", change_request=outcome.pk, reason=reason)
        return promotion
    promotion.state = PromotionState.FULL
    promotion.save(update_fields=["state", "updated_at"])
    _audit(actor, promotion, "full", revision=outcome.number, reason=reason)
    return promotion


def _rollback(actor: Any, promotion: Promotion, *, reason: str, action: str, **data: Any) -> Promotion:
    if not _is_current(promotion):
        # Someone changed the alias since: rolling back one step would undo *their* change.
        promotion.state = PromotionState.ENDED
        promotion.detail = _("カナリア後にエイリアスの経路が変更されたため、監視を終了しました。")
        promotion.save(update_fields=["state", "detail", "updated_at"])
        _audit(actor, promotion, "ended", **data)
        return promotion
    outcome = alias_rollback(actor=actor, alias=promotion.alias, reason=reason)
    promotion.state = PromotionState.ROLLED_BACK
    promotion.detail = reason[:500]
    promotion.save(update_fields=["state", "detail", "updated_at"])
    revision = outcome.number if isinstance(outcome, AliasRevision) else None
    _audit(actor, promotion, action, revision=revision, reason=reason, **data)
    return promotion


@transaction.atomic
def promotion_rollback(*, actor: Any, promotion: Promotion, reason: str) -> Promotion:
    """A person rolls the canary back (the registry applies its own four-eyes rule)."""
    require_edit(actor)
    promotion = (
        Promotion.objects.select_for_update().select_related("alias", "deployment").get(pk=promotion.pk)
    )
    if promotion.state != PromotionState.CANARY:
        raise ValidationError(_("カナリア中のプロモーションだけをロールバックできます。"))
    return _rollback(actor, promotion, reason=reason or _("手動ロールバック"), action="rollback")


@dataclass(frozen=True)
class CanaryStats:
    requests: int
    errors: int
    p95_latency_ms: int | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def canary_stats(promotion: Promotion, *, now: Any = None) -> CanaryStats:
    """The canary deployment's calls through the alias since the canary began (within the window).

    UsageRecord is tenant data under RLS, so each active ministry is read inside
    its own scope; only counts and latencies leave it (no content).
    """
    now = now or timezone.now()
    since = max(promotion.canary_started_at or now, now - timedelta(minutes=promotion.window_minutes))
    requests = errors = 0
    latencies: list[int] = []
    for ministry_id in Ministry.objects.filter(active=True).values_list("pk", flat=True):
        with ministry_scope(ministry_id=ministry_id):
            rows = UsageRecord.objects.filter(
                deployment_id=promotion.deployment_id,
                alias_name=promotion.alias.name,
                created_at__gte=since,
            ).exclude(status="refused")
            for status, latency in rows.values_list("status", "latency_ms"):
                requests += 1
                errors += status in ERROR_STATUSES
                latencies.append(latency)
    latencies.sort()
    p95 = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)] if latencies else None
    return CanaryStats(requests=requests, errors=errors, p95_latency_ms=p95)


def _sync_approval(promotion: Promotion) -> None:
    """A proposed canary starts when its ChangeRequest is applied, ends when rejected."""
    request = promotion.change_request
    if request is None or request.status == ChangeStatus.PENDING:
        return
    if request.status == ChangeStatus.APPLIED:
        alias = Alias.objects.select_related("current_revision").get(pk=promotion.alias_id)
        revision = alias.current_revision
        weighted = (
            set(revision.routes.filter(weight__gt=0).values_list("deployment_id", flat=True))
            if revision
            else set()
        )
        # An approved full switch (only the candidate has traffic) is done; anything else is the canary.
        promotion.state = (
            PromotionState.FULL if weighted == {promotion.deployment_id} else PromotionState.CANARY
        )
        promotion.canary_revision = revision.number if revision else None
        promotion.canary_started_at = request.decided_at or timezone.now()
    else:
        promotion.state = PromotionState.REJECTED
    promotion.save()
    _audit(None, promotion, "approval", state=promotion.state, change_request=request.pk)


@transaction.atomic
def promotion_check(*, promotion: Promotion, now: Any = None) -> Promotion:
    """One watch step: start an approved canary, or roll back one over its thresholds."""
    promotion = (
        Promotion.objects.select_for_update(of=("self",))
        .select_related("alias", "deployment", "change_request")
        .get(pk=promotion.pk)
    )
    if promotion.state == PromotionState.AWAITING_APPROVAL:
        _sync_approval(promotion)
        return promotion
    if promotion.state != PromotionState.CANARY:
        return promotion
    stats = canary_stats(promotion, now=now)
    if stats.requests < promotion.min_requests:
        return promotion
    too_many_errors = stats.error_rate > promotion.max_error_rate
    too_slow = stats.p95_latency_ms is not None and stats.p95_latency_ms > promotion.max_p95_latency_ms
    if not (too_many_errors or too_slow):
        return promotion
    reason = _(
        "自動ロールバック: カナリアのエラー率 %(rate).1f%%（上限 %(max).1f%%）、"
        "p95 %(p95)s ms（上限 %(lat)d ms）"
    ) % {
        "rate": 100 * stats.error_rate,
        "max": 100 * promotion.max_error_rate,
        "p95": stats.p95_latency_ms,
        "lat": promotion.max_p95_latency_ms,
    }
    return _rollback(
        None,
        promotion,
        reason=reason,
        action="auto_rollback",
        requests=stats.requests,
        errors=stats.errors,
        p95_latency_ms=stats.p95_latency_ms,
    )


def promotion_watch_all(*, now: Any = None) -> dict[str, int]:
    checked = rolled_back = 0
    for promotion in Promotion.objects.filter(
        state__in=[PromotionState.CANARY, PromotionState.AWAITING_APPROVAL]
    ).order_by("pk"):
        checked += 1
        if promotion_check(promotion=promotion, now=now).state == PromotionState.ROLLED_BACK:
            rolled_back += 1
    return {"checked": checked, "rolled_back": rolled_back}
