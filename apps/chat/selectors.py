"""Reads of conversations and messages (always within the active ministry scope).

Security: conversations are private to their owner. Every read by id filters on
the owner as well as the ministry (the scoped manager and RLS add the ministry
again), so another ministry's user and a colleague in the same ministry get the
same 404 as for a missing id.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404

from .models import Conversation, Message, Role, Status

SEARCH_MAX_CHARS = 200


def conversation_list_for_actor(*, actor: Any, q: str = "") -> QuerySet[Conversation]:
    """The actor's conversations, newest first; ``q`` searches titles and message text.

    Search is a plain case-insensitive substring match (``ILIKE``, no trigram
    index): it only scans the actor's own conversations, which the
    ``(ministry, owner, -updated_at)`` index narrows first.
    """
    if not getattr(actor, "is_authenticated", False):
        return Conversation.objects.none()
    conversations = Conversation.objects.filter(owner=actor)
    q = (q or "").strip()[:SEARCH_MAX_CHARS]
    if q:
        in_messages = Message.objects.filter(conversation__owner=actor, content__icontains=q).values(
            "conversation_id"
        )
        conversations = conversations.filter(Q(title__icontains=q) | Q(pk__in=in_messages))
    return conversations.order_by("-updated_at", "-id")


def get_conversation_for_actor(*, actor: Any, conversation_id: int) -> Conversation:
    """The actor's own conversation ``conversation_id``, else 404 (missing and not-yours alike)."""
    if not getattr(actor, "is_authenticated", False):
        raise Http404
    conversation: Conversation | None = Conversation.objects.filter(
        pk=conversation_id, owner_id=actor.pk
    ).first()
    if conversation is None:
        raise Http404
    return conversation


def get_message_for_actor(*, actor: Any, conversation: Conversation, message_id: int) -> Message:
    """Message ``message_id`` of ``conversation`` (which must be the actor's), else 404."""
    if not getattr(actor, "is_authenticated", False) or conversation.owner_id != actor.pk:
        raise Http404
    message: Message | None = Message.objects.filter(pk=message_id, conversation=conversation).first()
    if message is None:
        raise Http404
    return message


def message_list(*, conversation: Conversation) -> list[Message]:
    """Every message of ``conversation`` in order."""
    return list(Message.objects.filter(conversation=conversation).order_by("id"))


def last_user_message(*, conversation: Conversation) -> Message | None:
    return Message.objects.filter(conversation=conversation, role=Role.USER).order_by("-id").first()


def history_for_upstream(
    *, conversation: Conversation, before_message_id: int, max_chars: int
) -> list[dict[str, str]]:
    """OpenAI-style ``messages`` for the answer ``before_message_id``: newest turns that fit.

    Failed and empty assistant turns are left out; interrupted answers are kept
    (the user saw them). ``max_chars`` is a rough budget (Japanese is about one
    token per character); the newest user message is always included.
    """
    rows = list(
        Message.objects.filter(conversation=conversation, id__lt=before_message_id)
        .exclude(role=Role.ASSISTANT, status__in=[Status.ERROR, Status.STREAMING])
        .exclude(content="")
        .order_by("-id")
        .values_list("role", "content")[:100]
    )
    picked: list[dict[str, str]] = []
    used = 0
    for role, content in rows:
        if picked and used + len(content) > max_chars:
            break
        picked.append({"role": role, "content": content})
        used += len(content)
    picked.reverse()
    return picked
