"""Indexed chunks of the PostgreSQL search backend (``apps.search.postgres``).

One row per ``documents.Chunk`` as indexed: its text, Sudachi tokens (``tsv``)
and embedding (pgvector). The ids of the chunk, its document and workspace are
plain integers, not foreign keys: the index is a derived store that
``apps.documents`` fills and empties through :mod:`apps.search.base`, and a
search engine (Elasticsearch) holds the same fields the same way.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.db import models

from apps.tenancy.models import TenantModel


class VectorField(models.Field):  # type: ignore[type-arg]
    """A pgvector ``vector(N)`` column; written and read as text ``'[x,y,…]'`` by the backend's SQL."""

    def __init__(self, *args: Any, dimensions: int, **kwargs: Any) -> None:
        self.dimensions = dimensions
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        kwargs["dimensions"] = self.dimensions
        return name, path, args, kwargs

    def db_type(self, connection: Any) -> str:
        return f"vector({int(self.dimensions)})"


class IndexedChunk(TenantModel):
    """A chunk as the PostgreSQL backend indexes it (under RLS, like every tenant row).

    Security: ``ministry`` and ``workspace_id`` are on every row and every
    search filters on both in SQL (DESIGN.md invariant 12); RLS hides other
    ministries' rows on top, on the table and on each of its partitions.

    The table is partitioned by hash of ``workspace_id`` (search/0006,
    :mod:`apps.search.partitions`): its primary key in the database is
    ``(id, workspace_id)``; ``id`` alone is still unique (one sequence).
    """

    chunk_id = models.BigIntegerField()
    workspace_id = models.BigIntegerField()
    document_id = models.BigIntegerField()
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    heading = models.TextField(blank=True, default="")
    page_start = models.PositiveIntegerField(default=0)
    page_end = models.PositiveIntegerField(default=0)
    char_start = models.PositiveIntegerField(default=0)
    char_end = models.PositiveIntegerField(default=0)
    # Sudachi normalised forms, space-joined (apps.search.tokenize); tsv = to_tsvector('simple', tokens).
    tokens = models.TextField(blank=True, default="")
    tsv = SearchVectorField(null=True)
    embedding = VectorField(dimensions=settings.GENNAI_EMBEDDING_DIMENSIONS, null=True)
    indexed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # Idempotent upsert key: ON CONFLICT (ministry_id, workspace_id, chunk_id); a unique key
            # of a partitioned table must contain the partition key (workspace_id).
            models.UniqueConstraint(
                fields=["ministry", "workspace_id", "chunk_id"], name="search_chunk_unique_per_ministry"
            ),
        ]
        indexes = [
            # Every search: WHERE ministry_id = %s AND workspace_id = ANY(%s) [AND document_id = ANY(%s)].
            models.Index(fields=["ministry", "workspace_id", "document_id"], name="search_chunk_ws_doc"),
            # delete_document: WHERE ministry_id = %s AND document_id = %s.
            models.Index(fields=["ministry", "document_id"], name="search_chunk_doc"),
        ]
        # GIN (tsv) and HNSW (embedding::halfvec, search/0003) indexes are created in the
        # migrations with SQL: their access methods cannot lead with the ministry column. So is
        # search_chunk_ws_doc_vec (search/0005), the btree above including id and embedding for
        # the exact vector leg's index-only scan (docs/performance.md: retrieval). Since
        # search/0006 every index exists per partition (apps/search/partitions.py).

    def __str__(self) -> str:
        return f"chunk {self.chunk_id} (document {self.document_id})"
