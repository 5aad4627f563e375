"""Elasticsearch search backend (production): an index per ministry, kuromoji + CJK bigrams, kNN + BM25, RRF.

Security (DESIGN.md invariants 4 and 12):

* Each ministry has its own index ``<prefix>-<ministry id>-chunks-v<N>`` behind
  the alias ``<prefix>-<ministry id>-chunks``; the index name is derived from
  the ministry id in one place (:func:`alias_name`), never from a parameter.
* Data-plane requests (bulk, search, delete) are sent with that ministry's own
  API key, created through the security API with privileges on
  ``<prefix>-<ministry id>-chunks*`` only and cached per process: even a bug
  that named another index would be refused by the cluster.
* Every search body carries ``ministry_id`` and ``workspace_id`` filters, in
  the BM25 query and in the kNN ``filter`` (:func:`build_search_bodies`).

Fusion is reciprocal-rank fusion computed here, client-side, over one
``_msearch`` of the two legs: the server's ``rrf`` retriever needs a paid
licence on Elasticsearch 8.x.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from elastic_transport import BaseNode
from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError, helpers

from apps.tenancy.scope import ScopeError, current_ministry_id

from .base import ChunkRecord, SearchHealth, SearchHit, bounded_query, rrf_fuse

TEMPLATE_PATH = Path(settings.BASE_DIR) / "infra" / "elasticsearch" / "chunks-template.json"
BULK_CHUNK_SIZE = 500  # documents per bulk request
BULK_MAX_BYTES = 10 * 1024 * 1024
# Backpressure: a 429 (the cluster's write queue is full) is retried with backoff, not dropped.
BULK_MAX_RETRIES = 5
KEY_EXPIRATION = "2d"  # ministry keys expire on the cluster…
KEY_RENEW_SECONDS = 24 * 3600  # …and each process replaces its own well before that


def _prefix() -> str:
    return str(settings.GENNAI_ELASTICSEARCH_INDEX_PREFIX)


def alias_name(ministry_id: int) -> str:
    """The ministry's alias: the only index name any data-plane request for it uses."""
    if not isinstance(ministry_id, int) or ministry_id <= 0:
        raise ScopeError(f"invalid ministry id: {ministry_id!r}")
    return f"{_prefix()}-{ministry_id}-chunks"


def index_name(ministry_id: int, version: int) -> str:
    return f"{alias_name(ministry_id)}-v{version}"


def index_template() -> dict[str, Any]:
    """The template of infra/elasticsearch/, with the index pattern and vector size filled in."""
    template = json.loads(TEMPLATE_PATH.read_text())
    template["index_patterns"] = [f"{_prefix()}-*-chunks-v*"]
    template["template"]["mappings"]["properties"]["embedding"]["dims"] = int(
        settings.GENNAI_EMBEDDING_DIMENSIONS
    )
    return dict(template)


def access_filter(
    *, ministry_id: int, workspace_ids: Sequence[int], document_ids: Sequence[int] | None
) -> list[dict[str, Any]]:
    """Security: the access rule of every search, as Elasticsearch filter clauses."""
    clauses: list[dict[str, Any]] = [
        {"term": {"ministry_id": ministry_id}},
        {"terms": {"workspace_id": sorted({int(w) for w in workspace_ids})}},
    ]
    if document_ids is not None:
        clauses.append({"terms": {"document_id": sorted({int(d) for d in document_ids})}})
    return clauses


