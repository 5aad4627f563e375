"""Streaming state of arena battles asked from chat (kept apart from :mod:`.models`).

A battle asked from a chat conversation streams its two answers side by side,
each over its own SSE request. :class:`ArenaStream` records which conversation
it belongs to and, per side, whether a stream claimed it and how it ended, so a
reload never calls a model twice and the vote waits for both answers. Battles
asked on the standalone arena page have no stream row (answered in one request).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _

from apps.tenancy.models import TenantModel

from .models import ArenaBattle

SIDES = ("a", "b")


class SideStatus(models.TextChoices):
    STREAMING = "streaming", _("生成中")
    COMPLETE = "complete", _("完了")
    INTERRUPTED = "interrupted", _("中断")
    ERROR = "error", _("エラー")


class ArenaStream(TenantModel):
    """The chat side of one battle: its conversation and each answer's claim and status.

    ``started_a_at``/``started_b_at`` are set once, when a stream view claims
    that side (exactly one request ever calls the model for it). Ministry
    content (it points at a conversation): RLS like the battle itself.
    """

    battle = models.OneToOneField(ArenaBattle, on_delete=models.CASCADE, related_name="stream")
    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    status_a = models.CharField(max_length=16, choices=SideStatus.choices, default=SideStatus.STREAMING)
    status_b = models.CharField(max_length=16, choices=SideStatus.choices, default=SideStatus.STREAMING)
    started_a_at = models.DateTimeField(null=True, blank=True)
    started_b_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["ministry", "conversation", "id"], name="arenastream_conv_idx")]

    def __str__(self) -> str:
        return f"stream of battle {self.battle_id}"

    def status(self, side: str) -> str:
        return str(self.status_a if side == "a" else self.status_b)

    def started(self, side: str) -> bool:
        return (self.started_a_at if side == "a" else self.started_b_at) is not None

    @property
    def finished(self) -> bool:
        """Both answers reached a final state (the vote may be cast)."""
        return SideStatus.STREAMING not in (self.status_a, self.status_b)


@receiver(post_delete, sender=ArenaStream, dispatch_uid="evaluation.arena_stream.scrub")
def _scrub_battle_text(sender: type[ArenaStream], instance: ArenaStream, **_kwargs: Any) -> None:
    """Privacy: deleting the conversation (which cascades here) erases its comparisons' text.

    The question and both answers were the conversation's content, so they go
    with it; the battle keeps only which aliases met and the vote, so the
    leaderboards do not change. Runs wherever the deletion runs (a request's
    ministry scope, or a cleanup job): the base manager, narrowed to the row's
    own battle and ministry, so no scope is required and RLS still applies.
    """
    ArenaBattle._base_manager.filter(pk=instance.battle_id, ministry_id=instance.ministry_id).update(
        prompt="", answer_a="", answer_b=""
    )
