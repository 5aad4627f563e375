"""Executing a run: one item at a time, each saved as it finishes, resumable after a worker dies.

Only pending items are picked, so a redelivered task continues where the dead
worker stopped without redoing finished items. An item is written only while
still pending, so even a duplicate delivery (one run is processed by one task
chain; the lock is not held over the model call, on purpose: invariant 10)
never counts an item twice. A model call's failure and the judge's failure are
recorded on the item; the run goes on.

A ministry suite's run (:class:`~apps.evaluation.models.MinistryRun`) is read and
written only inside its ministry's scope, one short scope per database step
(never held over a model call); a platform run in plain short transactions.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.chat import quota as chat_quota
from apps.quotas import admission
from apps.quotas.admission_types import AdmissionUnavailable, QuotaExceeded, Reservation
from apps.quotas.pricing import cost_yen
from apps.quotas.services import usage_record_create
from apps.registry.router import RoutePlan, RouteRefused, plan_deployment
from apps.registry.snapshot import get_snapshot
from apps.tenancy.scope import ministry_scope

from . import metrics
from .calls import CallResult, run_call
from .models import ItemStatus, MetricKind, RunStatus
from .stores import MINISTRY_STORE, PLATFORM_STORE, store_for

JUDGE_MAX_TOKENS = 64


def _record_usage(
    run: Any, *, deployment_id: int, result: CallResult, label: str, reservation: Reservation | None
) -> Decimal:
    """Usage of one evaluation call in the charged ministry's ledger (feature ``eval``), and its
    admission reservation settled to what the call produced."""
    cost = cost_yen(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        deployment_id=deployment_id,
    )
    if reservation is not None:
        admission.settle(
            reservation=reservation,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cost_yen=cost,
        )
    with ministry_scope(ministry_id=run.charged_ministry_id):
        usage_record_create(
            request_id=reservation.request_id if reservation is not None else None,
            alias_name=label[:100],
            status="error" if result.error else "ok",
            user_id=run.created_by_id,
            deployment_id=deployment_id,
            endpoint="eval",
            level=run.suite.level,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            ttft_ms=result.ttft_ms,
            latency_ms=result.latency_ms,
            detail=result.error[:200],
            feature="eval",
            cost_yen=cost,
        )
    return cost


def _failed(error: str) -> CallResult:
    return CallResult(
        output="", ttft_ms=None, latency_ms=0, prompt_tokens=0, completion_tokens=0, error=error
    )


def _admit(
    run: Any, plan: RoutePlan, *, messages: list[dict[str, str]], max_tokens: int
) -> tuple[Reservation | None, int]:
    """Security: an evaluation call is admitted like a chat answer, in the charged ministry, for
    the officer who started the run (their, their teams' and the ministry's budgets and rate
    limits apply). A run whose creator was deleted since runs as the system, unadmitted."""
    if run.created_by is None:
        return None, max_tokens
    # A deployment is evaluated outside any alias: the limits for all aliases apply (an empty
    # alias name), not those of an alias that happens to share a name.
    unaliased = replace(plan, alias=replace(plan.alias, name=""))
    with ministry_scope(ministry_id=run.charged_ministry_id):
        charge, capped = chat_quota.charge_for(
            ministry_id=run.charged_ministry_id,
            user=run.created_by,
            plan=unaliased,
            messages=messages,
            max_tokens=max_tokens,
            feature="eval",
        )
    reservation = admission.reserve(
        subject=charge.subject,
        prompt_tokens=charge.prompt_tokens,
        max_tokens=capped,
        request_id=charge.request_id,
        price=charge.price_per_1m,
    )
    return reservation, capped


def _call(
    run: Any, deployment_id: int, *, messages: list[dict[str, str]], max_tokens: int, label: str
) -> tuple[CallResult, Decimal]:
    """Route, admit, call and record one evaluation call: every failure is a result, not an exception."""
    try:
        plan = plan_deployment(deployment_id=deployment_id, level=run.suite.level)
        reservation, capped = _admit(run, plan, messages=messages, max_tokens=max_tokens)
    except RouteRefused as exc:
        return _failed(exc.message), Decimal(0)
    except AdmissionUnavailable:
        return _failed("admission unavailable"), Decimal(0)
    except QuotaExceeded as exc:
        return _failed(chat_quota.refusal_text(exc)[:500]), Decimal(0)
    try:
        result = run_call(plan, messages=messages, max_tokens=capped)
    except BaseException:
        if reservation is not None:  # give the reservation back before the worker goes down
            admission.settle(
                reservation=reservation, prompt_tokens=0, completion_tokens=0, cost_yen=Decimal(0)
            )
        raise
    cost = _record_usage(
        run, deployment_id=deployment_id, result=result, label=label, reservation=reservation
    )
    return result, cost


def _judge(run: Any, item: Any) -> None:
    """Ask the judge deployment for a 1–5 score; a failure or an unreadable reply is recorded."""
    if run.judge_deployment_id is None:
        item.judge_error = "no judge deployment"
        return
    task = item.task
    prompt = metrics.judge_prompt(
        rubric=task.rubric, input=task.input, reference=task.reference, output=item.output
    )
    result, _cost = _call(
        run,
        run.judge_deployment_id,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=JUDGE_MAX_TOKENS,
        label="eval-judge",
    )
    item.judge_reply = result.output[:4000]
    if result.error:
        item.judge_error = result.error
        return
    score = metrics.parse_judge_score(result.output)
    if score is None:
        item.judge_error = "no 1-5 score in the judge's reply"
        return
    item.judge_score = score
    item.score = (score - 1) / 4


def execute_item(run: Any, item: Any) -> Any:
    """Answer, score and save one item (the caller picked it as pending)."""
    task = item.task
    result, item.cost_yen = _call(
        run,
        item.candidate.deployment_id,
        messages=[{"role": "user", "content": task.input}],
        max_tokens=run.max_tokens,
        label=item.candidate.label,
    )
    item.output = result.output
    item.latency_ms = result.latency_ms
    item.ttft_ms = result.ttft_ms
    item.prompt_tokens = result.prompt_tokens
    item.completion_tokens = result.completion_tokens
    item.tokens_per_s = result.tokens_per_s
    if result.error:
        item.error = result.error
        item.status = ItemStatus.ERROR
    else:
        if task.metric == MetricKind.JUDGE:
            _judge(run, item)
        else:
            item.score = metrics.REFERENCE_METRICS[task.metric](result.output, task.reference)
        item.status = ItemStatus.DONE
    item.finished_at = timezone.now()
    store = store_for(run)
    with store.scope(run):
        # Only a still-pending row is written, so a duplicate delivery cannot count an item twice.
        updated = store.item.objects.filter(pk=item.pk, status=ItemStatus.PENDING).update(
            status=item.status,
            output=item.output,
            latency_ms=item.latency_ms,
            ttft_ms=item.ttft_ms,
            prompt_tokens=item.prompt_tokens,
            completion_tokens=item.completion_tokens,
            tokens_per_s=item.tokens_per_s,
            cost_yen=item.cost_yen,
            score=item.score,
            judge_score=item.judge_score,
            judge_reply=item.judge_reply,
            error=item.error[:500],
            judge_error=item.judge_error[:500],
            finished_at=item.finished_at,
        )
        if updated:
            store.run.objects.filter(pk=run.pk).update(done=F("done") + 1)
    return item


def _next_pending(run: Any) -> Any:
    store = store_for(run)
    with store.scope(run):
        return (
            store.item.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("task", "candidate")
            .filter(run=run, status=ItemStatus.PENDING)
            .order_by("task__position", "candidate__position")
            .first()
        )


def execute_run(run_id: int, *, limit: int | None = None, ministry_id: int | None = None) -> bool:
    """Answer up to ``limit`` pending items of the run; True when none is left (run complete).

    ``ministry_id``: the run is a ministry suite's run of that ministry (else a platform run).
    """
    store = MINISTRY_STORE if ministry_id is not None else PLATFORM_STORE

    def scope() -> Any:
        return ministry_scope(ministry_id=ministry_id) if ministry_id is not None else transaction.atomic()

    with scope():
        run = store.run.objects.select_related("suite", "created_by").get(pk=run_id)
        if run.status == RunStatus.COMPLETE:
            return True
        store.run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(status=RunStatus.RUNNING)
    get_snapshot()  # warm the routing snapshot once, not per item
    answered = 0
    while limit is None or answered < limit:
        item = _next_pending(run)
        if item is None:
            break
        execute_item(run, item)
        answered += 1
    with scope():
        if store.item.objects.filter(run=run, status=ItemStatus.PENDING).exists():
            return False
        store.run.objects.filter(pk=run.pk).exclude(status=RunStatus.COMPLETE).update(
            status=RunStatus.COMPLETE, finished_at=timezone.now()
        )
    return True
