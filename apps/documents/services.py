"""Writes: workspaces, members, uploads and deletions.

Every function takes the acting user and objects already fetched through
:mod:`apps.documents.selectors` (so the actor is a member), checks the role it
needs, runs in a transaction, writes an audit event and queues pipeline work
only after commit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.search.base import get_backend
from apps.tenancy.models import Membership

from . import permissions
from .detect import FileType, Rejection, detect_type
from .models import Document, DocumentStatus, MemberRole, Workspace, WorkspaceKind, WorkspaceMember
from .storage import documents_storage, storage_name


def _enqueue(task_name: str, **kwargs: Any) -> None:
    """Send a pipeline task once the current transaction commits."""
    from . import tasks

    task = getattr(tasks, task_name)
    transaction.on_commit(lambda: task.delay(**kwargs))


# --- Workspaces ---------------------------------------------------------------------


@transaction.atomic
def workspace_create(*, actor: Any, name: str, kind: str, level: int) -> Workspace:
    """A new workspace in the actor's ministry, with the actor as its owner."""
    name = (name or "").strip()
    if not name:
        raise ValidationError("name required")
    if kind not in WorkspaceKind.values or level not in (1, 2, 3):
        raise ValidationError("invalid kind or level")
    workspace: Workspace = Workspace.objects.create(name=name[:200], kind=kind, level=level, owner=actor)
    WorkspaceMember.objects.create(workspace=workspace, user=actor, role=MemberRole.OWNER)
    audit_record(
        actor=actor,
        action="documents.workspace_create",
        target_type="workspace",
        target_id=workspace.pk,
        ministry_id=workspace.ministry_id,
        data={"name": workspace.name, "kind": kind, "level": level},
    )
    return workspace


@transaction.atomic
def workspace_member_set(*, actor: Any, workspace: Workspace, username: str, role: str) -> WorkspaceMember:
    """Add a colleague of the same ministry to a shared workspace, or change their role.

    Security: only the owner may; the user must hold a membership of the
    workspace's ministry (a user of another ministry cannot be added, whatever
    name is typed); the owner's own row cannot be changed here.
    """
    if not permissions.can_manage(permissions.role_of(workspace)) or not permissions.can_have_members(
        workspace
    ):
        raise PermissionDenied
    if role not in (MemberRole.EDITOR, MemberRole.VIEWER):
        raise ValidationError("invalid role")
    membership = (
        Membership.objects.filter(ministry_id=workspace.ministry_id, user__username=username.strip())
        .select_related("user")
        .first()
    )
    if membership is None:
        raise ValidationError("no such user in this ministry")
    user = membership.user
    if user.pk == workspace.owner_id:
        raise ValidationError("the owner's role cannot be changed")
    member: WorkspaceMember
    member, _ = WorkspaceMember.objects.update_or_create(
        workspace=workspace, user=user, defaults={"role": role}
    )
    audit_record(
        actor=actor,
        action="documents.member_set",
        target_type="workspace",
        target_id=workspace.pk,
        ministry_id=workspace.ministry_id,
        data={"user_id": user.pk, "role": role},
    )
    return member


@transaction.atomic
def workspace_member_remove(*, actor: Any, workspace: Workspace, member_id: int) -> None:
    """Remove a member (not the owner) from a shared workspace; owner only."""
    if not permissions.can_manage(permissions.role_of(workspace)):
        raise PermissionDenied
    member = WorkspaceMember.objects.filter(pk=member_id, workspace=workspace).first()
    if member is None or member.user_id == workspace.owner_id:
        raise ValidationError("no such member")
    member.delete()
    audit_record(
        actor=actor,
        action="documents.member_remove",
        target_type="workspace",
        target_id=workspace.pk,
        ministry_id=workspace.ministry_id,
        data={"user_id": member.user_id},
    )


@transaction.atomic
def workspace_delete(*, actor: Any, workspace: Workspace) -> None:
    """Delete a workspace: hidden at once, out of the index now, files and rows by the purge task."""
    if not permissions.can_manage(permissions.role_of(workspace)):
        raise PermissionDenied
    workspace = Workspace.objects.select_for_update().get(pk=workspace.pk)
    now = timezone.now()
    workspace.deleting = True
    workspace.save(update_fields=["deleting", "updated_at"])
    Document.objects.filter(workspace=workspace).update(status=DocumentStatus.DELETING, deleting_at=now)
    # Out of search before the transaction commits (the purge task repeats it).
    get_backend().delete_workspace(ministry_id=workspace.ministry_id, workspace_id=workspace.pk)
    audit_record(
        actor=actor,
        action="documents.workspace_delete",
        target_type="workspace",
        target_id=workspace.pk,
        ministry_id=workspace.ministry_id,
        data={"name": workspace.name},
    )
    _enqueue("workspace_purge_task", ministry_id=workspace.ministry_id, workspace_id=workspace.pk)


