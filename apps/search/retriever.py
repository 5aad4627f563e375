"""A LangChain retriever over the workspaces one person may read.

``WorkspaceRetriever(actor_id=…, ministry_id=…, workspace_ids=[…], k=…)`` can be
handed to any LangChain chain. It holds ids only, never a trusted list: every
call enters the ministry's scope (RLS), checks that the actor is still active and
still a member of that ministry, re-reads which of ``workspace_ids`` the actor
is a member of *now* (a removed member or a deleted workspace stops matching at
once) and searches those only, with the workspace filter inside the backend's
query (DESIGN invariant 12).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever

from apps.tenancy.scope import ministry_scope

from .selectors import hybrid_search


def readable_workspaces(*, actor: Any, workspace_ids: list[int]) -> dict[int, int]:
    """``{workspace id: 機密性 level}`` of the requested workspaces the actor is a member of.

    Security: must run inside the ministry's scope; the membership join is
    :func:`apps.documents.selectors.workspace_list_for_actor`'s. A web request
    only reaches a ministry's scope through the user's ``Membership`` of it (the
    middleware); a retriever is handed the ministry id, so the membership is
    checked here: removing it (the user left the ministry's group) leaves the
    workspace member rows behind, and they must not keep the ministry readable.
    """
    from apps.documents.selectors import workspace_list_for_actor
    from apps.tenancy.models import Membership
    from apps.tenancy.scope import current_ministry_id

    ministry_id = current_ministry_id()
    if ministry_id is None:
        return {}
    if not Membership.objects.filter(user_id=actor.pk, ministry_id=ministry_id).exists():
        return {}
    wanted = {int(i) for i in workspace_ids}
    rows = workspace_list_for_actor(actor=actor).filter(pk__in=wanted).values_list("pk", "level")
    return dict(rows)


class WorkspaceRetriever(BaseRetriever):
    """Hybrid search over the actor's workspaces; returns passages with their source in ``metadata``."""

    actor_id: int
    ministry_id: int
    workspace_ids: list[int]
    k: int = 5

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[LCDocument]:
        from apps.documents.models import Document

        with ministry_scope(ministry_id=self.ministry_id):
            actor = get_user_model().objects.filter(pk=self.actor_id, is_active=True).first()
            if actor is None:
                return []
            levels = readable_workspaces(actor=actor, workspace_ids=self.workspace_ids)
            if not levels:
                return []
            hits = hybrid_search(
                ministry_id=self.ministry_id,
                workspace_ids=sorted(levels),
                query=query,
                level=max(levels.values()),
                limit=self.k,
            )
            names = dict(
                Document.objects.filter(pk__in={h.document_id for h in hits}).values_list("pk", "filename")
            )
        return [
            LCDocument(
                page_content=h.text,
                metadata={
                    "chunk_id": h.chunk_id,
                    "document_id": h.document_id,
                    "workspace_id": h.workspace_id,
                    "filename": names.get(h.document_id, ""),
                    "page": h.page_start,
                    "page_end": h.page_end,
                    "heading": h.heading,
                    "score": h.score,
                },
            )
            for h in hits
            if h.document_id in names
        ]
