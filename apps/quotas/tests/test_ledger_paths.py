"""Embedding calls write complete usage records, charged through usage_context."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from apps.quotas.context import current_usage_context, usage_context
from apps.quotas.models import UsageRecord
from apps.registry import snapshot
from apps.registry.models import Deployment
from apps.search.embeddings import EmbeddingUnavailable, embed_passages, embed_query
from apps.search.tests.test_embeddings import register_embedding
from apps.tenancy.scope import ministry_scope
from tests.support.fake_upstream import FakeUpstream, closed_port_url
from tests.support.fixtures import make_user


def test_context_is_scoped_to_the_block() -> None:
    assert current_usage_context() is None
    with usage_context(feature="rag", user_id=7) as outer:
        with usage_context(feature="search", api_key_id=3):
            assert current_usage_context() == type(outer)(feature="search", api_key_id=3)
        assert current_usage_context() is outer
    assert current_usage_context() is None


def test_embedding_calls_are_recorded_with_feature_user_model_and_cost(ministries: tuple[Any, Any]) -> None:
    a, b = ministries
    user = make_user("uploader", a, ["staff"])
    with FakeUpstream() as upstream:
        register_embedding(urls=[upstream.url], model_name="e5-large", ministries=[a])
        # On-prem GPU share: 2 tokens / 100 tok/s / 3600 × 3600 yen × 1 GPU = 0.02 yen
        Deployment.objects.filter(name="e5-large-0").update(
            gpu_hour_yen=Decimal(3600), throughput_tokens_per_s=100
        )
        snapshot.reset_for_tests()
        with ministry_scope(ministry_id=a.pk):
            embed_passages(ministry_id=a.pk, texts=["規程", "出張旅費"])  # no context: default feature
            with usage_context(feature="ingest", user_id=user.pk):
                embed_passages(ministry_id=a.pk, texts=["規程", "出張旅費"])
            with usage_context(feature="rag", user_id=user.pk):
                embed_query(ministry_id=a.pk, text="旅費")
            rows = list(UsageRecord.objects.order_by("id"))
    assert [(r.feature, r.user_id, r.prompt_tokens) for r in rows] == [
        ("ingest", None, 2),
        ("ingest", user.pk, 2),
        ("rag", user.pk, 1),
    ]
    first = rows[0]
    assert (first.endpoint, first.alias_name, first.model_name, first.status) == (
        "embeddings",
        "standard-embedding",
        "e5-large",
        "ok",
    )
    assert first.deployment_id == Deployment.objects.get(name="e5-large-0").pk
    assert first.cost_yen == Decimal("0.0200") and rows[2].cost_yen == Decimal("0.0100")
    with ministry_scope(ministry_id=b.pk):
        assert not UsageRecord.objects.exists()


def test_failed_embedding_is_recorded_as_an_error(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    register_embedding(urls=[closed_port_url()], model_name="e5-down", ministries=[a])
    with ministry_scope(ministry_id=a.pk):
        with pytest.raises(EmbeddingUnavailable), usage_context(feature="search", api_key_id=None):
            embed_query(ministry_id=a.pk, text="旅費")
        [row] = UsageRecord.objects.all()
    assert (row.status, row.feature, row.prompt_tokens, row.deployment_id) == ("error", "search", 0, None)
    assert row.detail and row.cost_yen == 0
