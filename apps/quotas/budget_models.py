"""Budgets and limits (platform → ministry → team → user / API key). See apps.quotas.admission.

One row holds every limit of one *subject* (the ministry itself, one team, one
user or one API key of a ministry; or the whole platform), for all aliases
together (``alias_name = ""``) or for one alias. A ``NULL`` field means "no
limit of this kind at this level". Admission checks every level that applies to
a request at once (:mod:`apps.quotas.admission`); no level lends headroom to
another, and a user in several teams is held to every one of their teams' limits.

Rows are written only by :mod:`apps.quotas.limits` (audited, and bumping the
``quotas.limits`` cache version so every process reloads within a second).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.tenancy.models import TenantModel

__all__ = ["GraceWindow", "Limit", "LimitLevel", "PlatformLimit"]


class LimitLevel(models.TextChoices):
    MINISTRY = "ministry", _("府省庁")
    TEAM = "team", _("チーム")
    USER = "user", _("利用者")
    API_KEY = "api_key", _("APIキー")


class LimitFields(models.Model):
    """The limit values shared by ministry-owned and platform rows (``NULL`` = unlimited)."""

    # "" = every alias together; otherwise the limits of that alias only.
    alias_name = models.CharField(_("モデル名（エイリアス）"), max_length=100, blank=True)
    monthly_tokens = models.BigIntegerField(_("月間トークン上限"), null=True, blank=True)
    monthly_yen = models.DecimalField(
        _("月間予算（円）"), max_digits=14, decimal_places=2, null=True, blank=True
    )
    rpm = models.PositiveIntegerField(_("毎分リクエスト数上限"), null=True, blank=True)
    tpm = models.PositiveIntegerField(_("毎分トークン数上限"), null=True, blank=True)
    max_concurrent = models.PositiveIntegerField(_("同時実行数上限"), null=True, blank=True)
    # Cap of a request's max_tokens (the completion part of its reservation).
    max_tokens = models.PositiveIntegerField(_("max_tokens の上限"), null=True, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Limit(LimitFields, TenantModel):
    """The limits of one subject of a ministry, for all aliases or for one alias.

    ``level`` says which subject: ``ministry`` (``team``/``user``/``api_key``
    empty), ``team``, ``user`` or ``api_key`` (exactly that reference set).
    The rule is enforced by :func:`apps.quotas.limits.limit_set` rather than a
    check constraint, so that the tenancy sweep can point each foreign key at
    rows of another ministry and see the database refuse them.
    """

    level = models.CharField(_("レベル"), max_length=16, choices=LimitLevel.choices)
    team = models.ForeignKey(
        "tenancy.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="limits"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    api_key = models.ForeignKey(
        "gateway.ApiKey", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    class Meta:
        ordering = ["level", "alias_name", "id"]
        constraints = [
            # One row per subject and alias; NULLs are equal here, so there is one
            # ministry-level row per alias, not one per insert.
            models.UniqueConstraint(
                fields=["ministry", "level", "team", "user", "api_key", "alias_name"],
                name="limit_subject_alias_uniq",
                nulls_distinct=False,
            )
        ]

    def __str__(self) -> str:
        subject = self.team_id or self.user_id or self.api_key_id or self.ministry_id
        return f"{self.level}:{subject}:{self.alias_name or '*'}"


class PlatformLimit(LimitFields):
    """The platform's own limits (across every ministry), for all aliases or one alias.

    Platform level, not a TenantModel: it belongs to no ministry. Only platform
    admins change it (:func:`apps.quotas.limits.platform_limit_set`).
    """

    class Meta:
        ordering = ["alias_name"]
        constraints = [models.UniqueConstraint(fields=["alias_name"], name="platformlimit_alias_uniq")]

    def __str__(self) -> str:
        return f"platform:{self.alias_name or '*'}"


class GraceWindow(TenantModel):
    """Admissions granted in one minute without Redis, per ministry and zone (shared by every process).

    While Redis cannot be reached no limit can be checked; a zone whose policy is
    ``grace`` (on-prem models by default) still admits up to
    ``GENNAI_QUOTA_REDIS_GRACE_PER_MINUTE`` requests per ministry and minute.
    Security: the count lives in PostgreSQL and is taken with one atomic upsert
    (:func:`apps.quotas.services.grace_take`), so the allowance does not
    multiply with the number of web processes or replicas. Rows older than a few
    minutes are deleted when a new minute's row is created.
    """

    zone = models.CharField(max_length=16)
    #: Minutes since the Unix epoch (UTC).
    minute = models.BigIntegerField()
    admitted = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["ministry", "zone", "minute"], name="gracewindow_key_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.zone}:{self.minute}:{self.admitted}"
