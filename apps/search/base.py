"""The search backend contract (issue 7; see /work/notes/search_interface.md and docs/search.md).

``apps.search`` is the only code that talks to a search engine (DESIGN.md
invariants 4 and 12). Ingestion (``apps.documents``) hands it
:class:`ChunkRecord` rows; readers get :class:`SearchHit` rows back from
:meth:`SearchBackend.search`.

Contract every backend MUST keep (checked by ``apps/search/tests/test_conformance.py``
for each backend):

* ``index_chunks`` is an idempotent upsert keyed by ``chunk_id``: indexing the
  same chunk twice leaves one copy.
* ``search`` filters on ``ministry_id`` AND ``workspace_id IN workspace_ids``
  inside the query sent to the engine, never only in the caller; an empty
  ``workspace_ids`` returns ``[]`` without querying (nothing is public by
  default). ``document_ids`` narrows further, never widens.
* After ``delete_document`` / ``delete_workspace`` returns, no search returns
  the removed chunks.
* ``health`` never raises; it reports what is wrong in ``detail``.
* ``search`` looks at the first :data:`MAX_QUERY_CHARS` characters of ``query``
  (:func:`bounded_query`): a long text is searched by its beginning, never an error.

A backend SHOULD fuse a lexical and a vector ranking by reciprocal-rank fusion
(k=60) when a query embedding is given, and rank lexically otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

RRF_K = 60
# Characters of a query a search looks at: the first ones. Answers and /v1/search refuse
# longer questions; AI apps pass whole inputs (up to 20,000 characters per field), and on
# PostgreSQL every distinct word became a tsquery term (≈7,000 of them: "stack depth limit
# exceeded"; ≈2,900: seconds), on Elasticsearch a clause of the multi_match.
MAX_QUERY_CHARS = 2000


def bounded_query(query: str) -> str:
    """The part of ``query`` a search uses (its first :data:`MAX_QUERY_CHARS` characters)."""
    return query[:MAX_QUERY_CHARS]


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk to index, as ingestion produced it."""

    chunk_id: int  # documents.Chunk primary key (idempotent upsert key)
    ministry_id: int
    workspace_id: int
    document_id: int
    ordinal: int  # position of the chunk in its document
    text: str  # normalised (NFKC) chunk text
    page_start: int  # 1-based; 0 when the format has no pages
    page_end: int
    char_start: int  # offsets into the document's normalised full text
    char_end: int
    heading: str = ""
    embedding: tuple[float, ...] | None = None


@dataclass(frozen=True)
class SearchHit:
    """One retrieved chunk; ``score`` is the fused score (scale per backend), higher is better.

    A backend SHOULD fill ``similarity`` for hits its vector leg ranked.
    """

    chunk_id: int
    document_id: int
    workspace_id: int
    ordinal: int
    score: float
    text: str
    page_start: int
    page_end: int
    char_start: int
    char_end: int
    heading: str
    # Cosine similarity of the chunk to the query embedding, when the vector leg scored it
    # (None: lexical-only hit, or no embedding). Used as relevance evidence (apps/search/relevance.py).
    similarity: float | None = None


@dataclass(frozen=True)
class SearchHealth:
    ok: bool
    detail: str = ""


class SearchBackend(Protocol):
    name: str

    def index_chunks(self, *, ministry_id: int, chunks: Sequence[ChunkRecord]) -> None: ...

    def delete_document(self, *, ministry_id: int, document_id: int) -> int: ...

    def delete_workspace(self, *, ministry_id: int, workspace_id: int) -> int: ...

    def search(
        self,
        *,
        ministry_id: int,
        workspace_ids: Sequence[int],
        query: str,
        query_embedding: Sequence[float] | None = None,
        limit: int = 10,
        document_ids: Sequence[int] | None = None,
    ) -> list[SearchHit]: ...

    def health(self) -> SearchHealth: ...


BACKENDS = {
    "postgres": "apps.search.postgres.PostgresBackend",
    "elasticsearch": "apps.search.elastic.ElasticsearchBackend",
}

_instances: dict[str, SearchBackend] = {}


def get_backend() -> SearchBackend:
    """The backend named by ``settings.GENNAI_SEARCH_BACKEND`` ("postgres" default | "elasticsearch")."""
    name = getattr(settings, "GENNAI_SEARCH_BACKEND", "postgres") or "postgres"
    backend = _instances.get(name)
    if backend is None:
        if name not in BACKENDS:
            raise ValueError(f"unknown GENNAI_SEARCH_BACKEND {name!r} (choose from {sorted(BACKENDS)})")
        backend = import_string(BACKENDS[name])()
        _instances[name] = backend
    return backend


def reset_backends() -> None:
    """Forget the built backends (tests that change settings)."""
    _instances.clear()


def rrf_fuse(rankings: Sequence[Sequence[int]], *, k: int = RRF_K) -> dict[int, float]:
    """Reciprocal-rank fusion: ``sum(1 / (k + rank))`` over the rankings (rank from 1)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return scores
