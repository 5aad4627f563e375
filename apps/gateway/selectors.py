"""Reads of API keys. ApiKey is not a TenantModel, so every read names the ministry."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from apps.tenancy.models import Membership
from apps.tenancy.scope import ministry_scope

from .models import ApiKey


def api_key_list(*, ministry_id: int) -> QuerySet[ApiKey]:
    """The ministry's keys, newest first (revoked ones included, for the record)."""
    return ApiKey.objects.filter(ministry_id=ministry_id).select_related("created_by")


def get_api_key_for_actor(*, actor: Membership, key_id: int) -> ApiKey:
    """Security: ``actor`` is the acting membership; "missing" and "another ministry's" are one 404."""
    key = ApiKey.objects.filter(pk=key_id, ministry_id=actor.ministry_id).first()
    if key is None:
        raise Http404
    return key


def key_workspace_choices(*, ministry_id: int) -> list[tuple[int, str, int]]:
    """``(id, name, level)`` of the workspaces a key of ``ministry_id`` may be limited to.

    Only the ministry's shared workspaces (a key never reads personal ones), read
    under its scope (ORM filter and RLS): the key form cannot offer, and so cannot
    accept, another ministry's workspace.
    """
    from apps.documents.models import Workspace, WorkspaceKind

    with ministry_scope(ministry_id=ministry_id):
        rows = Workspace.objects.filter(kind=WorkspaceKind.SHARED, deleting=False).order_by("name", "pk")
        return [(pk, name, int(level)) for pk, name, level in rows.values_list("pk", "name", "level")]


def workspace_names(*, ministry_id: int, workspace_ids: set[int]) -> dict[int, str]:
    """Names of the given workspaces of ``ministry_id`` (for the key list); a deleted one is absent."""
    from apps.documents.models import Workspace

    if not workspace_ids:
        return {}
    with ministry_scope(ministry_id=ministry_id):
        return dict(Workspace.objects.filter(pk__in=workspace_ids).values_list("pk", "name"))
