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

From chat (:func:`arena_battle_start`): the pair is drawn the same way at the
conversation's 機密性 level, and each side then streams over its own SSE
request through chat's machinery (:func:`arena_side_open` builds the job with
``charged_stream_job``; :mod:`.arena_stream` reserves, streams and settles):
each answer is one admitted, metered model call with its own usage record.
Names stay hidden until the vote, which waits for both answers.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.chat import quota as chat_quota
from apps.chat import services as chat_services
from apps.chat.models import Conversation, Message
from apps.chat.selectors import get_conversation_for_actor, history_for_upstream
from apps.quotas import admission
from apps.quotas.admission_types import QuotaExceeded, Reservation
from apps.quotas.pricing import cost_yen
from apps.quotas.services import usage_record_create
from apps.registry.models import Alias
from apps.registry.router import RoutePlan, RouteRefused, allowed_aliases, plan_route
from apps.registry.snapshot import get_snapshot
from apps.tenancy.scope import current_ministry_id, ministry_scope

from .arena_models import SIDES, ArenaStream, SideStatus
from .calls import CallResult, call, close_clients
from .models import ArenaBattle, ArenaOutcome, ArenaVote

MAX_PROMPT_CHARS = 8000
MAX_TOKENS = 512
#: How long an unvoted blind comparison hides the per-model budget lines of the chat sidebar
#: (:func:`arena_blinds_meter`). A battle that can never be voted on (a side without an answer)
#: keeps its names secret for good; the meter shows the per-model lines again after this.
METER_BLIND_HOURS = 24
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


def arena_blinds_meter(*, actor: Any) -> bool:
    """Whether the actor has a blind comparison not voted on yet (active ministry scope).

    Security: a per-model (alias) budget line of the chat sidebar's meter moves when that
    model answers; while a comparison is unvoted the meter must not show any per-model line
    (nor a notice about one), or it tells the voter which models answered. Hiding only the
    battle's two models would name them by their absence, so all per-model lines go.
    """
    if getattr(actor, "pk", None) is None:
        return False
    since = timezone.now() - timedelta(hours=METER_BLIND_HOURS)
    return ArenaBattle.objects.filter(user_id=actor.pk, created_at__gte=since, vote__isnull=True).exists()


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
    stream = ArenaStream.objects.select_for_update().filter(battle=battle).first()
    # Security: one vote per battle, also for two requests at the same moment. The battle row is
    # locked too (after the stream row: the order arena_side_finish takes them in), so a second
    # vote waits for the first to commit and is refused below, not by the unique constraint (500).
    ArenaBattle.objects.select_for_update().filter(pk=battle.pk).values_list("pk", flat=True).first()
    # Security: a chat battle's stream row goes with its conversation (cascade); a battle left
    # without one and without an answer or error on a side was never answered (no model call,
    # nothing metered) and is not voted on, nor are its names revealed.
    unanswered = not (battle.answer_a or battle.error_a) or not (battle.answer_b or battle.error_b)
    if (stream is not None and not stream.finished) or (stream is None and unanswered):
        raise ValidationError(_("両方の回答が出そろってから投票してください。"))
    if stream is not None:
        battle.refresh_from_db(fields=["answer_a", "answer_b"])
        if not (battle.answer_a and battle.answer_b):
            # Security: a side refused before any model was called (a used-up budget or a
            # rate limit, a route refused) says nothing about the model: no ballot for it, so
            # a user past their limits cannot keep voting without answers (nor see the names).
            raise ValidationError(_("回答がそろわなかったため、この比較には投票できません。"))
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


# --- From chat: both answers streamed side by side ------------------------------------

#: A side claimed by a stream but not finished for this long lost its stream (process died).
STALE_SIDE_SECONDS = 5 * 60


def _validate_prompt(prompt: str) -> str:
    prompt = (prompt or "").replace("\r\n", "\n").strip()
    if not prompt or len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(_("質問を1〜%(n)d文字で入力してください。") % {"n": MAX_PROMPT_CHARS})
    return prompt


