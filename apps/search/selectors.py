"""Reads over the search index: the one hybrid query every caller uses."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from . import embeddings
from .base import SearchHit, bounded_query, get_backend

logger = logging.getLogger("gennai.search")


def hybrid_search(
    *,
    ministry_id: int,
    workspace_ids: Sequence[int],
    query: str,
    level: int,
    limit: int,
    document_ids: Sequence[int] | None = None,
) -> list[SearchHit]:
    """Hybrid search of ``workspace_ids``; lexical only when no embedding can be had now.

    Must run inside ``ministry_id``'s scope. ``workspace_ids`` must already be
    the caller's own (checked by the caller through the documents selectors);
    the backend filters on them and on the ministry inside the query, and an
    empty list finds nothing. ``level`` is the highest 機密性 of those
    workspaces: the embedding call of the query text is classification-gated
    at that level. Only the first :data:`~apps.search.base.MAX_QUERY_CHARS`
    characters of ``query`` are used, for the embedding and the lexical leg alike.
    """
    query = bounded_query(query)
    vector: tuple[float, ...] | None
    try:
        vector = embeddings.embed_query(ministry_id=ministry_id, text=query, level=level)
    except embeddings.EmbeddingUnavailable as exc:
        logger.warning("search without embedding (lexical only): %s", exc)
        vector = None
    return get_backend().search(
        ministry_id=ministry_id,
        workspace_ids=workspace_ids,
        query=query,
        query_embedding=vector,
        limit=limit,
        document_ids=document_ids,
    )
