"""Chat and cited answers under the ministry's budgets and limits (:mod:`apps.quotas.admission`).

Every answer the chat relay streams (staff chat, and RAG answers, which use the
same relay) is:

1. **charged** on the request side (:func:`charge_for`, sync, inside the
   ministry scope): who pays (the user, their teams, the ministry), the
   counted prompt tokens (:func:`apps.quotas.tokens.count_prompt_tokens`), the
   ``max_tokens`` lowered to every level's cap, and a price per 1M tokens for
   the yen estimate (the most expensive of the deployments the router may use);
2. **reserved** in the relay before the router is called
   (:func:`apps.quotas.admission.areserve`); a refusal becomes an explained
   error on the answer, never a half answer;
3. **settled** to what was produced, in the relay's ``finally`` — complete,
   upstream error, stop button or client gone — together with exactly one
   ledger row (:func:`apps.quotas.services.usage_record_create`, ``feature``
   ``chat`` or ``rag``) written in the same database hop as the final message.

Before anything is saved, :func:`precheck` refuses a new message when a month
budget above the user is already used up (HTTP 429 on the non-streaming POST,
so the user keeps the text they typed and nothing is persisted). Rate and
concurrency limits can only be known at reservation time, in the stream.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import formats, timezone
from django.utils.translation import gettext as _

from apps.quotas import admission
from apps.quotas.admission import QuotaExceeded, Reservation, Subject, areserve
from apps.quotas.pricing import deployment_cost
from apps.quotas.route_charge import plan_price_per_1m, plan_zone, reserve_or_release
from apps.quotas.tokens import count_prompt_tokens
from apps.registry.router import RoutePlan

logger = logging.getLogger("gennai.chat")


@dataclass(frozen=True)
class Charge:
    """What one answer is charged to and the estimate to reserve (no ORM objects: crosses into async)."""

    subject: Subject
    feature: str  # "chat", "rag" or "app"
    request_id: str
    prompt_tokens: int
    max_tokens: int
    price_per_1m: Decimal | None

    @property
    def team_id(self) -> int | None:
        """The team the ledger row is charged to: the user's first team, if any."""
        return self.subject.team_ids[0] if self.subject.team_ids else None


async def reserve(charge: Charge, *, on_cancel: Callable[[Reservation], Awaitable[None]]) -> Reservation:
    """Reserve ``charge``'s estimate before the model is called (step 2 above).

    Raises :class:`QuotaExceeded` when a level refuses. A client leaving while
    the script runs cannot leak the reservation: it is handed to ``on_cancel``
    (which settles it to nothing) and the cancellation goes on
    (:func:`apps.quotas.route_charge.reserve_or_release`). One place for the
    chat relay and the arena's sides.
    """
    return await reserve_or_release(
        areserve(
            subject=charge.subject,
            prompt_tokens=charge.prompt_tokens,
            max_tokens=charge.max_tokens,
            request_id=charge.request_id,
            price=charge.price_per_1m,
        ),
        on_cancel,
    )


@dataclass
class QuotaRefused(Exception):
    """A new message refused before anything was saved (the POST answers 429)."""

    message: str
    retry_after: int

    def __str__(self) -> str:
        return self.message


def charge_for(
    *,
    ministry_id: int,
    user: Any,
    plan: RoutePlan,
    messages: list[dict[str, Any]],
    max_tokens: int,
    feature: str,
) -> tuple[Charge, int]:
    """The charge of an answer about to stream, and the ``max_tokens`` to send (capped by the limits).

    Sync, called inside ``ministry_scope(ministry_id)``: the user's teams are
    read there (ORM scope and RLS), so another ministry's teams never apply.
    """
    from apps.tenancy.models import TeamMembership
    from apps.tenancy.scope import ScopeError, current_ministry_id

    if current_ministry_id() != ministry_id:
        raise ScopeError("charge_for runs inside the answer's ministry scope")
    # admission.subject_for_user, without entering the scope a second time (one query, not five).
    team_ids = TeamMembership.objects.filter(user_id=user.pk).values_list("team_id", flat=True)
    subject = Subject(
        ministry_id=ministry_id,
        user_id=int(user.pk),
        api_key_id=None,
        team_ids=tuple(sorted(team_ids)),
        alias_name=plan.alias.name,
        zone=plan_zone(plan),
    )
    capped = max(admission.cap_max_tokens(subject=subject, requested=None, default=max_tokens), 1)
    model_name = plan.candidates[0].model_name if plan.candidates else None
    prompt_tokens, _estimated = count_prompt_tokens(messages=messages, model_name=model_name)
    charge = Charge(
        subject=subject,
        feature=feature,
        request_id=uuid.uuid4().hex,
        prompt_tokens=prompt_tokens,
        max_tokens=capped,
        price_per_1m=plan_price_per_1m(plan),
    )
    return charge, capped


