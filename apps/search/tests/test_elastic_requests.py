"""The Elasticsearch backend's requests, recorded at the transport (no server needed; `make test`).

Asserts what the backend sends: index names bound to the ministry, the
ministry's own restricted API key on every data-plane request, the ministry
and workspace filters in every search body (BM25 and kNN legs), bulk writes
to the ministry's alias, reindex by an atomic alias swap. The same backend runs
the conformance suite against a real cluster in `make test-es`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from elasticsearch.helpers import BulkIndexError

from apps.search.base import ChunkRecord
from apps.search.elastic import ElasticsearchBackend, alias_name, build_search_bodies
from apps.tenancy.scope import ScopeError, ministry_scope
from tests.support.elastic import ADMIN_KEY, Recorded, RecordingNode, cluster

WS_A, WS_A2, WS_B = 11, 12, 21


@pytest.fixture
def es(settings: Any, ministries: tuple[Any, Any]) -> Iterator[ElasticsearchBackend]:
    settings.GENNAI_ELASTICSEARCH_URL = "http://es.test:9200"
    settings.GENNAI_ELASTICSEARCH_API_KEY = ADMIN_KEY
    settings.GENNAI_ELASTICSEARCH_INDEX_PREFIX = "gennai"
    settings.GENNAI_EMBEDDING_DIMENSIONS = 3
    cluster.reset()
    yield ElasticsearchBackend(node_class=RecordingNode)
    cluster.reset()


def chunk(ministry: Any, chunk_id: int, workspace_id: int, text: str, document_id: int = 1) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=chunk_id,
        ministry_id=ministry.pk,
        workspace_id=workspace_id,
        document_id=document_id,
        ordinal=chunk_id % 10,
        text=text,
        page_start=2,
        page_end=3,
        char_start=10,
        char_end=10 + len(text),
        heading="規程",
        embedding=(1.0, float(chunk_id % 7), 0.5),
    )


def index(es: ElasticsearchBackend, ministry: Any, chunks: list[ChunkRecord]) -> None:
    with ministry_scope(ministry_id=ministry.pk):
        es.index_chunks(ministry_id=ministry.pk, chunks=chunks)


def search(
    es: ElasticsearchBackend, ministry: Any, workspaces: list[int], query: str, **kw: Any
) -> list[Any]:
    with ministry_scope(ministry_id=ministry.pk):
        return es.search(ministry_id=ministry.pk, workspace_ids=workspaces, query=query, **kw)


def key_of(ministry: Any) -> str:
    """The encoded key the cluster issued for ``ministry``'s indices (exactly one)."""
    keys = [k for k, names in cluster.keys.items() if names == [f"{alias_name(ministry.pk)}*"]]
    assert len(keys) == 1, cluster.keys
    return keys[0]


def data_plane(requests: list[Recorded]) -> list[Recorded]:
    return [r for r in requests if r.path.endswith(("_bulk", "_msearch", "_delete_by_query"))]


@pytest.fixture
def loaded(es: ElasticsearchBackend, ministries: tuple[Any, Any]) -> tuple[Any, Any]:
    a, b = ministries
    index(es, a, [chunk(a, 1, WS_A, "出張旅費の精算"), chunk(a, 2, WS_A2, "育児休業の延長", document_id=2)])
    index(es, b, [chunk(b, 1, WS_B, "出張旅費の精算（総務省）")])
    return a, b


def test_index_and_alias_names_are_bound_to_the_ministry(loaded: tuple[Any, Any]) -> None:
    a, b = loaded
    assert alias_name(a.pk) == f"gennai-{a.pk}-chunks"
    assert cluster.aliases == {
        f"gennai-{a.pk}-chunks": {f"gennai-{a.pk}-chunks-v1"},
        f"gennai-{b.pk}-chunks": {f"gennai-{b.pk}-chunks-v1"},
    }
    bulks = [r for r in cluster.requests if r.path.endswith("_bulk")]
    assert len(bulks) == 2
    for request, ministry in zip(bulks, (a, b), strict=True):
        assert request.api_key == key_of(ministry)
        assert {h["index"]["_index"] for h in request.body[::2]} == {alias_name(ministry.pk)}
        assert {s["ministry_id"] for s in request.body[1::2]} == {ministry.pk}
        assert request.query.get("refresh") == ["wait_for"]