def build_search_bodies(
    *,
    ministry_id: int,
    workspace_ids: Sequence[int],
    query: str,
    query_embedding: Sequence[float] | None,
    depth: int,
    document_ids: Sequence[int] | None,
) -> list[dict[str, Any]]:
    """The BM25 leg (kuromoji + CJK bigram fields) and, with a vector, the kNN leg; both filtered."""
    filters = access_filter(ministry_id=ministry_id, workspace_ids=workspace_ids, document_ids=document_ids)
    source = {"excludes": ["embedding"]}
    bodies: list[dict[str, Any]] = [
        {
            "size": depth,
            "_source": source,
            "query": {
                "bool": {
                    "filter": filters,
                    "must": [
                        {
                            "multi_match": {
                                "query": bounded_query(query),  # one clause per term: bounded
                                "fields": ["text", "text.cjk", "heading^2", "heading.cjk^2"],
                                "type": "most_fields",
                            }
                        }
                    ],
                }
            },
        }
    ]
    if query_embedding is not None:
        bodies.append(
            {
                "size": depth,
                "_source": source,
                "knn": {
                    "field": "embedding",
                    "query_vector": [float(v) for v in query_embedding],
                    "k": depth,
                    "num_candidates": max(depth * 4, 100),
                    "filter": {"bool": {"filter": copy.deepcopy(filters)}},
                },
            }
        )
    return bodies


def _require_scope(ministry_id: int) -> None:
    """Security: the backend acts only for the ministry of the active scope (same rule as PostgreSQL)."""
    if current_ministry_id() != ministry_id:
        raise ScopeError(f"search for ministry {ministry_id} outside its scope")


