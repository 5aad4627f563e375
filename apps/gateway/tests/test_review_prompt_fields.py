"""Review: the prompt a /v1 chat request sends is more than its messages.

``tools`` (function names, descriptions, JSON schemas), ``tool_choice`` and a
``response_format`` schema reach the model as prompt text, and a body may carry a
megabyte of them. Admission reserved (and, with an upstream that reports no usage,
the ledger charged) only the messages: a key or a user could send a long prompt
inside a tool description and be charged for a greeting.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from apps.quotas.journal import usage_journal_drain
from apps.quotas.models import UsageRecord
from apps.quotas.tests.admission_support import (  # noqa: F401  (quota_redis_fixture provides quota_redis)
    admin_of,
    quota_redis_fixture,
    set_limit,
)
from apps.tenancy.scope import ministry_scope
from tests.support.asgi import AsgiServer

from .conftest import World


def _post(server: AsgiServer, key: str, **body: Any) -> httpx.Response:
    payload = {"model": "standard-chat", "messages": [{"role": "user", "content": "こんにちは"}], **body}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(server.url + "/v1/chat/completions", headers=headers, json=payload, timeout=10)


def usage_rows(ministry: Any) -> list[UsageRecord]:
    usage_journal_drain()
    with ministry_scope(ministry_id=ministry.pk):
        return list(UsageRecord.objects.order_by("id"))


#: ≈1,000 tokens of instructions hidden in a tool's description (one token per 4 ASCII bytes).
LONG = "Summarise the following internal report in detail. " * 80


def _tools() -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": LONG,
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]


@pytest.fixture
def admin_a(world: World) -> Any:
    return admin_of(world.ministry_a, "v1-prompt-admin")


def test_tools_count_towards_the_reservation(
    asgi_server: AsgiServer, world: World, make_key: Any, quota_redis: redis.Redis, admin_a: Any
) -> None:
    key, plaintext = make_key()
    set_limit(world.ministry_a, admin_a, level="api_key", api_key=key, monthly_tokens=500, max_tokens=10)
    assert _post(asgi_server, plaintext).status_code == 200  # a greeting fits
    response = _post(asgi_server, plaintext, tools=_tools())
    assert response.status_code == 429, "a 1,000-token prompt in a tool does not fit a 500-token budget"
    assert response.json()["error"]["code"] == "budget_exceeded"


def test_a_response_format_schema_counts_too(
    asgi_server: AsgiServer, world: World, make_key: Any, quota_redis: redis.Redis, admin_a: Any
) -> None:
    key, plaintext = make_key()
    set_limit(world.ministry_a, admin_a, level="api_key", api_key=key, monthly_tokens=500, max_tokens=10)
    schema = {"type": "json_schema", "json_schema": {"name": "r", "description": LONG, "schema": {}}}
    response = _post(asgi_server, plaintext, response_format=schema)
    assert response.status_code == 429


def test_an_upstream_without_usage_is_charged_for_the_tools(
    asgi_server: AsgiServer, world: World, make_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(world.primary, "usage", False)  # llama.cpp: no usage chunk
    _key, plaintext = make_key()
    assert _post(asgi_server, plaintext, tools=_tools(), tool_choice="auto").status_code == 200
    [row] = usage_rows(world.ministry_a)
    assert row.prompt_tokens_estimated
    assert row.prompt_tokens >= len(LONG) // 4, "the tool's text is in the ledger's prompt count"
