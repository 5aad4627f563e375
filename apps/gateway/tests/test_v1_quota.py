"""/v1 under budgets and limits, over a real ASGI server and real Redis: OpenAI-shaped 429 with
Retry-After, max_tokens capped, and every request settled to its ledger row (complete, upstream
dropped mid-stream, client gone) — counters equal the ledger with nothing held."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
import redis

from apps.quotas.journal import usage_journal_drain
from apps.quotas.models import UsageRecord
from apps.quotas.tests.admission_support import (  # noqa: F401  (quota_redis_fixture provides quota_redis)
    admin_of,
    counters,
    quota_redis_fixture,
    set_limit,
)
from apps.tenancy.scope import ministry_scope

from .conftest import AsgiServer, World

URL = "/v1/chat/completions"


def usage_rows(ministry: Any) -> list[UsageRecord]:
    usage_journal_drain()
    with ministry_scope(ministry_id=ministry.pk):
        return list(UsageRecord.objects.order_by("id"))


def _post(server: AsgiServer, key: str, **body: Any) -> httpx.Response:
    payload = {"model": "standard-chat", "messages": [{"role": "user", "content": "こんにちは"}], **body}
    return httpx.post(server.url + URL, headers={"Authorization": f"Bearer {key}"}, json=payload, timeout=10)


def _key_counters(quota_redis: redis.Redis, world: World, key: Any) -> dict[str, int]:
    return counters(quota_redis, f"m{world.ministry_a.pk}:k{key.pk}")


def _settled(quota_redis: redis.Redis, world: World, key: Any, timeout: float = 3.0) -> dict[str, int]:
    """The key's month counter once nothing is held any more (the server finishes after the client)."""
    deadline = time.monotonic() + timeout
    values = _key_counters(quota_redis, world, key)
    while values["ht"] and time.monotonic() < deadline:
        time.sleep(0.05)
        values = _key_counters(quota_redis, world, key)
    return values


@pytest.fixture
def admin_a(world: World) -> Any:
    return admin_of(world.ministry_a, "v1-quota-admin")


def test_budget_exhausted_is_an_openai_429_insufficient_quota_with_retry_after(
    asgi_server: AsgiServer, world: World, make_key: Any, quota_redis: redis.Redis, admin_a: Any
) -> None:
    key, plaintext = make_key()
    set_limit(world.ministry_a, admin_a, level="api_key", api_key=key, monthly_tokens=10)
    response = _post(asgi_server, plaintext)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
    assert "今月の利用上限" in error["message"] and "this month" in error["message"]
    assert world.primary.requests == 0, "the upstream is never called"
    # The SDK sees a RateLimitError (its class for 429).
    sdk = openai.OpenAI(base_url=asgi_server.url + "/v1", api_key=plaintext, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="standard-chat", messages=[{"role": "user", "content": "x"}])
    rows = usage_rows(world.ministry_a)
    assert [(r.status, r.detail, r.prompt_tokens) for r in rows] == [("refused", "quota_budget", 0)] * 2
    assert _key_counters(quota_redis, world, key) == {"ut": 0, "ht": 0, "uy": 0, "hy": 0}


def test_rate_limit_is_429_rate_limit_exceeded_and_other_keys_are_unaffected(
    asgi_server: AsgiServer, world: World, make_key: Any, quota_redis: redis.Redis, admin_a: Any
) -> None:
    key, plaintext = make_key()
    _other, other_plaintext = make_key(name="other system")
    set_limit(world.ministry_a, admin_a, level="api_key", api_key=key, rpm=1)
    assert _post(asgi_server, plaintext).status_code == 200
    refused = _post(asgi_server, plaintext)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 120  # two one-minute buckets at most
    assert refused.json()["error"]["type"] == "rate_limit_exceeded"
    assert refused.json()["error"]["code"] == "rpm_limit_exceeded"
    assert _post(asgi_server, other_plaintext).status_code == 200


def test_max_tokens_is_capped_and_a_complete_answer_settles_to_its_ledger_row(
    asgi_server: AsgiServer, world: World, make_key: Any, quota_redis: redis.Redis, admin_a: Any
) -> None:
    key, plaintext = make_key()
    set_limit(world.ministry_a, admin_a, level="api_key", api_key=key, monthly_tokens=100_000, max_tokens=7)
    response = _post(asgi_server, plaintext, max_tokens=500)
    assert response.status_code == 200
    assert world.primary.last_body["max_tokens"] == 7
    [row] = usage_rows(world.ministry_a)
    assert (row.prompt_tokens, row.completion_tokens, row.request_id is not None) == (7, 5, True)
    assert _settled(quota_redis, world, key) == {"ut": 12, "ht": 0, "uy": 0, "hy": 0}


def test_upstream_that_drops_mid_stream_is_settled_to_what_was_produced(
    asgi_server: AsgiServer, world: World, make_key: Any, quota_redis: redis.Redis, admin_a: Any
) -> None:
    key, plaintext = make_key()
    set_limit(world.ministry_a, admin_a, level="api_key", api_key=key, monthly_tokens=100_000)
    sdk = openai.OpenAI(base_url=asgi_server.url + "/v1", api_key=plaintext, max_retries=0)
    stream = sdk.chat.completions.create(
        model="drop-chat", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError):
        for _chunk in stream:
            pass
    [row] = usage_rows(world.ministry_a)
    assert (row.status, row.completion_tokens) == ("interrupted", 2)
    values = _settled(quota_redis, world, key)
    assert values == {"ut": row.prompt_tokens + row.completion_tokens, "ht": 0, "uy": 0, "hy": 0}


