"""The blind arena: a staff prompt answered by two anonymous aliases, then a vote.

Security: candidates are drawn only from the aliases the voter's ministry may
use (its AliasGrant allowlist) that can take the prompt's 機密性 level, and
both calls go through ``plan_route`` (allowlist + classification gate again).
Both calls are admitted like a chat answer (reserve on every budget and rate
level before any model is called, settle to what was produced afterwards,
also when the request fails or is cancelled): a user whose budget is used up
gets no answers from the arena either.
A model granted only to ministry A is therefore never shown to, nor voted on
by, staff of B; the vote re-checks both grants. Battles and votes are
TenantModels (the prompt is ministry content).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.chat import quota as chat_quota
from apps.quotas import admission
from apps.quotas.admission_types import QuotaExceeded, Reservation
from apps.quotas.pricing import cost_yen
from apps.quotas.services import usage_record_create
from apps.registry.models import Alias
from apps.registry.router import RoutePlan, RouteRefused, allowed_aliases, plan_route
from apps.registry.snapshot import get_snapshot
from apps.tenancy.scope import current_ministry_id

from .calls import CallResult, call, close_clients
from .models import ArenaBattle, ArenaOutcome, ArenaVote

MAX_PROMPT_CHARS = 8000
MAX_TOKENS = 512
_rng = random.SystemRandom()


def arena_candidates(*, level: int) -> list[str]:
    """Alias names the active ministry may use at ``level`` (chat aliases only)."""
    return [a.name for a in allowed_aliases(level=level) if a.kind == "chat"]


@dataclass(frozen=True)
class ArenaDraw:
    """Two routed candidates for one prompt (no database object: it crosses the async gap)."""

    prompt: str
    level: int
    plans: tuple[RoutePlan, RoutePlan]
    # One reservation per call (admission), and the max_tokens each was reserved for.
    reservations: tuple[Reservation, ...] = ()
    max_tokens: tuple[int, ...] = ()


def arena_draw(*, actor: Any, prompt: str, level: int, rng: random.Random | None = None) -> ArenaDraw:
    """Validate and draw two different allowed aliases; inside the actor's ministry scope."""
    prompt = prompt.strip()
    if not prompt or len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(_("質問を1〜%(n)d文字で入力してください。") % {"n": MAX_PROMPT_CHARS})
    if level not in (1, 2, 3):
        raise ValidationError(_("機密性を選んでください。"))
    names = arena_candidates(level=level)
    if len(names) < 2:
        raise ValidationError(_("この機密性で比較できるモデルが2つ以上ありません。"))
    name_a, name_b = (rng or _rng).sample(names, 2)
    try:
        plans = (plan_route(alias_name=name_a, level=level), plan_route(alias_name=name_b, level=level))
    except RouteRefused as exc:
        raise ValidationError(exc.message) from None
    return _admit(ArenaDraw(prompt=prompt, level=level, plans=plans), actor=actor)


def _admit(draw: ArenaDraw, *, actor: Any) -> ArenaDraw:
    """Security: reserve both calls on every level before any model is called (or refuse)."""
    ministry_id = current_ministry_id()
    assert ministry_id is not None
    messages = [{"role": "user", "content": draw.prompt}]
    reservations: list[Reservation] = []
    caps: list[int] = []
    try:
        for plan in draw.plans:
            charge, capped = chat_quota.charge_for(
                ministry_id=ministry_id,
                user=actor,
                plan=plan,
                messages=messages,
                max_tokens=MAX_TOKENS,
                feature="eval",
            )
            reservations.append(
                admission.reserve(
                    subject=charge.subject,
                    prompt_tokens=charge.prompt_tokens,
                    max_tokens=capped,
                    request_id=charge.request_id,
                    price=charge.price_per_1m,
                )
            )
            caps.append(capped)
    except QuotaExceeded as exc:
        _release(reservations)  # the first call was admitted, the second not: give it back
        raise ValidationError(chat_quota.refusal_text(exc)) from None
    return replace(draw, reservations=tuple(reservations), max_tokens=tuple(caps))


def arena_release(draw: ArenaDraw) -> None:
    """Settle any reservation not settled yet to nothing (a failed or cancelled ask); idempotent."""
    _release(draw.reservations)


def _release(reservations: Iterable[Reservation]) -> None:
    for reservation in reservations:
        admission.settle(reservation=reservation, prompt_tokens=0, completion_tokens=0, cost_yen=Decimal(0))


