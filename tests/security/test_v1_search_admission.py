"""/v1/search embeds the query with a model and charges it to the key, but admission never runs.

Attack: an API key whose ministry admin set ``rpm=1`` (or used up its month
budget) keeps calling ``/v1/search``: every call embeds the query (a model call
on the ledger, charged to the key) without any reservation, so the key's rate
limit and budget do not apply to it.
"""

from __future__ import annotations

from typing import Any

import redis

from apps.gateway.tests.test_v1_search import call
from apps.quotas.tests.admission_support import admin_of, set_limit
from apps.search.tests.test_retriever import _indexed
from tests.support.embedding import EmbeddingServer, register_standard_embedding
from tests.support.fixtures import make_user


def test_search_respects_the_keys_rate_limit(
    world: Any, make_key: Any, embedding_server: EmbeddingServer, settings: Any, quota_redis: redis.Redis
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    a = world.ministry_a
    register_standard_embedding(embedding_server)
    _indexed(
        make_user("sec-owner-a", a, ["staff"]),
        a,
        name="出張規程",
        text="宿泊料の上限は一泊一万二千円とする。",
    )
    key, plaintext = make_key(a)
    set_limit(a, admin_of(a, "sec-search-admin"), level="api_key", api_key=key, rpm=1)
    statuses = [call(plaintext, {"query": "宿泊料の上限"})[0] for _ in range(3)]
    assert 429 in statuses, f"rpm=1 key made {statuses.count(200)} searches (model calls) in a minute"