def test_ministry_keys_are_restricted_to_their_own_indices(
    es: ElasticsearchBackend, loaded: tuple[Any, Any]
) -> None:
    a, _b = loaded
    creations = [r for r in cluster.requests if r.path == "/_security/api_key"]
    assert len(creations) == 2  # one per ministry, then cached
    for request in creations:
        assert request.api_key == ADMIN_KEY
        ((role,),) = [list(request.body["role_descriptors"].values())]
        assert len(role["indices"]) == 1
        assert set(role["indices"][0]["privileges"]) <= {"read", "write", "view_index_metadata"}
    search(es, a, [WS_A], "旅費")
    assert len([r for r in cluster.requests if r.path == "/_security/api_key"]) == 2
    # Admin credentials never carry data: every bulk/search/delete uses a ministry key.
    assert all(r.api_key != ADMIN_KEY for r in data_plane(cluster.requests))


def test_every_search_body_carries_ministry_and_workspace_filters(
    es: ElasticsearchBackend, loaded: tuple[Any, Any]
) -> None:
    a, _b = loaded
    cluster.requests.clear()
    hits = search(es, a, [WS_A], "出張旅費", query_embedding=(1.0, 1.0, 0.5), document_ids=[1])
    assert [h.chunk_id for h in hits] == [1]
    assert (hits[0].page_start, hits[0].page_end, hits[0].heading) == (2, 3, "規程")
    (request,) = cluster.requests
    assert request.path == "/_msearch" and request.api_key == key_of(a)
    headers, bodies = request.body[::2], request.body[1::2]
    assert {h["index"] for h in headers} == {alias_name(a.pk)}
    expected = [
        {"term": {"ministry_id": a.pk}},
        {"terms": {"workspace_id": [WS_A]}},
        {"terms": {"document_id": [1]}},
    ]
    lexical, knn = bodies
    assert lexical["query"]["bool"]["filter"] == expected
    assert knn["knn"]["filter"] == {"bool": {"filter": expected}}
    fields = lexical["query"]["bool"]["must"][0]["multi_match"]["fields"]
    assert "text" in fields and "text.cjk" in fields  # kuromoji + CJK bigram sub-field


def test_other_workspace_and_other_ministry_get_nothing(
    es: ElasticsearchBackend, loaded: tuple[Any, Any]
) -> None:
    a, b = loaded
    assert search(es, a, [WS_A2], "出張旅費") == []
    cluster.requests.clear()
    # B names A's workspace: B's query goes to B's index with B's key and B's filter.
    assert search(es, b, [WS_A], "出張旅費", query_embedding=(1.0, 1.0, 0.5)) == []
    (request,) = cluster.requests
    assert request.api_key == key_of(b)
    assert {h["index"] for h in request.body[::2]} == {alias_name(b.pk)}
    assert all(body_filter(body)[0] == {"term": {"ministry_id": b.pk}} for body in request.body[1::2])


