"""Unsaved rows for the tenancy sweep (tests/test_tenancy_sweep.py): one factory per model."""

from __future__ import annotations

from typing import Any

from apps.documents.models import (
    Answer,
    Chunk,
    Document,
    DocumentRetention,
    MemberRole,
    Workspace,
    WorkspaceKind,
    WorkspaceMember,
)
from apps.tenancy.scope import ministry_scope


def _owner() -> Any:
    from apps.accounts.models import User

    user, _ = User.objects.get_or_create(username="sweep-docs-owner", defaults={"subject": "sub-sweep-docs"})
    return user


def sweep_workspace(ministry: Any) -> Workspace:
    return Workspace(ministry=ministry, name="検証", kind=WorkspaceKind.SHARED, level=1, owner=_owner())


def _saved_workspace(ministry: Any) -> Workspace:
    with ministry_scope(ministry_id=ministry.pk):
        workspace = sweep_workspace(ministry)
        workspace.save()
    return workspace


def sweep_workspace_member(ministry: Any) -> WorkspaceMember:
    return WorkspaceMember(
        ministry=ministry, workspace=_saved_workspace(ministry), user=_owner(), role=MemberRole.OWNER
    )


def sweep_document(ministry: Any) -> Document:
    return Document(
        ministry=ministry,
        workspace=_saved_workspace(ministry),
        filename="a.txt",
        file_type="text",
        size=1,
        sha256="0" * 64,
        storage_name="sweep",
    )


def sweep_chunk(ministry: Any) -> Chunk:
    with ministry_scope(ministry_id=ministry.pk):
        document = sweep_document(ministry)
        document.save()
    return Chunk(
        ministry=ministry,
        document=document,
        workspace_id=document.workspace_id,
        ordinal=0,
        text="A only",
        char_start=0,
        char_end=6,
        token_count=2,
    )


def sweep_retention(ministry: Any) -> DocumentRetention:
    return DocumentRetention(ministry=ministry, days=30)


# --- URLs of staff A's objects for tests/test_tenant_endpoints.py (called inside A's scope) ---


def _staff_a() -> Any:
    from apps.accounts.models import User

    return User.objects.get(username="staff-a")


def ready_document_of_staff_a(ministry: Any, *, data: bytes = "本文です。".encode()) -> Document:
    """A workspace of staff A with one stored document (rows only, no pipeline run)."""
    import hashlib

    from django.core.files.base import ContentFile

    from apps.documents.services import workspace_create
    from apps.documents.storage import documents_storage, storage_name

    workspace = workspace_create(actor=_staff_a(), name="A の文書", kind=WorkspaceKind.SHARED, level=1)
    sha256 = hashlib.sha256(data).hexdigest()
    name = documents_storage().save(
        storage_name(ministry_id=ministry.pk, workspace_id=workspace.pk, sha256=sha256), ContentFile(data)
    )
    return Document.objects.create(
        workspace=workspace,
        filename="a.txt",
        file_type="text",
        size=len(data),
        sha256=sha256,
        storage_name=name,
        uploaded_by=_staff_a(),
        status="ready",
    )


def workspace_url_of_staff_a(ministry: Any) -> str:
    return ready_document_of_staff_a(ministry).workspace.get_absolute_url()


def document_status_url_of_staff_a(ministry: Any) -> str:
    from django.urls import reverse

    return reverse("documents:status", args=[ready_document_of_staff_a(ministry).pk])


def document_download_url_of_staff_a(ministry: Any) -> str:
    from django.urls import reverse

    return reverse("documents:download", args=[ready_document_of_staff_a(ministry).pk])


def document_delete_url_of_staff_a(ministry: Any) -> str:
    from django.urls import reverse

    return reverse("documents:delete", args=[ready_document_of_staff_a(ministry).pk])


def sweep_answer(ministry: Any) -> Answer:
    """An unsaved answer of ``ministry`` (its workspace, conversation and message are saved in its scope)."""
    from apps.chat.tests.factories import sweep_message

    workspace = _saved_workspace(ministry)
    message = sweep_message(ministry)
    with ministry_scope(ministry_id=ministry.pk):
        message.save()
    return Answer(
        ministry=ministry,
        workspace=workspace,
        asked_by=_owner(),
        conversation_id=message.conversation_id,
        message=message,
        question="A only",
    )
