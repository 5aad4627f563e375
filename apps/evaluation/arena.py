"""The blind arena: a staff prompt answered by two anonymous aliases, then a vote.

Security: candidates are drawn only from the aliases the voter's ministry may
use (its AliasGrant allowlist) that can take the prompt's 機密性 level, and
both calls go through ``plan_route`` (allowlist + classification gate again).
A model granted only to ministry A is therefore never shown to, nor voted on
by, staff of B; the vote re-checks both grants. Battles and votes are
TenantModels (the prompt is ministry content).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.quotas.services import usage_record_create
from apps.registry.models import Alias
from apps.registry.router import RouteRefused, allowed_aliases, plan_route
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


async def _both(plans: list[Any], prompt: str) -> list[CallResult]:
    messages = [{"role": "user", "content": prompt}]
    try:
        return list(await asyncio.gather(*(call(p, messages=messages, max_tokens=MAX_TOKENS) for p in plans)))
    finally:
        await close_clients(plans)


def arena_battle_create(
    *, actor: Any, prompt: str, level: int, rng: random.Random | None = None
) -> ArenaBattle:
    """Draw two different allowed aliases, answer the prompt with both, save the battle.

    The model calls run before any transaction is opened (invariant 10).
    """
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
        plans = [plan_route(alias_name=name, level=level) for name in (name_a, name_b)]
    except RouteRefused as exc:
        raise ValidationError(exc.message) from None
    results = asyncio.run(_both(plans, prompt))
    for plan, result in zip(plans, results, strict=True):
        usage_record_create(
            alias_name=plan.alias.name,
            status="error" if result.error else "ok",
            user_id=actor.pk,
            deployment_id=plan.candidates[0].id,
            revision=plan.alias.revision_number,
            endpoint="arena",
            level=level,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            ttft_ms=result.ttft_ms,
            latency_ms=result.latency_ms,
            detail=result.error[:200],
            feature="eval",
        )
    aliases = {a.name: a for a in Alias.objects.filter(name__in=[name_a, name_b])}
    a, b = results
    battle: ArenaBattle = ArenaBattle.objects.create(
        ministry_id=current_ministry_id(),
        user=actor,
        prompt=prompt,
        level=level,
        alias_a=aliases[name_a],
        alias_b=aliases[name_b],
        answer_a=a.output,
        answer_b=b.output,
        error_a="" if not a.error else _("回答を取得できませんでした。"),
        error_b="" if not b.error else _("回答を取得できませんでした。"),
    )
    return battle


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