@transaction.atomic
def arena_battle_start(
    *, actor: Any, conversation: Conversation, prompt: str, rng: random.Random | None = None
) -> ArenaBattle:
    """A blind comparison asked from ``conversation``: draw two aliases, save the battle to stream.

    Security: inside the actor's ministry scope; the conversation is re-fetched
    for the actor (404 for anyone else's). Both candidates come from the
    aliases the ministry may use at the *conversation's* 機密性 level, and both
    pass ``plan_route`` (allowlist + classification gate) now and again when
    each side streams. Nothing is called here: each side is admitted and
    charged in its own stream.
    """
    conversation = get_conversation_for_actor(actor=actor, conversation_id=conversation.pk)
    text = _validate_prompt(prompt)
    names = arena_candidates(level=conversation.level)
    if len(names) < 2:
        raise ValidationError(_("この会話の機密性で比較できるモデルが2つ以上ありません。"))
    name_a, name_b = (rng or _rng).sample(names, 2)
    try:
        plans = [plan_route(alias_name=name, level=conversation.level) for name in (name_a, name_b)]
    except RouteRefused as exc:
        raise ValidationError(exc.message) from None
    aliases = {a.pk: a for a in Alias.objects.filter(pk__in=[p.alias.id for p in plans])}
    battle: ArenaBattle = ArenaBattle.objects.create(
        ministry_id=conversation.ministry_id,
        user=actor,
        prompt=text,
        level=conversation.level,
        alias_a=aliases[plans[0].alias.id],
        alias_b=aliases[plans[1].alias.id],
    )
    ArenaStream.objects.create(ministry_id=conversation.ministry_id, battle=battle, conversation=conversation)
    conversation.save(update_fields=["updated_at"])
    audit_record(
        actor=actor,
        action="evaluation.arena.ask",
        target_type="arena_battle",
        target_id=battle.pk,
        ministry_id=conversation.ministry_id,
        data={"conversation": conversation.pk, "level": conversation.level},
    )
    return battle


@transaction.atomic
def arena_conversation_start(*, actor: Any, alias_name: str, level: Any, content: str) -> Conversation:
    """A new conversation whose first question is a blind comparison (all or nothing).

    The conversation is created as chat creates it (its own model checked
    against the allowlist and the level), then the pair is drawn at its level;
    if none exists nothing is kept, and the form shows the reason with the text.
    """
    text = chat_services.validate_content(content)
    conversation = chat_services.conversation_create(
        actor=actor, alias_name=alias_name, level=level, title=chat_services.title_from(text)
    )
    arena_battle_start(actor=actor, conversation=conversation, prompt=text)
    return conversation


def arena_streams_for(*, conversation: Conversation) -> list[ArenaStream]:
    """The battles asked from ``conversation`` (the owner's own: the caller fetched it for them)."""
    arena_reap_stale(conversation=conversation)
    return list(
        ArenaStream.objects.filter(conversation=conversation)
        .select_related("battle", "battle__alias_a", "battle__alias_b", "battle__vote")
        .order_by("created_at", "id")
    )


def arena_reap_stale(*, conversation: Conversation) -> int:
    """Mark sides whose stream died without a trace (claimed long ago, never finished) interrupted."""
    cutoff = timezone.now() - timedelta(seconds=STALE_SIDE_SECONDS)
    rows = ArenaStream.objects.filter(conversation=conversation, updated_at__lt=cutoff)
    reaped = 0
    for side in SIDES:
        reaped += rows.filter(
            **{f"status_{side}": SideStatus.STREAMING, f"started_{side}_at__isnull": False}
        ).update(**{f"status_{side}": SideStatus.INTERRUPTED, "updated_at": timezone.now()})
    return reaped


def get_stream_for_actor(*, actor: Any, battle_id: int) -> ArenaStream:
    """Security: the chat battle of the actor (their own, in their ministry: RLS); others get 404."""
    battle = get_battle_for_actor(actor=actor, battle_id=battle_id)
    stream: ArenaStream | None = ArenaStream.objects.filter(battle=battle).first()
    if stream is None:
        raise Http404
    stream.battle = battle
    return stream


