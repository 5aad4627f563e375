"""Staff conversations with models and their messages.

Both are ministry-owned (:class:`~apps.tenancy.models.TenantModel`) and private to
their owner: reads by id go through :mod:`apps.chat.selectors`.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from apps.registry.models import Clearance
from apps.tenancy.models import TenantModel

from .conf import default_confidentiality

TITLE_MAX_CHARS = 40


class Conversation(TenantModel):
    """One chat thread of one user with one model alias at one 機密性 level."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,  # covered by conversation_owner_recent_idx
    )
    title = models.CharField(_("タイトル"), max_length=200, blank=True)
    alias_name = models.SlugField(_("モデル"), max_length=100)
    level = models.PositiveSmallIntegerField(
        _("機密性"), choices=Clearance.choices, default=default_confidentiality
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [
            # Sidebar: "my conversations, newest first".
            models.Index(fields=["ministry", "owner", "-updated_at"], name="conversation_owner_recent_idx"),
        ]

    def __str__(self) -> str:
        return self.title or f"#{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("chat:conversation", args=[self.pk])


class Role(models.TextChoices):
    USER = "user", _("利用者")
    ASSISTANT = "assistant", _("アシスタント")
    SYSTEM = "system", _("システム")


class Status(models.TextChoices):
    STREAMING = "streaming", _("生成中")
    COMPLETE = "complete", _("完了")
    INTERRUPTED = "interrupted", _("中断")
    ERROR = "error", _("エラー")


class Message(TenantModel):
    """One turn. Assistant messages are saved while they stream (DESIGN invariant 6).

    ``stream_started_at`` is set once, when a stream view claims the message, so
    a reload or a reconnecting EventSource never starts a second upstream request.
    ``deployment_id`` is a plain id (not a foreign key): registry rows are
    platform-wide and must not be coupled to ministry-owned rows.
    """

    conversation = models.ForeignKey(
        Conversation,
        on_delete=models.CASCADE,
        related_name="messages",
        db_index=False,  # covered by message_conversation_idx
    )
    role = models.CharField(_("役割"), max_length=16, choices=Role.choices)
    content = models.TextField(_("内容"), blank=True)
    status = models.CharField(_("状態"), max_length=16, choices=Status.choices, default=Status.COMPLETE)
    error = models.CharField(_("エラー"), max_length=1000, blank=True)
    deployment_id = models.BigIntegerField(null=True, blank=True)
    alias_revision = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # True when the upstream reported no count and the platform counted itself
    # (apps.chat.services.answer_usage): an estimate unless a real tokenizer is registered.
    prompt_tokens_estimated = models.BooleanField(default=False)
    completion_tokens_estimated = models.BooleanField(default=False)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    stream_started_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # A conversation's messages in order.
            models.Index(fields=["ministry", "conversation", "id"], name="message_conversation_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id}:{self.pk}:{self.role}"

    @property
    def is_streaming(self) -> bool:
        return self.status == Status.STREAMING

    @property
    def is_claimed(self) -> bool:
        return self.stream_started_at is not None
