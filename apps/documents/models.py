"""Workspaces, their members, uploaded documents and the chunks cut from them.

Every model is a :class:`~apps.tenancy.models.TenantModel` under row-level
security. Reads by id go through :mod:`apps.documents.selectors`: a workspace is
visible to its owner and its members only (DESIGN invariant 12: nothing is public
by default, not even inside the ministry).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from apps.registry.models import Clearance
from apps.tenancy.models import TenantModel


class WorkspaceKind(models.TextChoices):
    PERSONAL = "personal", _("個人")
    SHARED = "shared", _("共有")


class MemberRole(models.TextChoices):
    """What a member may do: owners manage members and delete the workspace,
    editors upload and delete documents, viewers read and ask."""

    OWNER = "owner", _("所有者")
    EDITOR = "editor", _("編集者")
    VIEWER = "viewer", _("閲覧者")


class Workspace(TenantModel):
    """A set of documents that is searched together, personal or shared.

    ``level`` (機密性 1–3) is the classification of everything uploaded into it;
    the router's classification gate applies it to every model call that carries
    its text. Membership is explicit: the creator gets an ``owner`` row in
    :class:`WorkspaceMember`, and nobody else sees a workspace without a row.
    """

    name = models.CharField(_("名前"), max_length=200)
    kind = models.CharField(_("種類"), max_length=16, choices=WorkspaceKind.choices)
    level = models.PositiveSmallIntegerField(_("機密性"), choices=Clearance.choices, default=1)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    deleting = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [
            # "Workspaces I own" (the member table serves "workspaces I belong to").
            models.Index(fields=["ministry", "owner"], name="workspace_owner_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("documents:workspace", args=[self.pk])


class WorkspaceMember(TenantModel):
    """One user's role in one workspace (the access list of the workspace)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="members", db_index=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    role = models.CharField(_("役割"), max_length=16, choices=MemberRole.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "user"], name="workspace_member_uniq"),
        ]
        indexes = [
            # Every access check: "is user U a member of workspace W" and "U's workspaces".
            models.Index(fields=["ministry", "user", "workspace"], name="workspace_member_user_idx"),
            # The members page of one workspace.
            models.Index(fields=["ministry", "workspace"], name="workspace_member_ws_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.workspace_id}:{self.user_id}:{self.role}"


class DocumentStatus(models.TextChoices):
    QUEUED = "queued", _("待機中")
    PARSING = "parsing", _("解析中")
    OCR = "ocr", _("文字認識中")
    EMBEDDING = "embedding", _("ベクトル化中")
    INDEXING = "indexing", _("索引登録中")
    READY = "ready", _("完了")
    FAILED = "failed", _("失敗")
    DELETING = "deleting", _("削除中")


#: States in which the pipeline still has work to do (the live progress bar polls).
ACTIVE_STATES = frozenset(
    {
        DocumentStatus.QUEUED,
        DocumentStatus.PARSING,
        DocumentStatus.OCR,
        DocumentStatus.EMBEDDING,
        DocumentStatus.INDEXING,
    }
)


class Document(TenantModel):
    """One uploaded file and where the ingestion pipeline is with it.

    ``status`` moves queued → parsing (→ ocr) → embedding → indexing → ready, or
    to ``failed`` with a reason in both languages, or to ``deleting``. Each state
    has its timestamp (``<state>_at``, the last time it was entered). ``text`` is
    the normalised full text: chunk offsets point into it, and ``page_offsets[i]``
    is where page ``i + 1`` starts in it (empty for formats without pages).
    """

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="documents", db_index=False
    )
    filename = models.CharField(_("ファイル名"), max_length=255)
    file_type = models.CharField(_("形式"), max_length=16)
    size = models.BigIntegerField(_("サイズ"))
    sha256 = models.CharField(max_length=64)
    storage_name = models.CharField(max_length=500)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+", db_index=False
    )
    status = models.CharField(
        _("状態"), max_length=16, choices=DocumentStatus.choices, default=DocumentStatus.QUEUED
    )
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    # How often the parse step started: the stalled-pipeline sweep gives up after a few.
    attempts = models.PositiveSmallIntegerField(default=0)
    failure_ja = models.CharField(max_length=500, blank=True)
    failure_en = models.CharField(max_length=500, blank=True)
    # Pages that had no text layer and could not be OCR'd (1-based), shown as a warning.
    skipped_pages = models.JSONField(default=list, blank=True)
    page_count = models.PositiveIntegerField(default=0)
    # OCR results so far, {"<page>": text, or null when the page could not be read}:
    # OCR runs in batches of pages, one task each, and resumes where it stopped.
    ocr_text = models.JSONField(default=dict, blank=True)
    # Per OCR'd page, one box per character of its ``ocr_text`` ([l, b, r, t] in PDF
    # points, null for inserted spaces): citations on scanned pages are highlighted too.
    ocr_boxes = models.JSONField(default=dict, blank=True)
    text = models.TextField(blank=True)
    page_offsets = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    parsing_at = models.DateTimeField(null=True, blank=True)
    ocr_at = models.DateTimeField(null=True, blank=True)
    embedding_at = models.DateTimeField(null=True, blank=True)
    indexing_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    deleting_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Dedupe: the same bytes are stored once per workspace.
            models.UniqueConstraint(
                fields=["ministry", "workspace", "sha256"], name="document_ws_sha256_uniq"
            ),
        ]
        indexes = [
            # The document list of a workspace, newest first.
            models.Index(fields=["ministry", "workspace", "-created_at"], name="document_ws_recent_idx"),
            # Retention sweep and the stalled-pipeline sweep.
            models.Index(fields=["ministry", "status", "updated_at"], name="document_status_idx"),
        ]

    def __str__(self) -> str:
        return self.filename

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATES

    @property
    def progress_percent(self) -> int:
        if self.status == DocumentStatus.READY:
            return 100
        if not self.progress_total:
            return 0
        return min(100, round(100 * self.progress_done / self.progress_total))

    def failure_reason(self, language: str) -> str:
        return self.failure_en if language.startswith("en") and self.failure_en else self.failure_ja


