"""Usage records of model calls (one row per request, written once at its end)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from apps.tenancy.models import TenantModel


class UsageStatus(models.TextChoices):
    OK = "ok", _("完了")
    INTERRUPTED = "interrupted", _("中断")
    ERROR = "error", _("エラー")
    REFUSED = "refused", _("拒否")


class UsageRecord(TenantModel):
    """One model call: who (API key or user), which alias/deployment, tokens and timings.

    Written exactly once per request, after the response ended (never per chunk):
    by :func:`apps.quotas.services.usage_record_create`, or for ``/v1`` in bulk
    from the usage journal (:mod:`apps.quotas.journal`), keyed by ``request_id``
    so a re-drain never duplicates a row.
    """

    request_id = models.UUIDField(null=True, blank=True, editable=False)

    api_key = models.ForeignKey(
        "gateway.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    alias_name = models.CharField(max_length=100)
    deployment = models.ForeignKey(
        "registry.Deployment", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revision = models.PositiveIntegerField(null=True, blank=True)  # alias revision number
    endpoint = models.CharField(max_length=32, default="chat")
    # What the call served: chat, rag (cited answers), ingest (embeddings while indexing),
    # search (/v1/search query embedding), app (AI apps), api (/v1), eval (evaluation runs).
    feature = models.CharField(max_length=16, default="chat")
    # The team the user was charged to (first team of the user at admission time), if any.
    team = models.ForeignKey(
        "tenancy.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Registry model name served (kept even if the deployment row is later deleted).
    model_name = models.CharField(max_length=200, blank=True)
    level = models.PositiveSmallIntegerField(default=1)
    prompt_tokens = models.PositiveIntegerField(default=0)
    # True when the upstream reported no prompt count and the platform estimated it
    # (apps.quotas.tokens); False when the upstream or a real tokenizer counted.
    prompt_tokens_estimated = models.BooleanField(default=False)
    completion_tokens = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=UsageStatus.choices)
    # Cost in yen (registry price per 1M tokens, or the GPU-hour share for on-prem models).
    cost_yen = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    detail = models.CharField(max_length=200, blank=True)  # refusal/error code
    # When the request began (journaled rows are written later, in bulk).
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Dashboards and quota checks: "usage of my ministry, newest first".
        indexes = [models.Index(fields=["ministry", "-created_at"], name="usage_ministry_new_idx")]
        constraints = [
            # One row per request: the journal drainer upserts on this (idempotent re-drain).
            # created_at is part of it because the table is partitioned by month on
            # created_at (apps.quotas.partitions): PostgreSQL requires the partition key
            # in every unique key. Every entry of a request carries the request's start
            # time, so the key is still one per request. In the database the primary key
            # is (id, created_at) too; Django keeps ``id`` as ``pk`` (ids stay unique:
            # one identity sequence), and nothing references this table.
            models.UniqueConstraint(
                fields=["ministry", "request_id", "created_at"], name="usage_ministry_request_at_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.alias_name}:{self.status}:{self.prompt_tokens}+{self.completion_tokens}"


# Budgets and limits live in their own module (one owner each); imported here so
# Django registers them as models of this app.
from .budget_models import *  # noqa: E402,F403
from .rollup_models import *  # noqa: E402,F403