@dataclass(frozen=True)
class SideReplay:
    """Nothing to stream for this side (claimed elsewhere, finished or refused)."""

    battle_id: int
    side: str


def _side(side: str) -> str:
    if side not in SIDES:
        raise Http404
    return side


def arena_side_open(
    *, ministry_id: int, actor: Any, battle_id: int, side: str
) -> chat_services.StreamJob | SideReplay:
    """Authorise and claim one side of a chat battle; the job is chat's, charged like a chat answer.

    Exactly one caller ever claims a side, so a reload or a reconnecting
    EventSource never calls the model twice. The messages are the
    conversation's history as it was when the battle was asked, then the
    question. Security: the route is planned again now (a grant revoked or a
    level no longer cleared since the ask ends the side as an error).
    """
    side = _side(side)
    with ministry_scope(ministry_id=ministry_id):
        stream = get_stream_for_actor(actor=actor, battle_id=battle_id)
        battle = stream.battle
        now = timezone.now()
        claimed = ArenaStream.objects.filter(
            pk=stream.pk, **{f"status_{side}": SideStatus.STREAMING, f"started_{side}_at__isnull": True}
        ).update(**{f"started_{side}_at": now, "updated_at": now})
        if not claimed:
            return SideReplay(battle_id=battle.pk, side=side)
        alias = battle.alias_a if side == "a" else battle.alias_b
        try:
            plan = plan_route(alias_name=alias.name, level=battle.level)
        except RouteRefused:
            _side_save(stream_id=stream.pk, battle=battle, side=side, content="", status=SideStatus.ERROR)
            return SideReplay(battle_id=battle.pk, side=side)
        conversation = stream.conversation
        context_window = min((d.context_window for d in plan.candidates), default=4096)
        before = Message.objects.filter(
            conversation=conversation, created_at__lte=battle.created_at
        ).aggregate(last=Max("id"))["last"]
        history = (
            history_for_upstream(
                conversation=conversation,
                before_message_id=before + 1,
                max_chars=max(context_window - len(battle.prompt), 1000),
            )
            if before is not None
            else []
        )
        return chat_services.charged_stream_job(
            ministry_id=ministry_id,
            actor=actor,
            conversation_id=conversation.pk,
            message_id=0,  # no chat message: the answer is the battle's (arena_side_finish)
            plan=plan,
            messages=[*history, {"role": "user", "content": battle.prompt}],
            feature="eval",
        )


def _side_save(
    *, stream_id: int, battle: ArenaBattle, side: str, content: str, status: str, reason: str = ""
) -> None:
    # Before the vote no upstream, routing or limit detail is shown: it could name the model.
    error = ""
    if status == SideStatus.ERROR:
        error = (
            _("利用上限（予算または回数の制限）に達したため、回答を取得できませんでした。")
            if reason == "quota"
            else _("回答を取得できませんでした。")
        )
    ArenaBattle.objects.filter(pk=battle.pk).update(**{f"answer_{side}": content, f"error_{side}": error})
    ArenaStream.objects.filter(pk=stream_id).update(
        **{f"status_{side}": status, "updated_at": timezone.now()}
    )


def arena_side_finish(
    *,
    ministry_id: int,
    battle_id: int,
    side: str,
    content: str,
    status: str,
    ledger: dict[str, Any] | None,
    reason: str = "",
) -> None:
    """Save one side's final answer and its usage record (one database hop, own scope).

    The stream row is locked first, so the two sides finishing at the same
    moment are written one after the other and the second sees both final.
    """
    side = _side(side)
    with ministry_scope(ministry_id=ministry_id), transaction.atomic():
        stream = ArenaStream.objects.select_for_update().select_related("battle").get(battle_id=battle_id)
        if stream.status(side) == SideStatus.STREAMING:
            _side_save(
                stream_id=stream.pk,
                battle=stream.battle,
                side=side,
                content=content,
                status=status,
                reason=reason,
            )
        if ledger is not None:
            usage_record_create(**ledger)
