"""Unsaved rows for the tenancy sweep (tests/test_tenancy_sweep.py): one factory per model."""

from __future__ import annotations

from typing import Any

from apps.documents.models import (
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