class Chunk(TenantModel):
    """A passage of a document, as indexed for search and cited in answers.

    ``char_start``/``char_end`` are offsets into :attr:`Document.text`;
    ``page_start``/``page_end`` are 1-based (0 for formats without pages).
    ``boxes`` (PDF only) maps each page the chunk touches to the bounding boxes
    of its lines in PDF points, ``{"3": [[x0, y0, x1, y1], ...]}``, for the
    passage viewer's highlight. ``indexed_at`` is set once the chunk is in the
    search index: the embed step resumes from the first chunk without it.
    ``workspace`` is copied from the document so the access rule can be applied
    to chunks directly (invariant 12).
    """

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks", db_index=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    heading = models.CharField(max_length=500, blank=True)
    page_start = models.PositiveIntegerField(default=0)
    page_end = models.PositiveIntegerField(default=0)
    char_start = models.PositiveIntegerField()
    char_end = models.PositiveIntegerField()
    token_count = models.PositiveIntegerField()
    boxes = models.JSONField(null=True, blank=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["document", "ordinal"]
        constraints = [
            # A re-run replaces the chunks of a document; it can never add a second set.
            models.UniqueConstraint(fields=["document", "ordinal"], name="chunk_document_ordinal_uniq"),
        ]
        indexes = [
            # The embed step's "next chunks of this document not yet indexed", and the viewer.
            models.Index(fields=["ministry", "document", "ordinal"], name="chunk_document_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"


class DocumentRetention(TenantModel):
    """How long a ministry keeps uploaded documents (days since upload).

    One row per ministry, set by its administrators; no row means documents are
    kept until deleted. Applied daily by ``documents.retention_sweep`` (Celery beat).
    """

    days = models.PositiveIntegerField(_("保存期間（日）"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["ministry"], name="document_retention_ministry_uniq")]

    def __str__(self) -> str:
        return f"{self.ministry_id}:{self.days}d"


# --- Answers with citations (issue 7, apps/documents/answers.py) -------------------


class AnswerMode(models.TextChoices):
    CHUNKS = "chunks", _("検索した抜粋")
    WHOLE = "whole", _("文書全体")


class Answer(TenantModel):
    """A question asked in a workspace and the sources its answer was given.

    The text of the question and of the answer live in a chat
    :class:`~apps.chat.models.Conversation` / ``Message`` pair (so streaming,
    usage records and the classification gate are chat's); this row ties the
    answer to the workspace and keeps the numbered ``sources`` sent to the model,
    ``[{"n", "chunk_id", "document_id", "filename", "page_start", "page_end"}]``,
    so the sources are shown even when the model forgets to cite. Only the person
    who asked, while still a member of the workspace, reads or streams it
    (:func:`apps.documents.answers.get_answer_for_actor`).
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    asked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    message = models.OneToOneField("chat.Message", on_delete=models.CASCADE, related_name="+")
    question = models.TextField()
    mode = models.CharField(max_length=16, choices=AnswerMode.choices, default=AnswerMode.CHUNKS)
    document_ids = models.JSONField(default=list, blank=True)
    sources = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["ministry", "workspace", "-created_at"], name="answer_ws_recent_idx")]

    def __str__(self) -> str:
        return f"{self.workspace_id}:{self.pk}"
