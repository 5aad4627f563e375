"""What each workspace role may do (checked after the selectors found the workspace)."""

from __future__ import annotations

from .models import MemberRole, Workspace, WorkspaceKind

_EDIT = {MemberRole.OWNER, MemberRole.EDITOR}


def role_of(workspace: Workspace) -> str:
    """The actor's role, as annotated by :mod:`apps.documents.selectors` ("" when not fetched there)."""
    return str(getattr(workspace, "actor_role", "") or "")


def can_upload(role: str) -> bool:
    """Owners and editors add and delete documents; viewers only read."""
    return role in _EDIT


def can_manage(role: str) -> bool:
    """Only owners change members and delete the workspace."""
    return role == MemberRole.OWNER


def can_have_members(workspace: Workspace) -> bool:
    """A personal workspace has exactly one member, its owner."""
    return workspace.kind == WorkspaceKind.SHARED