def body_filter(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["knn"]["filter"]["bool"]["filter"] if "knn" in body else body["query"]["bool"]["filter"]


def test_a_ministry_key_cannot_reach_another_ministrys_index(
    es: ElasticsearchBackend, loaded: tuple[Any, Any]
) -> None:
    a, b = loaded
    # Simulate a bug that pointed A's client at B's index: the cluster refuses A's key.
    client = es.ministry_client(a.pk)
    result = client.msearch(searches=[{"index": alias_name(b.pk)}, {"query": {"match_all": {}}, "size": 5}])
    assert result["responses"][0]["status"] == 403


def test_empty_workspace_list_sends_nothing(es: ElasticsearchBackend, loaded: tuple[Any, Any]) -> None:
    a, _b = loaded
    cluster.requests.clear()
    assert search(es, a, [], "出張旅費") == []
    assert search(es, a, [WS_A], "出張旅費", document_ids=[]) == []
    assert cluster.requests == []


def test_scope_must_match(es: ElasticsearchBackend, loaded: tuple[Any, Any]) -> None:
    a, b = loaded
    with ministry_scope(ministry_id=b.pk), pytest.raises(ScopeError):
        es.search(ministry_id=a.pk, workspace_ids=[WS_A], query="出張")
    with ministry_scope(ministry_id=a.pk), pytest.raises(ScopeError):
        es.index_chunks(ministry_id=a.pk, chunks=[chunk(b, 9, WS_B, "他府省")])


def test_delete_document_filters_on_ministry_and_document(
    es: ElasticsearchBackend, loaded: tuple[Any, Any]
) -> None:
    a, b = loaded
    cluster.requests.clear()
    with ministry_scope(ministry_id=a.pk):
        assert es.delete_document(ministry_id=a.pk, document_id=1) == 1
    (request,) = cluster.requests
    assert request.path == f"/{alias_name(a.pk)}/_delete_by_query" and request.api_key == key_of(a)
    assert request.body["query"]["bool"]["filter"] == [
        {"term": {"ministry_id": a.pk}},
        {"term": {"document_id": 1}},
    ]
    assert search(es, a, [WS_A], "出張旅費") == []
    assert [h.chunk_id for h in search(es, b, [WS_B], "出張旅費")] == [1]  # B's document 1 untouched


def test_reindexing_a_chunk_replaces_it(es: ElasticsearchBackend, loaded: tuple[Any, Any]) -> None:
    a, _b = loaded
    index(es, a, [chunk(a, 1, WS_A, "出張旅費の精算（改訂）")])
    hits = search(es, a, [WS_A], "出張旅費")
    assert [h.chunk_id for h in hits] == [1] and "改訂" in hits[0].text


def test_bulk_errors_raise(es: ElasticsearchBackend, loaded: tuple[Any, Any]) -> None:
    a, _b = loaded
    cluster.keys[key_of(a)] = []  # the key lost its privileges
    with pytest.raises(BulkIndexError):
        index(es, a, [chunk(a, 5, WS_A, "権限のない書き込み")])


def test_reindex_swaps_the_alias_atomically(es: ElasticsearchBackend, loaded: tuple[Any, Any]) -> None:
    a, b = loaded
    cluster.requests.clear()
    assert es.reindex(ministry_id=a.pk) == f"gennai-{a.pk}-chunks-v2"
    assert cluster.aliases[alias_name(a.pk)] == {f"gennai-{a.pk}-chunks-v2"}
    (swap,) = [r for r in cluster.requests if r.path == "/_aliases"]
    assert swap.body["actions"] == [
        {"remove": {"index": f"gennai-{a.pk}-chunks-v1", "alias": alias_name(a.pk)}},
        {"add": {"index": f"gennai-{a.pk}-chunks-v2", "alias": alias_name(a.pk), "is_write_index": True}},
    ]
    assert f"gennai-{a.pk}-chunks-v1" not in cluster.indices
    assert [h.chunk_id for h in search(es, a, [WS_A], "出張旅費")] == [1]
    assert cluster.aliases[alias_name(b.pk)] == {f"gennai-{b.pk}-chunks-v1"}


def test_template_has_japanese_analysis_and_vector_size(
    es: ElasticsearchBackend, loaded: tuple[Any, Any]
) -> None:
    (template,) = cluster.templates.values()
    analysis = template["template"]["settings"]["analysis"]
    assert analysis["tokenizer"]["ja_kuromoji"]["type"] == "kuromoji_tokenizer"
    assert "ja_bigram" in analysis["analyzer"]["ja_cjk_bigram"]["filter"]
    props = template["template"]["mappings"]["properties"]
    assert props["embedding"] == {"type": "dense_vector", "dims": 3, "index": True, "similarity": "cosine"}
    assert props["text"]["fields"]["cjk"]["analyzer"] == "ja_cjk_bigram"
    assert template["index_patterns"] == ["gennai-*-chunks-v*"]


def test_health(es: ElasticsearchBackend, settings: Any) -> None:
    assert es.health().ok
    settings.GENNAI_ELASTICSEARCH_URL = "http://127.0.0.1:1"
    down = ElasticsearchBackend().health()
    assert not down.ok and "elasticsearch" in down.detail


def test_build_search_bodies_without_vector_has_one_leg() -> None:
    bodies = build_search_bodies(
        ministry_id=3,
        workspace_ids=[5, 4, 5],
        query="旅費",
        query_embedding=None,
        depth=40,
        document_ids=None,
    )
    assert len(bodies) == 1
    assert bodies[0]["query"]["bool"]["filter"] == [
        {"term": {"ministry_id": 3}},
        {"terms": {"workspace_id": [4, 5]}},
    ]


def test_ministry_keys_expire_and_are_renewed(
    es: ElasticsearchBackend, loaded: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _b = loaded
    (creation, *_rest) = [r for r in cluster.requests if r.path == "/_security/api_key"]
    assert creation.body["expiration"] == "2d"
    first = key_of(a)
    monkeypatch.setattr("apps.search.elastic.KEY_RENEW_SECONDS", 0)
    search(es, a, [WS_A], "旅費")
    assert cluster.requests[-1].api_key != first
    assert cluster.requests[-1].api_key in cluster.keys


def test_knn_hits_report_cosine_similarity(es: ElasticsearchBackend, loaded: tuple[Any, Any]) -> None:
    """Relevance evidence (apps/search/relevance.py): the kNN leg's _score (1 + cos) / 2 becomes cos."""
    a, _ = loaded
    (hit,) = search(es, a, [WS_A], "出張旅費", query_embedding=(1.0, 1.0, 0.5))
    assert hit.similarity is not None and abs(hit.similarity - 1.0) < 1e-9  # chunk 1's vector is the query's
    assert search(es, a, [WS_A], "出張旅費")[0].similarity is None  # BM25 only: no vector evidence