async def arena_answer(draw: ArenaDraw) -> list[CallResult]:
    """Both answers, concurrently; no database connection is used (invariant 10)."""
    messages = [{"role": "user", "content": draw.prompt}]
    try:
        caps = draw.max_tokens or (MAX_TOKENS,) * len(draw.plans)
        calls = (call(p, messages=messages, max_tokens=cap) for p, cap in zip(draw.plans, caps, strict=True))
        return list(await asyncio.gather(*calls))
    finally:
        await close_clients(list(draw.plans))


def arena_battle_save(*, actor: Any, draw: ArenaDraw, results: list[CallResult]) -> ArenaBattle:
    """Record both calls' usage and the battle; inside the actor's ministry scope."""
    reservations: list[Reservation | None] = list(draw.reservations) or [None] * len(draw.plans)
    for plan, result, reservation in zip(draw.plans, results, reservations, strict=True):
        cost = cost_yen(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            deployment_id=plan.candidates[0].id,
        )
        if reservation is not None:
            admission.settle(
                reservation=reservation,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                cost_yen=cost,
            )
        usage_record_create(
            request_id=reservation.request_id if reservation is not None else None,
            cost_yen=cost,
            alias_name=plan.alias.name,
            status="error" if result.error else "ok",
            user_id=actor.pk,
            deployment_id=plan.candidates[0].id,
            revision=plan.alias.revision_number,
            endpoint="arena",
            level=draw.level,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            ttft_ms=result.ttft_ms,
            latency_ms=result.latency_ms,
            detail=result.error[:200],
            feature="eval",
        )
    aliases = {a.pk: a for a in Alias.objects.filter(pk__in=[p.alias.id for p in draw.plans])}
    a, b = results
    battle: ArenaBattle = ArenaBattle.objects.create(
        ministry_id=current_ministry_id(),
        user=actor,
        prompt=draw.prompt,
        level=draw.level,
        alias_a=aliases[draw.plans[0].alias.id],
        alias_b=aliases[draw.plans[1].alias.id],
        answer_a=a.output,
        answer_b=b.output,
        error_a="" if not a.error else _("回答を取得できませんでした。"),
        error_b="" if not b.error else _("回答を取得できませんでした。"),
    )
    return battle


def arena_battle_create(
    *, actor: Any, prompt: str, level: int, rng: random.Random | None = None
) -> ArenaBattle:
    """Draw, answer and save in one synchronous call (tests, shell). The page uses the async view,
    which holds no database connection while the models answer."""
    draw = arena_draw(actor=actor, prompt=prompt, level=level, rng=rng)
    try:
        return arena_battle_save(actor=actor, draw=draw, results=asyncio.run(arena_answer(draw)))
    finally:
        arena_release(draw)


def get_battle_for_actor(*, actor: Any, battle_id: int) -> ArenaBattle:
    """Security: only the battle's own user, inside their ministry (RLS); others get 404."""
    battle: ArenaBattle | None = (
        ArenaBattle.objects.select_related("alias_a", "alias_b").filter(pk=battle_id, user=actor).first()
    )
    if battle is None:
        raise Http404
    return battle


@transaction.atomic
def arena_vote(*, actor: Any, battle: ArenaBattle, outcome: str) -> ArenaVote:
    """One vote per battle, by the battle's user, on aliases their ministry may still use."""
    if battle.user_id != actor.pk:
        raise Http404
    if outcome not in ArenaOutcome.values:
        raise ValidationError(_("投票の選択肢が正しくありません。"))
    ministry_id = current_ministry_id()
    if ministry_id is None or battle.ministry_id != ministry_id:
        raise Http404
    granted = get_snapshot().granted_alias_ids(ministry_id)
    if battle.alias_a_id not in granted or battle.alias_b_id not in granted:
        # A grant revoked since the battle: its model is no longer this ministry's to rate.
        raise ValidationError(_("このモデルは所属府省庁で利用できなくなったため、投票できません。"))
    if ArenaVote.objects.filter(battle=battle).exists():
        raise ValidationError(_("この比較にはすでに投票しています。"))
    vote: ArenaVote = ArenaVote.objects.create(
        ministry_id=ministry_id, battle=battle, user=actor, outcome=outcome
    )
    audit_record(
        actor=actor,
        action="evaluation.arena.vote",
        target_type="arena_battle",
        target_id=battle.pk,
        ministry_id=ministry_id,
        data={"outcome": outcome},
    )
    return vote
