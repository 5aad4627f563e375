"""Reads of workspaces and documents (always within the active ministry scope).

Security: a workspace is visible only to its members (a ``WorkspaceMember``
row; the creator is the first, as owner). Every read by id joins through the
member table on the actor, so another ministry's user (also hidden by the
scoped manager and RLS) and a colleague of the same ministry who is not a
member get the same 404 as for a missing id. A workspace being deleted is
already gone for everyone.
"""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404

from .models import Chunk, Document, DocumentStatus, Workspace, WorkspaceMember


def _authenticated(actor: Any) -> bool:
    return bool(getattr(actor, "is_authenticated", False))


def workspace_list_for_actor(*, actor: Any) -> QuerySet[Workspace]:
    """Workspaces the actor is a member of, with ``actor_role`` annotated, newest first."""
    if not _authenticated(actor):
        return Workspace.objects.none()
    role = WorkspaceMember.objects.filter(workspace=OuterRef("pk"), user_id=actor.pk).values("role")[:1]
    workspaces: QuerySet[Workspace] = (
        Workspace.objects.filter(deleting=False, members__user_id=actor.pk)
        .annotate(actor_role=Subquery(role))
        .order_by("-updated_at", "-id")
    )
    return workspaces


def workspace_ids_for_actor(*, actor: Any) -> list[int]:
    """Ids of the workspaces the actor may search (the ACL every search query carries)."""
    return list(workspace_list_for_actor(actor=actor).values_list("pk", flat=True))


def get_workspace_for_actor(*, actor: Any, workspace_id: int) -> Workspace:
    """Workspace ``workspace_id`` if the actor is a member (``actor_role`` set), else 404."""
    workspace = workspace_list_for_actor(actor=actor).filter(pk=workspace_id).first()
    if workspace is None:
        raise Http404
    return workspace


def get_document_for_actor(*, actor: Any, document_id: int) -> Document:
    """Document ``document_id`` if the actor is a member of its workspace, else 404.

    ``document.workspace`` is the workspace with ``actor_role`` annotated. A
    document being deleted is already gone.
    """
    if not _authenticated(actor):
        raise Http404
    document: Document | None = (
        Document.objects.filter(pk=document_id, workspace__members__user_id=actor.pk)
        .exclude(status=DocumentStatus.DELETING)
        .defer("text")
        .first()
    )
    if document is None:
        raise Http404
    document.workspace = get_workspace_for_actor(actor=actor, workspace_id=document.workspace_id)
    return document


def document_list(*, workspace: Workspace) -> QuerySet[Document]:
    """Documents of a workspace the caller already got through :func:`get_workspace_for_actor`."""
    return (
        Document.objects.filter(workspace=workspace)
        .exclude(status=DocumentStatus.DELETING)
        .defer("text", "page_offsets")
        .order_by("-created_at", "-id")
    )


def member_list(*, workspace: Workspace) -> QuerySet[WorkspaceMember]:
    return WorkspaceMember.objects.filter(workspace=workspace).select_related("user").order_by("id")


def chunk_list(*, document: Document) -> QuerySet[Chunk]:
    """Chunks of a document the caller already got through :func:`get_document_for_actor`."""
    return Chunk.objects.filter(document=document).order_by("ordinal")