def test_client_disconnect_is_settled_to_what_was_produced(
    asgi_server: AsgiServer, world: World, make_key: Any, quota_redis: redis.Redis, admin_a: Any
) -> None:
    key, plaintext = make_key()
    set_limit(
        world.ministry_a, admin_a, level="api_key", api_key=key, monthly_tokens=100_000, max_concurrent=1
    )
    world.primary.tokens, world.primary.delay = 200, 0.02  # a 4-second answer
    with httpx.stream(
        "POST",
        asgi_server.url + URL,
        headers={"Authorization": f"Bearer {plaintext}"},
        json={"model": "standard-chat", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ) as response:
        assert next(response.iter_lines()).startswith("data: ")
    values = _settled(quota_redis, world, key)
    [row] = usage_rows(world.ministry_a)
    assert row.status == "interrupted" and row.completion_tokens < 200
    assert values == {"ut": row.prompt_tokens + row.completion_tokens, "ht": 0, "uy": 0, "hy": 0}
    # The concurrency slot came back with the settle: the next request is admitted.
    world.primary.tokens, world.primary.delay = 5, 0.0
    assert _post(asgi_server, plaintext).status_code == 200


def test_embeddings_are_reserved_settled_and_refused_like_chat(
    asgi_server: AsgiServer, world: World, make_key: Any, quota_redis: redis.Redis, admin_a: Any
) -> None:
    key, plaintext = make_key()
    set_limit(world.ministry_a, admin_a, level="api_key", api_key=key, monthly_tokens=100_000)
    url = asgi_server.url + "/v1/embeddings"
    headers = {"Authorization": f"Bearer {plaintext}"}
    ok = httpx.post(url, headers=headers, json={"model": "embed", "input": ["予算", "要求"]}, timeout=10)
    assert ok.status_code == 200
    [row] = usage_rows(world.ministry_a)
    assert row.prompt_tokens > 0
    assert _settled(quota_redis, world, key) == {"ut": row.prompt_tokens, "ht": 0, "uy": 0, "hy": 0}

    set_limit(world.ministry_a, admin_a, level="api_key", api_key=key, monthly_tokens=row.prompt_tokens)
    refused = httpx.post(url, headers=headers, json={"model": "embed", "input": ["予算"]}, timeout=10)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "insufficient_quota"
    assert "retry-after" in refused.headers


def test_an_api_key_reaching_80_percent_notifies_the_ministrys_admins_once(
    asgi_server: AsgiServer, world: World, make_key: Any, quota_redis: redis.Redis, admin_a: Any
) -> None:
    from django.core import mail

    from apps.console.models import Notification, NotificationKind
    from gennai.celery import app as celery_app

    mail.outbox.clear()
    admin_a.email = "v1-admin@digital.example.go.jp"
    admin_a.save()
    key, plaintext = make_key(name="会計システム")
    # The estimate (12 counted prompt + max_tokens 1) fits 15; the upstream then reports
    # 7 prompt + 5 completion = 12 of 15 (80 %).
    set_limit(world.ministry_a, admin_a, level="api_key", api_key=key, monthly_tokens=15, max_tokens=1)
    celery_app.conf.task_always_eager = True
    try:
        assert _post(asgi_server, plaintext).status_code == 200
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not mail.outbox:
            time.sleep(0.05)
    finally:
        celery_app.conf.task_always_eager = False
    with ministry_scope(ministry_id=world.ministry_a.pk):
        notices = list(Notification.objects.values_list("recipient_id", "kind", "data"))
    assert [(r, k) for r, k, _ in notices] == [(admin_a.pk, NotificationKind.BUDGET_WARNING)]
    assert notices[0][2]["subject"] == "会計システム"
    assert [m.to for m in mail.outbox] == [["v1-admin@digital.example.go.jp"]]
    assert "APIキー「会計システム」" in mail.outbox[0].body


def test_search_query_embedding_is_admitted_with_the_keys_limits(
    world: World, make_key: Any, embedding_server: Any, settings: Any, quota_redis: redis.Redis, admin_a: Any
) -> None:
    from apps.gateway.tests.test_v1_search import call
    from apps.search.tests.test_retriever import _indexed
    from tests.support.embedding import register_standard_embedding
    from tests.support.fixtures import make_user

    settings.ALLOWED_HOSTS = ["testserver"]
    register_standard_embedding(embedding_server)
    _indexed(
        make_user("quota-owner-a", world.ministry_a, ["staff"]), world.ministry_a, name="規程", text="宿泊料"
    )
    key, plaintext = make_key()
    set_limit(world.ministry_a, admin_a, level="api_key", api_key=key, rpm=1, monthly_tokens=100_000)
    first, _ = call(plaintext, {"query": "宿泊料"})
    second, body = call(plaintext, {"query": "宿泊料"})
    assert (first, second) == (200, 429)
    assert body["error"]["type"] == "rate_limit_exceeded"
    assert _key_counters(quota_redis, world, key)["ht"] == 0, "released after the search"
