"""``POST /v1/search`` charges its query embedding to the key: one usage record, feature "search"."""

from __future__ import annotations

from typing import Any

from apps.gateway.tests.test_v1_search import call
from apps.quotas.models import UsageRecord
from apps.search.tests.test_retriever import _indexed
from apps.tenancy.scope import ministry_scope
from tests.support.embedding import EmbeddingServer, register_standard_embedding
from tests.support.fixtures import make_user


def test_search_query_embedding_is_recorded_for_the_key(
    world: Any, make_key: Any, embedding_server: EmbeddingServer, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    a, b = world.ministry_a, world.ministry_b
    register_standard_embedding(embedding_server)
    owner = make_user("owner-a", a, ["staff"])
    _indexed(owner, a, name="出張規程", text="宿泊料の上限は一泊一万二千円とする。")
    key, plaintext = make_key(a)
    status, body = call(plaintext, {"query": "宿泊料の上限"})
    assert status == 200, body
    with ministry_scope(ministry_id=a.pk):
        [row] = UsageRecord.objects.filter(feature="search")
    assert (row.api_key_id, row.endpoint, row.status, row.alias_name) == (
        key.pk,
        "embeddings",
        "ok",
        "standard-embedding",
    )
    assert row.prompt_tokens > 0 and row.model_name
    with ministry_scope(ministry_id=b.pk):
        assert not UsageRecord.objects.exists()
