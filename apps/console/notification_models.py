"""In-app notifications (お知らせ to one person), e.g. budget warnings at 80 % and 100 %.

Imported at the end of :mod:`apps.console.models` so Django registers the model
with this app. Rows are written only by :mod:`apps.quotas.alerts` (from a Celery
task, never on a request's hot path); the text is rendered when shown, in the
reader's language, from ``kind`` and ``data``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.tenancy.models import TenantModel

__all__ = ["Notification", "NotificationKind"]


class NotificationKind(models.TextChoices):
    BUDGET_WARNING = "budget_warning", _("予算の80%に到達")
    BUDGET_EXHAUSTED = "budget_exhausted", _("予算の上限に到達")
    # Platform alerts (apps.console.platform_alerts): to every platform admin.
    AUDIT_CHAIN_BROKEN = "audit_chain_broken", _("監査ログの改ざんを検知")
    USAGE_PARTITIONS_FAILED = "usage_partitions_failed", _("利用記録のパーティション保守に失敗")


class Notification(TenantModel):
    """One notice to one user of a ministry (the user themself, or one of its admins).

    ``dedupe_key`` names the event (e.g. ``budget:2026-12:user:7::80``): the
    unique constraint makes "once per threshold per month" a database fact, so
    two workers handling the same crossing (or a task retried after a Redis
    flush) can never notify — or e-mail — anyone twice.
    """

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    kind = models.CharField(_("種類"), max_length=32, choices=NotificationKind.choices)
    # Facts for the text (level, subject label, used, limit, unit, month, threshold).
    data = models.JSONField(default=dict, blank=True)
    dedupe_key = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["ministry", "recipient", "dedupe_key"], name="notification_once_uniq"
            )
        ]
        indexes = [
            # Sidebar: "my unread notifications, newest first".
            models.Index(fields=["ministry", "recipient", "-created_at"], name="notification_recipient_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.recipient_id}:{self.dedupe_key}"
