"""Writes of conversations and messages.

Request-side services (``conversation_*``, ``message_send``, ``message_regenerate``,
``message_stop``) run inside the request's ministry scope, set by the middleware
from the user's membership.

Stream-side services (``stream_open``, ``message_stream_update``) are called
from the async stream view through ``apps.tenancy.connections.db_hop`` (which
gives the connection back after each call) *after* the middleware's scope has
ended (a streaming body is consumed after the middleware returns), so they
take ``ministry_id`` — captured from ``request.membership`` before the body
starts — and enter :func:`~apps.tenancy.scope.ministry_scope` themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone
from django.utils.text import Truncator
from django.utils.translation import gettext as _

from apps.audit.services import audit_record
from apps.quotas.services import usage_record_create
from apps.quotas.tokens import count_prompt_tokens
from apps.registry.providers.base import ChatRequest
from apps.registry.router import RoutePlan, RouteRefused, allowed_aliases, plan_route
from apps.tenancy.scope import ministry_scope

from . import quota
from .conf import MAX_LEVEL, MIN_LEVEL, max_message_chars
from .models import TITLE_MAX_CHARS, Conversation, Message, Role, Status
from .selectors import get_conversation_for_actor, history_for_upstream

logger = logging.getLogger("gennai.chat")

STOP_FLAG_SECONDS = 15 * 60
# A streaming message not touched for this long has lost its stream (process died).
STALE_STREAM_SECONDS = 5 * 60
# An answer created by a send this recently but not yet connected to by its page still
# belongs to that send (the page opens its stream a moment later): a new send is refused.
# Older, it was left behind (the page was closed before it loaded) and the next send drops it.
CONNECT_GRACE_SECONDS = 30
MAX_ANSWER_TOKENS = 2048


def stop_key(message_id: int) -> str:
    """Cache key of the stop flag of assistant message ``message_id``."""
    return f"gennai:chat:stop:{message_id}"


def sticky_key(conversation: Conversation | int) -> str:
    """Router stickiness: every turn of a conversation goes to the same deployment."""
    pk = conversation if isinstance(conversation, int) else conversation.pk
    return f"conv:{pk}"


def validate_content(content: str) -> str:
    """The message text to store, or a ``ValidationError`` the user can act on."""
    text = (content or "").replace("\r\n", "\n").strip()
    if not text:
        raise ValidationError(_("メッセージを入力してください。"), code="empty")
    limit = max_message_chars()
    if len(text) > limit:
        raise ValidationError(
            _("メッセージが長すぎます（%(limit)s文字まで、現在%(count)s文字）。短くして送信してください。")
            % {"limit": f"{limit:,}", "count": f"{len(text):,}"},
            code="too_long",
        )
    return text


def validate_level(level: Any) -> int:
    try:
        value = int(level)
    except (TypeError, ValueError):
        value = 0
    if not MIN_LEVEL <= value <= MAX_LEVEL:
        raise ValidationError(_("機密性の区分を選んでください。"), code="level")
    return value


def title_from(content: str) -> str:
    first_line = " ".join(content.split())
    return Truncator(first_line).chars(TITLE_MAX_CHARS)


# --- Conversations ------------------------------------------------------------


@transaction.atomic
def conversation_create(*, actor: Any, alias_name: str, level: Any, title: str = "") -> Conversation:
    """Start a conversation with ``alias_name`` at 機密性 ``level`` in the active ministry.

    Security: the alias must be on the ministry's allowlist *and* able to take
    ``level`` (``allowed_aliases``); the router checks both again on every turn.
    """
    level = validate_level(level)
    if alias_name not in {a.name for a in allowed_aliases(level=level)}:
        raise ValidationError(
            _("選択したモデルは、この機密性の区分では利用できません。別のモデルを選んでください。"),
            code="alias",
        )
    conversation = Conversation(owner=actor, alias_name=alias_name, level=level, title=title.strip()[:200])
    conversation.save()
    audit_record(
        actor=actor,
        action="chat.conversation.create",
        target_type="conversation",
        target_id=conversation.pk,
        ministry_id=conversation.ministry_id,
        data={"alias": alias_name, "level": level},
    )
    return conversation


@transaction.atomic
def conversation_rename(*, actor: Any, conversation: Conversation, title: str) -> Conversation:
    title = " ".join((title or "").split())
    if not title:
        raise ValidationError(_("タイトルを入力してください。"), code="empty")
    if len(title) > 200:
        raise ValidationError(_("タイトルは200文字以内で入力してください。"), code="too_long")
    conversation = get_conversation_for_actor(actor=actor, conversation_id=conversation.pk)
    conversation.title = title
    conversation.save(update_fields=["title", "updated_at"])
    audit_record(
        actor=actor,
        action="chat.conversation.rename",
        target_type="conversation",
        target_id=conversation.pk,
        ministry_id=conversation.ministry_id,
    )
    return conversation


@transaction.atomic
def conversation_delete(*, actor: Any, conversation: Conversation) -> None:
    """Delete the conversation and its messages (no soft delete)."""
    conversation = get_conversation_for_actor(actor=actor, conversation_id=conversation.pk)
    pk, ministry_id = conversation.pk, conversation.ministry_id
    conversation.delete()
    audit_record(
        actor=actor,
        action="chat.conversation.delete",
        target_type="conversation",
        target_id=pk,
        ministry_id=ministry_id,
    )


# --- Messages (request side) ---------------------------------------------------


@dataclass(frozen=True)
class SendResult:
    user_message: Message
    assistant_message: Message


def _start_answer(conversation: Conversation) -> Message:
    """Create the assistant message for the next answer: streaming, or an explained error."""
    fields: dict[str, Any]
    try:
        with transaction.atomic():  # a failure here must not roll back the user's message
            plan = plan_route(
                alias_name=conversation.alias_name,
                level=conversation.level,
                sticky_key=sticky_key(conversation),
            )
    except RouteRefused as exc:
        fields = {"status": Status.ERROR, "error": exc.message[:1000]}
    except Exception:  # nothing the user typed may be lost to an internal error
        logger.exception("route planning failed for conversation %s", conversation.pk)
        fields = {
            "status": Status.ERROR,
            "error": _("内部エラーのため回答を開始できませんでした。しばらくしてから再生成してください。"),
        }
    else:
        fields = {
            "status": Status.STREAMING,
            "alias_revision": plan.alias.revision_number,
            "deployment_id": plan.candidates[0].id,
        }
    message: Message = Message.objects.create(conversation=conversation, role=Role.ASSISTANT, **fields)
    return message


class ConversationBusy(ValidationError):
    """A send or regenerate while another answer of the conversation is pending (HTTP 409)."""


def _lock_for_turn(*, actor: Any, conversation: Conversation) -> Conversation:
    """The actor's conversation, locked (``SELECT … FOR UPDATE``) until the transaction ends.

    Two sends (or a send and a regenerate) of one conversation at once are serialised
    here: the later one waits for the earlier one's commit and then sees its answer.
    """
    conversation = get_conversation_for_actor(actor=actor, conversation_id=conversation.pk)
    locked: Conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    return locked


def _ensure_not_generating(conversation: Conversation) -> None:
    """Refuse a new turn while an answer is pending; drop answers left behind unconnected.

    Call with the conversation locked (:func:`_lock_for_turn`). Pending: streaming, or
    created less than :data:`CONNECT_GRACE_SECONDS` ago and not yet connected (the send
    that created it is still being answered by its page).
    """
    pending = Message.objects.filter(conversation=conversation, status=Status.STREAMING)
    now = timezone.now()
    # Created but never connected (e.g. the page was left before it loaded): give up on it.
    pending.filter(
        stream_started_at__isnull=True, created_at__lt=now - timedelta(seconds=CONNECT_GRACE_SECONDS)
    ).update(status=Status.INTERRUPTED, updated_at=now)
    if pending.exists():
        raise ConversationBusy(
            _("前の回答を生成中です。完了するか停止してから送信してください。"), code="busy"
        )


@transaction.atomic
def message_send(*, actor: Any, conversation: Conversation, content: str) -> SendResult:
    """Save the user's message, then start the answer.

    DESIGN invariant 6: the user's message is saved *first* and survives a
    refused route (allowlist, classification gate, no deployment): the answer
    is then an error message that explains the refusal. A month budget that is
    already used up refuses the message *before* anything is saved
    (:class:`apps.chat.quota.QuotaRefused`, HTTP 429): the user keeps the text
    in the composer and the conversation gets no half turn. So does a send while
    another answer of the conversation is pending (:class:`ConversationBusy`, HTTP
    409): one answer at a time, so history never interleaves two answers.
    """
    conversation = _lock_for_turn(actor=actor, conversation=conversation)
    text = validate_content(content)
    message_reap_stale(conversation=conversation)
    _ensure_not_generating(conversation)
    quota.precheck(ministry_id=conversation.ministry_id, user_id=actor.pk, alias_name=conversation.alias_name)
    user_message = Message.objects.create(
        conversation=conversation, role=Role.USER, content=text, status=Status.COMPLETE
    )
    if not conversation.title:
        conversation.title = title_from(text)
    conversation.save(update_fields=["title", "updated_at"])
    return SendResult(user_message=user_message, assistant_message=_start_answer(conversation))


@transaction.atomic
def message_regenerate(*, actor: Any, conversation: Conversation) -> Message:
    """Replace the answer(s) to the last user message with a new one."""
    conversation = _lock_for_turn(actor=actor, conversation=conversation)
    message_reap_stale(conversation=conversation)
    _ensure_not_generating(conversation)
    last_user = Message.objects.filter(conversation=conversation, role=Role.USER).order_by("-id").first()
    if last_user is None:
        raise ValidationError(_("再生成できる質問がありません。"), code="nothing")
    quota.precheck(ministry_id=conversation.ministry_id, user_id=actor.pk, alias_name=conversation.alias_name)
    Message.objects.filter(conversation=conversation, role=Role.ASSISTANT, id__gt=last_user.pk).delete()
    conversation.save(update_fields=["updated_at"])
    return _start_answer(conversation)


def message_stop(*, actor: Any, conversation: Conversation, message: Message) -> Message:
    """Ask the stream of ``message`` to stop (the relay checks the flag several times a second)."""
    conversation = get_conversation_for_actor(actor=actor, conversation_id=conversation.pk)
    if message.conversation_id != conversation.pk or message.role != Role.ASSISTANT:
        raise Http404
    # Not claimed by a stream yet: stop it here (the claim then fails). Otherwise
    # raise the flag for the relay; the claim clears old flags, so this order matters.
    stopped_here = Message.objects.filter(
        pk=message.pk, status=Status.STREAMING, stream_started_at__isnull=True
    ).update(status=Status.INTERRUPTED, updated_at=timezone.now())
    if not stopped_here:
        cache.set(stop_key(message.pk), 1, timeout=STOP_FLAG_SECONDS)
    message.refresh_from_db()
    return message


def message_reap_stale(*, conversation: Conversation) -> int:
    """Mark answers whose stream died without a trace (no update for a long time) interrupted."""
    cutoff = timezone.now() - timedelta(seconds=STALE_STREAM_SECONDS)
    return Message.objects.filter(
        conversation=conversation, status=Status.STREAMING, updated_at__lt=cutoff
    ).update(status=Status.INTERRUPTED, updated_at=timezone.now())


# --- Messages (stream side: own scope) ---------------------------------------


@dataclass(frozen=True)
class StreamJob:
    """Everything the relay needs; no ORM objects cross into the async generator."""

    ministry_id: int
    conversation_id: int
    message_id: int
    plan: RoutePlan
    request: ChatRequest
    # Budgets and limits: reserved before the router is called, settled at the end.
    charge: quota.Charge | None = None


@dataclass(frozen=True)
class StreamReplay:
    """Nothing to stream (claimed elsewhere, finished or refused): show the message as it is."""

    message: Message
    alias_name: str


def stream_open(
    *, ministry_id: int, actor: Any, conversation_id: int, message_id: int
) -> StreamJob | StreamReplay:
    """Authorise and claim assistant message ``message_id`` for streaming.

    Returns a :class:`StreamJob` when this call claimed the message (exactly one
    caller ever does, so a reload or an EventSource reconnect never starts a
    second upstream request), otherwise a :class:`StreamReplay` of the message
    as it is now. Raises ``Http404`` unless the actor owns the conversation.
    """
    with ministry_scope(ministry_id=ministry_id):
        conversation = get_conversation_for_actor(actor=actor, conversation_id=conversation_id)
        message: Message | None = Message.objects.filter(
            pk=message_id, conversation=conversation, role=Role.ASSISTANT
        ).first()
        if message is None:
            raise Http404
        now = timezone.now()
        claimed = Message.objects.filter(
            pk=message.pk, status=Status.STREAMING, stream_started_at__isnull=True
        ).update(stream_started_at=now, updated_at=now)
        if not claimed:
            return StreamReplay(message=message, alias_name=conversation.alias_name)
        # A stop before the claim already marked the message interrupted (so the claim
        # failed); a flag found now is a leftover (e.g. of a recreated database).
        cache.delete(stop_key(message.pk))
        try:
            plan = plan_route(
                alias_name=conversation.alias_name,
                level=conversation.level,
                sticky_key=sticky_key(conversation),
            )
        except RouteRefused as exc:
            Message.objects.filter(pk=message.pk).update(
                status=Status.ERROR, error=exc.message[:1000], updated_at=now
            )
            message.refresh_from_db()
            return StreamReplay(message=message, alias_name=conversation.alias_name)
        context_window = min((d.context_window for d in plan.candidates), default=4096)
        history = history_for_upstream(
            conversation=conversation, before_message_id=message.pk, max_chars=max(context_window, 1000)
        )
        return charged_stream_job(
            ministry_id=ministry_id,
            actor=actor,
            conversation_id=conversation.pk,
            message_id=message.pk,
            plan=plan,
            messages=history,
            feature="chat",
        )


def charged_stream_job(
    *,
    ministry_id: int,
    actor: Any,
    conversation_id: int,
    message_id: int,
    plan: RoutePlan,
    messages: list[dict[str, Any]],
    feature: str,
) -> StreamJob:
    """The relay's job for one answer, with its charge: chat, cited answers and AI apps alike.

    Inside ``ministry_scope(ministry_id)``. The answer may use half the smallest
    context window of the route's deployments (at most :data:`MAX_ANSWER_TOKENS`,
    at least 64), lowered further by every budget level's ``max_tokens`` cap; the
    relay reserves that before the model is called and settles at the end.
    """
    context_window = min((d.context_window for d in plan.candidates), default=4096)
    charge, max_tokens = quota.charge_for(
        ministry_id=ministry_id,
        user=actor,
        plan=plan,
        messages=messages,
        max_tokens=max(min(MAX_ANSWER_TOKENS, context_window // 2), 64),
        feature=feature,
    )
    return StreamJob(
        ministry_id=ministry_id,
        conversation_id=conversation_id,
        message_id=message_id,
        plan=plan,
        request=ChatRequest(messages=messages, params={"max_tokens": max_tokens}),
        charge=charge,
    )


def answer_usage(
    *, job: StreamJob, deployment_id: int | None, usage: Mapping[str, int], content_chunks: int
) -> dict[str, Any]:
    """Token counts of a finished answer, for :func:`message_stream_update`.

    The upstream's own counts win. Some upstreams report none (llama.cpp ignores
    ``stream_options.include_usage``; the provider then reports ``prompt_tokens=0``
    and a completion count of its content chunks, flagged ``estimated``), and a
    stream cut off early has no usage at all. Then the prompt is counted here, with
    the model's tokenizer where one is registered, else an estimate, and flagged
    (:func:`apps.quotas.tokens.count_prompt_tokens`): a prompt that reached a model
    is never recorded as 0 tokens. Nothing is counted when no upstream answered.
    """
    if deployment_id is None:
        return {}
    fields: dict[str, Any] = {}
    reported_prompt = int(usage.get("prompt_tokens") or 0)
    if reported_prompt > 0:
        fields.update(prompt_tokens=reported_prompt, prompt_tokens_estimated=False)
    else:
        model_name = next((d.model_name for d in job.plan.candidates if d.id == deployment_id), None)
        count, estimated = count_prompt_tokens(messages=job.request.messages, model_name=model_name)
        fields.update(prompt_tokens=count, prompt_tokens_estimated=estimated)
    if usage.get("completion_tokens") is not None:
        fields.update(
            completion_tokens=int(usage["completion_tokens"]),
            completion_tokens_estimated=bool(usage.get("estimated")),
        )
    else:  # cut off before the upstream's usage: one token per content chunk, flagged
        fields.update(completion_tokens=content_chunks, completion_tokens_estimated=True)
    return fields


def message_stream_update(
    *,
    ministry_id: int,
    message_id: int,
    content: str,
    status: str | None = None,
    error: str | None = None,
    deployment_id: int | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    prompt_tokens_estimated: bool | None = None,
    completion_tokens_estimated: bool | None = None,
    ttft_ms: int | None = None,
    latency_ms: int | None = None,
    ledger: Mapping[str, Any] | None = None,
) -> Message | None:
    """Persist a streaming answer: partial text (``status=None``) or its final state.

    One UPDATE. A partial save only touches a message that is still streaming;
    the final save (``status`` given) also returns the message for rendering,
    and writes the answer's one usage record (``ledger``: the keyword arguments
    of :func:`apps.quotas.services.usage_record_create`) in the same scope.
    """
    fields: dict[str, Any] = {"content": content, "updated_at": timezone.now()}
    optional = {
        "error": error,
        "deployment_id": deployment_id,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_estimated": prompt_tokens_estimated,
        "completion_tokens_estimated": completion_tokens_estimated,
        "ttft_ms": ttft_ms,
        "latency_ms": latency_ms,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    with ministry_scope(ministry_id=ministry_id):
        rows = Message.objects.filter(pk=message_id)
        if status is None:
            rows.filter(status=Status.STREAMING).update(**fields)
            return None
        rows.update(status=status, **fields)
        if ledger is not None:
            usage_record_create(**ledger)
        return rows.first()


def stop_requested(message_id: int) -> bool:
    return bool(cache.get(stop_key(message_id)))