# --- Uploads --------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadResult:
    """The outcome for one file of an upload: a document (new or existing) or a refusal."""

    filename: str
    document: Document | None = None
    duplicate: bool = False
    error_code: str = ""
    error_ja: str = ""
    error_en: str = ""

    @property
    def ok(self) -> bool:
        return self.document is not None

    def error(self, language: str) -> str:
        return self.error_en if language.startswith("en") else self.error_ja


def _preflight(file_type: str, data: bytes) -> None:
    """Cheap checks at upload so obvious failures answer at once (PDF: opens, unencrypted, pages)."""
    if file_type == FileType.PDF:
        from .parsers import parse_pdf_page_count

        parse_pdf_page_count(data)


def _read(upload: Any) -> bytes:
    size = getattr(upload, "size", None)
    limit = settings.GENNAI_DOCUMENT_MAX_BYTES
    if size is not None and size > limit:
        raise _too_large(size)
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise _too_large(len(data))
    return bytes(data)


def _too_large(size: int) -> Rejection:
    limit_mb = settings.GENNAI_DOCUMENT_MAX_BYTES // (1024 * 1024)
    return Rejection(
        "too_large",
        f"ファイルサイズが上限（{limit_mb} MB）を超えています。",
        f"The file is larger than the limit ({limit_mb} MB).",
    )


def document_upload(*, actor: Any, workspace: Workspace, files: list[Any]) -> list[UploadResult]:
    """Store each file and queue its ingestion; each file is judged alone.

    A refused file (empty, too large, unsupported type, zip bomb, corrupt or
    encrypted PDF) gets an :class:`UploadResult` with the reason and leaves
    nothing behind; it never affects the other files of the same upload. The
    same bytes already in the workspace return the existing document.
    """
    if not permissions.can_upload(permissions.role_of(workspace)):
        raise PermissionDenied
    results = []
    for upload in files[: settings.GENNAI_DOCUMENT_MAX_FILES]:
        filename = str(getattr(upload, "name", "") or "file")[:255]
        try:
            results.append(_upload_one(actor=actor, workspace=workspace, upload=upload, filename=filename))
        except Rejection as refusal:
            results.append(
                UploadResult(filename, error_code=refusal.code, error_ja=refusal.ja, error_en=refusal.en)
            )
    limit = settings.GENNAI_DOCUMENT_MAX_FILES
    for upload in files[limit:]:
        results.append(
            UploadResult(
                str(getattr(upload, "name", ""))[:255],
                error_code="too_many_files",
                error_ja=f"一度にアップロードできるのは {limit} ファイルまでです。",
                error_en=f"At most {limit} files per upload.",
            )
        )
    return results


def _upload_one(*, actor: Any, workspace: Workspace, upload: Any, filename: str) -> UploadResult:
    data = _read(upload)
    file_type = detect_type(data, filename=filename)
    _preflight(file_type, data)
    sha256 = hashlib.sha256(data).hexdigest()
    existing = Document.objects.filter(workspace=workspace, sha256=sha256).first()
    if existing is not None:
        if existing.status == DocumentStatus.DELETING:
            # The same bytes (one row and one stored file per workspace) are on their way
            # out: answering "already uploaded" would hand back a document that the purge
            # is about to remove, and its stored original with it.
            raise Rejection(
                "being_deleted",
                "同じファイルを削除している途中です。しばらくしてからもう一度アップロードしてください。",
                "The same file is being deleted. Upload it again in a moment.",
            )
        return UploadResult(filename, document=existing, duplicate=True)
    storage = documents_storage()
    # A name of its own (apps/documents/storage.py): never an object another document uses.
    name = storage.save(
        storage_name(ministry_id=workspace.ministry_id, workspace_id=workspace.pk, sha256=sha256),
        ContentFile(data),
    )
    try:
        with transaction.atomic():
            _lock_live_workspace(workspace)
            now = timezone.now()
            document = Document.objects.create(
                workspace=workspace,
                filename=filename,
                file_type=file_type,
                size=len(data),
                sha256=sha256,
                storage_name=name,
                uploaded_by=actor,
                status=DocumentStatus.QUEUED,
                queued_at=now,
            )
            audit_record(
                actor=actor,
                action="documents.upload",
                target_type="document",
                target_id=document.pk,
                ministry_id=workspace.ministry_id,
                data={
                    "workspace_id": workspace.pk,
                    "filename": filename,
                    "sha256": sha256,
                    "size": len(data),
                },
            )
            _enqueue("document_parse_task", ministry_id=workspace.ministry_id, document_id=document.pk)
    except IntegrityError:
        # The same file arrived twice at once: the other upload won.
        existing = Document.objects.filter(workspace=workspace, sha256=sha256).first()
        _discard_stored(storage, name, workspace=workspace)
        if existing is None:
            raise
        return UploadResult(filename, document=existing, duplicate=True)
    except BaseException:
        _discard_stored(storage, name, workspace=workspace)
        raise
    return UploadResult(filename, document=document)


