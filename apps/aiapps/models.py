"""AI apps: task templates (system prompt + user prompt with ``{{variables}}`` + form fields) and their runs.

Two kinds of definitions, because an approved catalogue app belongs to no ministry:

* :class:`PlatformApp` — the built-in apps (seeded on migrate, :mod:`apps.aiapps.builtin`) and the
  platform catalogue (ministry apps a platform admin approved, copied here). Not a TenantModel and
  without any ministry foreign key: every signed-in member may read it, only platform admins write it.
* :class:`MinistryApp` — an app made with the builder by a member of a ministry; private to its owner
  or shared with the ministry. A TenantModel under RLS.

A run (:class:`AppRun`) keeps the inputs, the deterministic 校正 findings and the RAG sources; its
text is a chat ``Conversation``/``Message`` pair, as for cited answers (apps.documents.Answer), so the
router's classification gate, the SSE relay, saving as it streams and the usage ledger are chat's.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from apps.registry.models import Clearance
from apps.tenancy.models import TenantModel


class FieldKind(models.TextChoices):
    TEXT = "text", _("短いテキスト")
    LONG_TEXT = "long_text", _("長いテキスト")
    CHOICE = "choice", _("選択肢")
    FILE = "file", _("ファイル")


class AppKind(models.TextChoices):
    """How a run is prepared before the model is called."""

    PROMPT = "prompt", _("プロンプト")
    KOBUN = "kobun", _("公用文校正")  # deterministic kobun.check first
    GROUNDED = "grounded", _("資料に基づく回答")  # retrieval from a workspace, numbered sources


class OutputFormat(models.TextChoices):
    MARKDOWN = "markdown", _("Markdown")
    PLAIN = "plain", _("プレーンテキスト")


class Visibility(models.TextChoices):
    PRIVATE = "private", _("自分のみ")
    MINISTRY = "ministry", _("府省庁内で共有")


class Proposal(models.TextChoices):
    NONE = "", _("未提案")
    PROPOSED = "proposed", _("カタログ掲載を提案中")
    APPROVED = "approved", _("カタログに掲載済み")
    REJECTED = "rejected", _("カタログ掲載は見送り")


class AppDefinition(models.Model):
    """The fields every app has, whoever owns it (validated by :mod:`apps.aiapps.definition`).

    ``fields`` is ``[{"name", "label", "kind", "options": [...], "required": bool}]``.
    """

    name_ja = models.CharField(_("名前（日本語）"), max_length=100)
    name_en = models.CharField(_("名前（英語）"), max_length=100, blank=True)
    description_ja = models.CharField(_("説明（日本語）"), max_length=500, blank=True)
    description_en = models.CharField(_("説明（英語）"), max_length=500, blank=True)
    kind = models.CharField(max_length=16, choices=AppKind.choices, default=AppKind.PROMPT)
    system_prompt = models.TextField(_("システムプロンプト"), blank=True)
    prompt_template = models.TextField(_("プロンプト"))
    fields = models.JSONField(default=list, blank=True)
    output_format = models.CharField(
        _("出力形式"), max_length=16, choices=OutputFormat.choices, default=OutputFormat.MARKDOWN
    )
    recommended_alias = models.CharField(_("推奨モデル"), max_length=100, blank=True)
    uses_workspace = models.BooleanField(_("ワークスペースの資料を使う"), default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def display_name(self) -> str:
        english = (translation.get_language() or "ja").startswith("en")
        return (self.name_en or self.name_ja) if english else self.name_ja

    @property
    def display_description(self) -> str:
        english = (translation.get_language() or "ja").startswith("en")
        return (self.description_en or self.description_ja) if english else self.description_ja


class CatalogueStatus(models.TextChoices):
    PROPOSED = "proposed", _("審査待ち")
    APPROVED = "approved", _("掲載中")
    REJECTED = "rejected", _("見送り")


class PlatformApp(AppDefinition):
    """A built-in app (``builtin``) or a catalogue app, readable by every member once ``approved``.

    A proposal from a ministry is copied here at once with ``status=proposed`` (a snapshot: later
    edits of the ministry's app do not change what the platform admin reviews), so reviewing needs
    no read across ministries. ``source_app_id``/``source_ministry_id`` are plain ids, not foreign
    keys: a platform row must not point into a ministry's rows.
    """

    key = models.SlugField(max_length=64, unique=True)
    builtin = models.BooleanField(default=False)
    status = models.CharField(
        max_length=16, choices=CatalogueStatus.choices, default=CatalogueStatus.APPROVED
    )
    source_app_id = models.BigIntegerField(null=True, blank=True)
    source_ministry_id = models.BigIntegerField(null=True, blank=True)
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    position = models.PositiveSmallIntegerField(default=100)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.key

    @property
    def ref(self) -> str:
        return f"p{self.pk}"


class MinistryApp(TenantModel, AppDefinition):
    """An app made with the builder; private to ``owner`` or shared with the ministry."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    visibility = models.CharField(
        _("公開範囲"), max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE
    )
    proposal = models.CharField(max_length=16, choices=Proposal.choices, default=Proposal.NONE, blank=True)
    workspace = models.ForeignKey(
        "documents.Workspace",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [
            models.Index(fields=["ministry", "owner", "-updated_at"], name="aiapp_owner_idx"),
            models.Index(fields=["ministry", "visibility"], name="aiapp_visibility_idx"),
        ]

    def __str__(self) -> str:
        return self.name_ja

    @property
    def ref(self) -> str:
        return f"m{self.pk}"


class AppRun(TenantModel):
    """One run of an app by a user; output text and status live on ``message`` (saved as it streams).

    ``findings`` are :class:`apps.aiapps.kobun.Finding` dicts (校正), ``corrected`` the text with the
    deterministic suggestions applied; ``sources`` the numbered passages sent to the model.
    """

    platform_app = models.ForeignKey(
        PlatformApp, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    ministry_app = models.ForeignKey(
        MinistryApp, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    app_name = models.CharField(max_length=100)
    app_kind = models.CharField(max_length=16, choices=AppKind.choices, default=AppKind.PROMPT)
    output_format = models.CharField(
        max_length=16, choices=OutputFormat.choices, default=OutputFormat.MARKDOWN
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    inputs = models.JSONField(default=dict, blank=True)
    findings = models.JSONField(default=list, blank=True)
    checked_text = models.TextField(blank=True)
    corrected = models.TextField(blank=True)
    sources = models.JSONField(default=list, blank=True)
    workspace_id_used = models.BigIntegerField(null=True, blank=True)
    alias_name = models.CharField(max_length=100)
    level = models.PositiveSmallIntegerField(choices=Clearance.choices, default=1)
    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    message = models.OneToOneField("chat.Message", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["ministry", "user", "-created_at"], name="aiapprun_user_idx")]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("aiapps:run", args=[self.pk])

    @property
    def app_ref(self) -> str:
        """The reference of the app this run used (``""`` when it was deleted since)."""
        if self.platform_app_id:
            return f"p{self.platform_app_id}"
        return f"m{self.ministry_app_id}" if self.ministry_app_id else ""

    @property
    def output(self) -> str:
        return self.message.content

    @property
    def status(self) -> str:
        return self.message.status


class AppFavourite(TenantModel):
    """A user's star on one app (platform or ministry)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    platform_app = models.ForeignKey(
        PlatformApp, null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    ministry_app = models.ForeignKey(
        MinistryApp, null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["ministry", "user"], name="aiappfav_user_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(platform_app__isnull=True) ^ Q(ministry_app__isnull=True), name="aiappfav_one_app"
            ),
            models.UniqueConstraint(
                fields=["ministry", "user", "platform_app"], name="aiappfav_platform_uniq"
            ),
            models.UniqueConstraint(
                fields=["ministry", "user", "ministry_app"], name="aiappfav_ministry_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.platform_app_id or self.ministry_app_id}"