# --- Messages ---------------------------------------------------------------------------


def next_reset(now: datetime | None = None) -> datetime:
    """The start of next month in the platform's time zone (when month budgets start over)."""
    local = timezone.localtime(now)
    return (local.replace(day=28) + timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )


def refusal_text(exc: QuotaExceeded, *, now: datetime | None = None) -> str:
    """Admission's explanation, plus when a month budget resets (rate limits say their seconds)."""
    if exc.kind != "budget":
        return exc.message
    when = formats.date_format(next_reset(now), "DATETIME_FORMAT")
    return _("%(reason)s 上限は %(when)s（日本時間）にリセットされます。") % {
        "reason": exc.message,
        "when": when,
    }


def precheck(*, ministry_id: int, user_id: int, alias_name: str) -> None:
    """Raise :class:`QuotaRefused` if a month budget above the user is already used up.

    Advisory only (admission in the stream is what enforces): it reads the
    counters the admission script keeps (:func:`admission.budget_status`),
    which are empty when Redis is unreachable — then the stream decides.
    """
    lines = admission.budget_status(ministry_id=ministry_id, user_id=user_id, alias_name=alias_name)
    full = [line for line in lines if line.fraction is not None and line.fraction >= 1.0]
    if not full:
        return
    level = full[0].level
    retry_after = max(int((next_reset() - timezone.now()).total_seconds()), 1)
    exc = QuotaExceeded(level=level, kind="budget", retry_after=retry_after, alias=full[0].alias_name)
    raise QuotaRefused(message=refusal_text(exc), retry_after=retry_after)


def budget_meter(*, ministry_id: int, user_id: int) -> list[dict[str, Any]]:
    """The user's month budgets for the sidebar meter: level, percent used, used and limit."""
    lines = admission.budget_status(ministry_id=ministry_id, user_id=user_id)
    out = []
    for line in lines:
        fraction = line.fraction
        if fraction is None:
            continue
        out.append(
            {
                "level": line.level,
                "alias": line.alias_name,
                "percent": min(int(fraction * 100), 100),
                "used_tokens": line.used_tokens + line.held_tokens,
                "limit_tokens": line.limit_tokens,
                "used_yen": line.used_yen,
                "limit_yen": line.limit_yen,
                "warning": fraction >= 0.8,
            }
        )
    # The tightest budget first: it is the one that will stop the user.
    return sorted(out, key=lambda row: -row["percent"])


# --- Settling ------------------------------------------------------------------------------

#: Final message status → usage record status.
USAGE_STATUS = {"complete": "ok", "interrupted": "interrupted", "error": "error", "refused": "refused"}


@dataclass(frozen=True)
class Outcome:
    """What an answer consumed: its ledger row (kwargs of ``usage_record_create``) and cost."""

    ledger: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    cost_yen: Decimal


def outcome_for(
    *,
    charge: Charge,
    plan: RoutePlan,
    status: str,
    deployment_id: int | None,
    usage_fields: dict[str, Any],
    ttft_ms: int | None,
    latency_ms: int,
    detail: str = "",
) -> Outcome:
    """The ledger row and the settle amounts of a finished (or refused) answer.

    ``usage_fields`` are :func:`apps.chat.services.answer_usage`'s counts: empty
    when no upstream answered, so a refused or failed-before-any-model answer
    costs nothing and settles to 0.
    """
    prompt_tokens = int(usage_fields.get("prompt_tokens") or 0)
    completion_tokens = int(usage_fields.get("completion_tokens") or 0)
    # Priced from the plan's own deployment info (no snapshot read: this runs on the event loop).
    deployment = next((d for d in plan.candidates if d.id == deployment_id), None)
    model_name = deployment.model_name if deployment is not None else ""
    cost = (
        deployment_cost(
            deployment=deployment, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
        if deployment is not None
        else Decimal(0)
    )
    ledger = {
        "alias_name": plan.alias.name,
        "status": USAGE_STATUS.get(status, "error"),
        "user_id": charge.subject.user_id,
        "deployment_id": deployment_id,
        "revision": plan.alias.revision_number or None,
        "endpoint": "chat",
        "level": plan.level,
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_estimated": bool(usage_fields.get("prompt_tokens_estimated")),
        "completion_tokens": completion_tokens,
        "ttft_ms": ttft_ms,
        "latency_ms": latency_ms,
        "detail": detail,
        "feature": charge.feature,
        "team_id": charge.team_id,
        "model_name": model_name,
        "cost_yen": cost,
        "request_id": charge.request_id,
    }
    return Outcome(ledger, prompt_tokens, completion_tokens, cost)
