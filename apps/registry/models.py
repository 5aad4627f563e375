"""The model registry: vendors, models, deployments, aliases and their history.

Registry data is platform-wide (procurement manages it for every ministry), so
these are not TenantModels; which ministry may use which alias is the tenant
data (:class:`AliasGrant`).
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from apps.tenancy.models import TenantModel


class Clearance(models.IntegerChoices):
    """機密性 levels (government information classification)."""

    LEVEL_1 = 1, _("機密性1")
    LEVEL_2 = 2, _("機密性2")
    LEVEL_3 = 3, _("機密性3")


class ModelKind(models.TextChoices):
    CHAT = "chat", _("チャット")
    EMBEDDING = "embedding", _("埋め込み")
    RERANK = "rerank", _("リランク")


class ModelStatus(models.TextChoices):
    CANDIDATE = "candidate", _("候補")
    ACTIVE = "active", _("利用中")
    DEPRECATED = "deprecated", _("非推奨")
    RETIRED = "retired", _("廃止")


class DeploymentZone(models.TextChoices):
    """Where a deployment runs. Only on-prem may be routed to without a second approval."""

    ON_PREM = "on_prem", _("オンプレミス（政府管理）")
    GOV_CLOUD = "gov_cloud", _("ガバメントクラウド")
    EXTERNAL = "external", _("外部API・商用クラウド")


class HealthState(models.TextChoices):
    UNKNOWN = "unknown", _("不明")
    HEALTHY = "healthy", _("正常")
    DEGRADED = "degraded", _("低下")
    DOWN = "down", _("停止")


def validate_upstream_url(value: str) -> None:
    """http(s) URL with a host. Unlike URLField, single-label hosts (Kubernetes
    service names such as ``http://vllm-llmjp:8000``) are valid upstreams.

    Security: the host must also pass the egress allowlist (``apps.registry.egress``):
    no link-local or metadata address, nothing outside ``GENNAI_UPSTREAM_ALLOWED_HOSTS``.
    The same check runs again on the resolved address at connect time.
    """
    from .egress import EgressRefused, current_policy

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValidationError(_("http:// または https:// で始まるURLを入力してください。"))
    try:
        current_policy().check_url(value)
    except EgressRefused as exc:
        if exc.code == "forbidden":
            message = _("リンクローカル・クラウドのメタデータ等のアドレスには接続できません。")
        elif exc.code == "not_allowed":
            message = _(
                "この接続先は許可リスト（GENNAI_UPSTREAM_ALLOWED_HOSTS）にありません。"
                "プラットフォーム管理者に追加を依頼してください。"
            )
        else:
            message = _(
                "http:// または https:// で始まるURLを入力してください（認証情報は含めないでください）。"
            )
        raise ValidationError(message, code=f"egress_{exc.code}") from None


class Vendor(models.Model):
    """A company or organisation that supplies models (e.g. NTT, PFN, ELYZA, NII)."""

    name = models.CharField(_("名称"), max_length=200, unique=True)
    website = models.URLField(_("ウェブサイト"), blank=True)
    contact = models.CharField(_("連絡先"), max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Model(models.Model):
    """A model version as procured: facts, licence, price and the highest 機密性 it may receive."""

    vendor = models.ForeignKey(Vendor, on_delete=models.PROTECT, related_name="models")
    name = models.SlugField(_("識別名"), max_length=100, unique=True)
    family = models.CharField(_("ファミリー"), max_length=100)
    version = models.CharField(_("バージョン"), max_length=50)
    license = models.CharField(_("ライセンス"), max_length=200)
    parameter_count = models.BigIntegerField(_("パラメータ数"), null=True, blank=True)
    context_window = models.PositiveIntegerField(_("コンテキスト長"))
    kind = models.CharField(_("種別"), max_length=16, choices=ModelKind.choices, default=ModelKind.CHAT)
    clearance = models.PositiveSmallIntegerField(_("取扱可能な機密性"), choices=Clearance.choices)
    # Yen per one million tokens (tax included): the cost of a call on a deployment
    # without a GPU-hour price (external APIs, vendor-hosted), see apps.quotas.pricing.
    price_input_per_1m = models.DecimalField(
        _("入力100万トークン単価（円）"),
        max_digits=14,
        decimal_places=4,
        default=0,
        validators=[MinValueValidator(Decimal(0))],
    )
    price_output_per_1m = models.DecimalField(
        _("出力100万トークン単価（円）"),
        max_digits=14,
        decimal_places=4,
        default=0,
        validators=[MinValueValidator(Decimal(0))],
    )
    status = models.CharField(
        _("状態"), max_length=16, choices=ModelStatus.choices, default=ModelStatus.CANDIDATE
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["family", "version"]

    def __str__(self) -> str:
        return f"{self.family} {self.version}"


class Deployment(models.Model):
    """Where a model is served: a provider plugin, an endpoint, its zone and the zone's clearance.

    ``secret_ref`` names where the API key lives (``env:GENNAI_UPSTREAM_<NAME>`` or
    ``file:<name>``, see :mod:`apps.registry.secrets`); the key itself is never
    stored in the database. Routing an alias to a zone other than on-prem, and
    raising ``clearance`` to 機密性2/3, need a second person's approval
    (:class:`ChangeRequest`).
    """

    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="deployments")
    name = models.SlugField(_("識別名"), max_length=100, unique=True)
    provider = models.CharField(_("プロバイダ"), max_length=64, default="openai_compatible")
    base_url = models.CharField(_("ベースURL"), max_length=500, validators=[validate_upstream_url])
    served_model_name = models.CharField(_("提供モデル名"), max_length=200)
    secret_ref = models.CharField(_("シークレット参照"), max_length=200, blank=True)
    max_concurrency = models.PositiveIntegerField(_("最大同時実行数"), default=16)
    clearance = models.PositiveSmallIntegerField(_("ゾーンの機密性"), choices=Clearance.choices)
    zone = models.CharField(
        _("配置ゾーン"), max_length=16, choices=DeploymentZone.choices, default=DeploymentZone.ON_PREM
    )
    enabled = models.BooleanField(_("有効"), default=True)
    # On-prem cost by GPU-hour share (apps.quotas.pricing): a call's tokens occupy
    # tokens / throughput seconds of the deployment's GPUs. Unset price or
    # throughput: the model's per-1M-token prices apply instead.
    gpu_hour_yen = models.DecimalField(
        _("GPU時間単価（円/GPU時間）"),
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
    )
    gpu_count = models.DecimalField(
        _("占有GPU数"),
        max_digits=6,
        decimal_places=2,
        default=1,
        validators=[MinValueValidator(Decimal("0.01"))],
    )
    throughput_tokens_per_s = models.PositiveIntegerField(
        _("実測スループット（トークン/秒）"), null=True, blank=True, validators=[MinValueValidator(1)]
    )
    health = models.CharField(max_length=16, choices=HealthState.choices, default=HealthState.UNKNOWN)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_clearance(self) -> int:
        """A deployment may not receive more than both its zone and its model allow."""
        return min(int(self.clearance), int(self.model.clearance))

    def clean(self) -> None:
        """Invariant 5: an external API or commercial cloud may receive 機密性1 only."""
        if self.zone == DeploymentZone.EXTERNAL and self.clearance and int(self.clearance) > 1:
            raise ValidationError(
                {"clearance": _("外部API・商用クラウドのデプロイメントは機密性1までしか扱えません。")}
            )


class Alias(models.Model):
    """A stable name staff and API clients use (``standard-chat``), routed to deployments."""

    name = models.SlugField(_("エイリアス名"), max_length=100, unique=True)
    display_name_ja = models.CharField(_("表示名（日本語）"), max_length=100)
    display_name_en = models.CharField(_("表示名（英語）"), max_length=100)
    kind = models.CharField(_("種別"), max_length=16, choices=ModelKind.choices, default=ModelKind.CHAT)
    description = models.TextField(_("説明"), blank=True)
    current_revision = models.ForeignKey(
        "AliasRevision", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def display_name(self) -> str:
        return self.display_name_en if (get_language() or "ja").startswith("en") else self.display_name_ja


class AliasRevision(models.Model):
    """One version of an alias's routes: who changed it, when and why. Never edited."""

    alias = models.ForeignKey(Alias, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(_("変更理由"), max_length=500)
    rollback_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["alias", "-number"]
        constraints = [models.UniqueConstraint(fields=["alias", "number"], name="aliasrevision_number_uniq")]

    def __str__(self) -> str:
        return f"{self.alias_id}#{self.number}"


class AliasRoute(models.Model):
    """A weighted route of one revision; weights are relative (e.g. 90/10 for a canary)."""

    revision = models.ForeignKey(AliasRevision, on_delete=models.CASCADE, related_name="routes")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="routes")
    weight = models.PositiveIntegerField()

    class Meta:
        ordering = ["-weight", "deployment_id"]
        constraints = [
            models.UniqueConstraint(fields=["revision", "deployment"], name="aliasroute_deployment_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.deployment_id}:{self.weight}"


class AliasGrant(TenantModel):
    """A ministry's allowlist entry: its staff and API keys may use this alias."""

    alias = models.ForeignKey(Alias, on_delete=models.CASCADE, related_name="+")
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Unique index led by ministry_id serves the router's "may ministry M use alias A".
        constraints = [models.UniqueConstraint(fields=["ministry", "alias"], name="aliasgrant_uniq")]

    def __str__(self) -> str:
        return f"{self.ministry_id}:{self.alias_id}"


class ChangeKind(models.TextChoices):
    MODEL_CLEARANCE = "model_clearance", _("モデルの機密性の引き上げ")
    DEPLOYMENT_CLEARANCE = "deployment_clearance", _("デプロイメントの機密性の引き上げ")
    ALIAS_ROUTES = "alias_routes", _("オンプレミス外への経路変更")


class ChangeStatus(models.TextChoices):
    PENDING = "pending", _("承認待ち")
    APPLIED = "applied", _("承認・適用済み")
    REJECTED = "rejected", _("却下")


class ChangeRequest(models.Model):
    """A registry change that needs a second person (four-eyes): proposed, then approved or rejected.

    Raising a model's or deployment's clearance to 機密性2/3, and routing an alias
    to a deployment outside the on-prem zone, are not applied when proposed: a
    different procurement officer or platform admin approves, and the change is
    applied in the same transaction (so there is no "approved but not applied"
    state). ``payload`` holds what to apply and what it was based on, so a
    request that went stale is refused instead of applied. Both steps are audited.
    """

    kind = models.CharField(_("種別"), max_length=32, choices=ChangeKind.choices)
    status = models.CharField(
        _("状態"), max_length=16, choices=ChangeStatus.choices, default=ChangeStatus.PENDING
    )
    # Exactly one target is set (constraint below).
    model = models.ForeignKey(Model, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    deployment = models.ForeignKey(
        Deployment, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    alias = models.ForeignKey(Alias, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    payload = models.JSONField(default=dict)
    reason = models.CharField(_("変更理由"), max_length=500)
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.CharField(_("コメント"), max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Serves the pending list and the nav badge: WHERE status = 'pending' ORDER BY created_at.
            models.Index(fields=["status", "created_at"], name="changerequest_status_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(model__isnull=False, deployment__isnull=True, alias__isnull=True)
                    | models.Q(model__isnull=True, deployment__isnull=False, alias__isnull=True)
                    | models.Q(model__isnull=True, deployment__isnull=True, alias__isnull=False)
                ),
                name="changerequest_one_target",
            ),
            # Four-eyes in the database too: an applied request was decided by someone else.
            models.CheckConstraint(
                condition=~models.Q(status="applied")
                | (models.Q(decided_by__isnull=False) & ~models.Q(decided_by=models.F("proposed_by"))),
                name="changerequest_four_eyes",
            ),
            # One open request per target, so approvers never see two competing versions.
            models.UniqueConstraint(
                fields=["model"], condition=models.Q(status="pending"), name="changerequest_pending_model"
            ),
            models.UniqueConstraint(
                fields=["deployment"],
                condition=models.Q(status="pending"),
                name="changerequest_pending_deployment",
            ),
            models.UniqueConstraint(
                fields=["alias"], condition=models.Q(status="pending"), name="changerequest_pending_alias"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind}"

    @property
    def target(self) -> Model | Deployment | Alias:
        target = self.model or self.deployment or self.alias
        assert target is not None
        return target