def _lock_live_workspace(workspace: Workspace) -> None:
    """Lock the workspace row for this document's insert; refuse when it is being deleted.

    The view fetched the workspace before the files were read and stored; an
    owner's :func:`workspace_delete` (which takes the same lock) may have
    committed since. Without the lock a document would be created in a
    workspace marked ``deleting`` (reported as uploaded, then purged, or an
    error once the purge removed the workspace).
    """
    live = (
        Workspace.objects.select_for_update()
        .filter(pk=workspace.pk, deleting=False)
        .values_list("pk", flat=True)
        .first()
    )
    if live is None:
        raise Rejection(
            "workspace_deleted",
            "このワークスペースは削除されています。",
            "This workspace has been deleted.",
        )


def _discard_stored(storage: Any, name: str, *, workspace: Workspace) -> None:
    """Remove the copy this upload stored when its document was not created.

    Each upload stores its own object (:func:`storage_name`); when its row is not
    created (the same bytes uploaded twice at once lose on the unique constraint,
    or any error), that object belongs to no document, and no deletion (of the
    document, of the workspace, by retention) would ever remove it. The check
    is a guard: a name in use by a document is never deleted here.
    """
    if not Document.objects.filter(workspace=workspace, storage_name=name).exists():
        storage.delete(name)


# --- Deletion ---------------------------------------------------------------------------


@transaction.atomic
def document_delete(*, actor: Any, document: Document) -> None:
    """Delete a document: hidden and out of the index now; file and rows removed by the purge task.

    Locks the row first, so an embedding batch in flight finishes (or waits)
    and cannot index the document again after this commits.
    """
    if not permissions.can_upload(permissions.role_of(document.workspace)):
        raise PermissionDenied
    _mark_deleting(document_id=document.pk)
    audit_record(
        actor=actor,
        action="documents.delete",
        target_type="document",
        target_id=document.pk,
        ministry_id=document.ministry_id,
        data={
            "workspace_id": document.workspace_id,
            "filename": document.filename,
            "sha256": document.sha256,
        },
    )


def _mark_deleting(*, document_id: int) -> None:
    document = Document.objects.select_for_update().filter(pk=document_id).first()
    if document is None:
        return
    document.status = DocumentStatus.DELETING
    document.deleting_at = timezone.now()
    document.save(update_fields=["status", "deleting_at", "updated_at"])
    get_backend().delete_document(ministry_id=document.ministry_id, document_id=document.pk)
    _enqueue("document_purge_task", ministry_id=document.ministry_id, document_id=document.pk)


@transaction.atomic
def document_retention_apply(*, ministry_id: int, days: int, now: Any = None) -> int:
    """Delete (as the system) the ministry's documents uploaded more than ``days`` days ago."""
    cutoff = (now or timezone.now()) - timedelta(days=days)
    ids = list(
        Document.objects.filter(created_at__lt=cutoff)
        .exclude(status=DocumentStatus.DELETING)
        .values_list("pk", flat=True)
    )
    for document_id in ids:
        _mark_deleting(document_id=document_id)
    if ids:
        audit_record(
            actor=None,
            action="documents.retention_delete",
            target_type="ministry",
            target_id=ministry_id,
            ministry_id=ministry_id,
            data={"days": days, "documents": ids},
        )
    return len(ids)