class ElasticsearchBackend:
    """Production backend; one client per ministry key, one admin client for indices and keys."""

    name = "elasticsearch"
    candidates_factor = 4

    def __init__(self, *, node_class: type[BaseNode] | None = None) -> None:
        self.url = str(settings.GENNAI_ELASTICSEARCH_URL)
        if not self.url:
            raise ValueError("GENNAI_SEARCH_BACKEND=elasticsearch needs GENNAI_ELASTICSEARCH_URL")
        self.admin_key = str(settings.GENNAI_ELASTICSEARCH_API_KEY or "")
        self.per_ministry_keys = bool(getattr(settings, "GENNAI_ELASTICSEARCH_PER_MINISTRY_KEYS", True))
        self.node_class = node_class
        self._lock = threading.Lock()
        self._clients: dict[int, tuple[Elasticsearch, float]] = {}
        self._ready: set[int] = set()
        self._key_ids: dict[int, list[str]] = {}
        self._template_done = False
        self.admin = self._client(self.admin_key or None)

    # --- clients and keys -------------------------------------------------------------

    def _client(self, api_key: str | None) -> Elasticsearch:
        kwargs: dict[str, Any] = {"request_timeout": 30, "retry_on_timeout": True, "max_retries": 2}
        if self.node_class is not None:
            kwargs["node_class"] = self.node_class
        return Elasticsearch(self.url, api_key=api_key, **kwargs)

    def ministry_client(self, ministry_id: int) -> Elasticsearch:
        """The client holding ``ministry_id``'s own key (restricted to its indices).

        Keys are created once per process and replaced after ``KEY_RENEW_SECONDS``;
        the cluster expires them after ``KEY_EXPIRATION``, so keys of stopped
        processes do not pile up.
        """
        cached = self._clients.get(ministry_id)
        if cached is not None and time.monotonic() - cached[1] < KEY_RENEW_SECONDS:
            return cached[0]
        with self._lock:
            cached = self._clients.get(ministry_id)
            if cached is not None and time.monotonic() - cached[1] < KEY_RENEW_SECONDS:
                return cached[0]
            if not self.per_ministry_keys:
                client = self.admin  # development clusters without security (docs/search.md)
            else:
                key = self.admin.security.create_api_key(
                    name=f"{alias_name(ministry_id)}-key",
                    expiration=KEY_EXPIRATION,
                    role_descriptors={
                        "ministry_chunks": {
                            # Security: this key can touch the ministry's own indices and nothing else.
                            "indices": [
                                {
                                    "names": [f"{alias_name(ministry_id)}*"],
                                    "privileges": ["read", "write", "view_index_metadata"],
                                }
                            ]
                        }
                    },
                    metadata={"gennai_ministry_id": ministry_id},
                )
                self._key_ids.setdefault(ministry_id, []).append(str(key["id"]))
                client = self._client(str(key["encoded"]))
            self._clients[ministry_id] = (client, time.monotonic())
        return client

    # --- indices ------------------------------------------------------------------

    def ensure_index(self, ministry_id: int) -> None:
        """The template, the ministry's first index and its alias, once per process."""
        if ministry_id in self._ready:
            return
        with self._lock:
            if not self._template_done:
                self.admin.indices.put_index_template(name=f"{_prefix()}-chunks", **index_template())
                self._template_done = True
            alias = alias_name(ministry_id)
            if not self.admin.indices.exists_alias(name=alias):
                try:
                    self.admin.indices.create(
                        index=index_name(ministry_id, 1), aliases={alias: {"is_write_index": True}}
                    )
                except ApiError as exc:
                    if exc.meta.status != 400 or "resource_already_exists" not in str(exc):
                        raise
            self._ready.add(ministry_id)

    # --- the contract -------------------------------------------------------------

    def index_chunks(self, *, ministry_id: int, chunks: Sequence[ChunkRecord]) -> None:
        _require_scope(ministry_id)
        for chunk in chunks:
            if chunk.ministry_id != ministry_id:
                raise ScopeError(f"chunk {chunk.chunk_id} belongs to ministry {chunk.ministry_id}")
        if not chunks:
            return
        self.ensure_index(ministry_id)
        alias = alias_name(ministry_id)

        def actions() -> Iterator[dict[str, Any]]:
            for chunk in chunks:
                source: dict[str, Any] = {
                    "ministry_id": ministry_id,
                    "workspace_id": chunk.workspace_id,
                    "document_id": chunk.document_id,
                    "chunk_id": chunk.chunk_id,
                    "ordinal": chunk.ordinal,
                    "text": chunk.text,
                    "heading": chunk.heading,
                    "page_start": chunk.page_start,
                    "page_end": chunk.page_end,
                    "char_start": chunk.char_start,
                    "char_end": chunk.char_end,
                }
                if chunk.embedding is not None:
                    source["embedding"] = [float(v) for v in chunk.embedding]
                # _id = chunk id: indexing again replaces the document (idempotent upsert).
                yield {"_op_type": "index", "_index": alias, "_id": str(chunk.chunk_id), "_source": source}

        for ok, item in helpers.streaming_bulk(
            self.ministry_client(ministry_id),
            actions(),
            chunk_size=BULK_CHUNK_SIZE,
            max_chunk_bytes=BULK_MAX_BYTES,
            max_retries=BULK_MAX_RETRIES,
            initial_backoff=1,
            raise_on_error=True,
            raise_on_exception=True,
            refresh="wait_for",
        ):
            if not ok:  # pragma: no cover - raise_on_error raises first
                raise RuntimeError(f"bulk indexing failed: {item}")

    def _delete(self, *, ministry_id: int, field: str, value: int) -> int:
        _require_scope(ministry_id)
        try:
            result = self.ministry_client(ministry_id).delete_by_query(
                index=alias_name(ministry_id),
                query={
                    "bool": {"filter": [{"term": {"ministry_id": ministry_id}}, {"term": {field: value}}]}
                },
                refresh=True,
                conflicts="proceed",
                wait_for_completion=True,
            )
        except NotFoundError:
            return 0  # the ministry never indexed anything
        return int(result.get("deleted", 0))

    def delete_document(self, *, ministry_id: int, document_id: int) -> int:
        return self._delete(ministry_id=ministry_id, field="document_id", value=document_id)

    def delete_workspace(self, *, ministry_id: int, workspace_id: int) -> int:
        return self._delete(ministry_id=ministry_id, field="workspace_id", value=workspace_id)

    def search(
        self,
        *,
        ministry_id: int,
        workspace_ids: Sequence[int],
        query: str,
        query_embedding: Sequence[float] | None = None,
        limit: int = 10,
        document_ids: Sequence[int] | None = None,
    ) -> list[SearchHit]:
        _require_scope(ministry_id)
        if not list(workspace_ids) or limit <= 0 or (document_ids is not None and not list(document_ids)):
            return []  # nothing is public by default
        depth = max(limit * self.candidates_factor, 40)
        bodies = build_search_bodies(
            ministry_id=ministry_id,
            workspace_ids=workspace_ids,
            query=query,
            query_embedding=query_embedding,
            depth=depth,
            document_ids=document_ids,
        )
        alias = alias_name(ministry_id)
        searches: list[dict[str, Any]] = []
        for body in bodies:
            searches.extend([{"index": alias}, body])
        try:
            result = self.ministry_client(ministry_id).msearch(searches=searches)
        except NotFoundError:
            return []
        rankings: list[list[int]] = []
        sources: dict[int, dict[str, Any]] = {}
        similarity: dict[int, float] = {}
        for leg, response in enumerate(result["responses"]):
            if "error" in response:
                if response.get("status") == 404:
                    continue
                raise RuntimeError(f"elasticsearch search failed: {response['error']}")
            ranking = []
            for hit in response["hits"]["hits"]:
                src = hit["_source"]
                # Defence in depth: a hit outside the access rule is dropped, never returned.
                if src["ministry_id"] != ministry_id or src["workspace_id"] not in set(workspace_ids):
                    continue
                ranking.append(int(src["chunk_id"]))
                sources[int(src["chunk_id"])] = src
                if leg == 1 and hit.get("_score") is not None:  # kNN leg: cosine _score is (1 + cos) / 2
                    similarity[int(src["chunk_id"])] = 2.0 * float(hit["_score"]) - 1.0
            rankings.append(ranking)
        fused = rrf_fuse(rankings)
        best = sorted(fused, key=lambda key: (-fused[key], key))[:limit]
        return [
            SearchHit(
                chunk_id=key,
                document_id=int(sources[key]["document_id"]),
                workspace_id=int(sources[key]["workspace_id"]),
                ordinal=int(sources[key]["ordinal"]),
                score=fused[key],
                text=str(sources[key]["text"]),
                page_start=int(sources[key]["page_start"]),
                page_end=int(sources[key]["page_end"]),
                char_start=int(sources[key]["char_start"]),
                char_end=int(sources[key]["char_end"]),
                heading=str(sources[key].get("heading", "")),
                similarity=similarity.get(key),
            )
            for key in best
        ]

    def health(self) -> SearchHealth:
        try:
            status = self.admin.options(request_timeout=3).cluster.health()["status"]
        except (ApiError, TransportError) as exc:
            return SearchHealth(ok=False, detail=f"elasticsearch: {type(exc).__name__}")
        return SearchHealth(ok=status in ("green", "yellow"), detail=f"elasticsearch ({status})")

    # --- operations -----------------------------------------------------------------

    def reindex(self, *, ministry_id: int) -> str:
        """Copy the ministry's index into a new version and swap the alias atomically; returns the new index.

        Use after a template change (analysis, mappings). Searches keep answering
        from the old index until the swap; writes during the copy are not
        carried over, so pause ingestion (docs/search.md).
        """
        alias = alias_name(ministry_id)
        self.ensure_index(ministry_id)
        current = sorted(self.admin.indices.get_alias(name=alias).keys())
        version = max(int(name.rsplit("-v", 1)[1]) for name in current) + 1
        target = index_name(ministry_id, version)
        self.admin.indices.put_index_template(name=f"{_prefix()}-chunks", **index_template())
        self.admin.indices.create(index=target)
        self.admin.reindex(
            source={"index": alias}, dest={"index": target}, wait_for_completion=True, refresh=True
        )
        actions: list[dict[str, Any]] = [{"remove": {"index": name, "alias": alias}} for name in current]
        actions.append({"add": {"index": target, "alias": alias, "is_write_index": True}})
        self.admin.indices.update_aliases(actions=actions)
        for name in current:
            self.admin.indices.delete(index=name)
        return target

    def drop_all_for_tests(self) -> None:
        """Delete this prefix's indices and invalidate the keys this process created (live test tier)."""
        self.admin.indices.delete(
            index=f"{_prefix()}-*-chunks-v*", ignore_unavailable=True, allow_no_indices=True
        )
        if self._key_ids:
            self.admin.security.invalidate_api_key(ids=[k for ids in self._key_ids.values() for k in ids])
