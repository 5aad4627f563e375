"""Who a model call made deep inside another feature is charged to.

Embedding calls happen far from the request that caused them (the ingestion
pipeline, ``hybrid_search`` under ``/v1/search`` or an answer), and the code
that calls the model (:mod:`apps.search.embeddings`) does not know the user or
API key. The caller that does know wraps the work in :func:`usage_context`;
the code that writes the ledger row reads :func:`current_usage_context`::

    with usage_context(feature="ingest", user_id=document.uploaded_by_id):
        vectors = embeddings.embed_passages(...)

A context variable, so it follows the code into ``sync_to_async`` threads and
never leaks between requests. Without a context the row is still written (with
the caller's default feature and no user): every model call is in the ledger.
Security: the context only names *who is charged*; the ministry of the row
always comes from the active ministry scope.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class UsageContext:
    feature: str
    user_id: int | None = None
    api_key_id: int | None = None
    team_id: int | None = None


_current: ContextVar[UsageContext | None] = ContextVar("gennai_usage_context", default=None)


def current_usage_context() -> UsageContext | None:
    return _current.get()


@contextlib.contextmanager
def usage_context(
    *, feature: str, user_id: int | None = None, api_key_id: int | None = None, team_id: int | None = None
) -> Iterator[UsageContext]:
    """Charge the model calls made inside the block to ``feature`` and the given user or key."""
    context = UsageContext(feature=feature, user_id=user_id, api_key_id=api_key_id, team_id=team_id)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
