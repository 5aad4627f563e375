"""/v1: the upstream must never be allowed more tokens than admission reserved and capped.

Attack (an API-key holder whose key is capped at ``max_tokens`` 7 by the ministry
admin): send both ``max_completion_tokens`` (tiny) and ``max_tokens`` (huge).
``apps.gateway.admission.reserve_chat`` reserves and caps the first one only and
forwards the second unchanged, so an upstream that reads ``max_tokens`` (llama.cpp,
older OpenAI-compatible servers) generates far past the cap and the reservation.
"""

from __future__ import annotations

from typing import Any

import httpx
import redis

from apps.quotas.tests.admission_support import admin_of, set_limit
from tests.support.asgi import AsgiServer


def test_both_token_params_are_capped_before_the_upstream(
    asgi_server: AsgiServer, world: Any, make_key: Any, quota_redis: redis.Redis
) -> None:
    key, plaintext = make_key()
    admin = admin_of(world.ministry_a, "sec-maxtok-admin")
    set_limit(world.ministry_a, admin, level="api_key", api_key=key, monthly_tokens=100_000, max_tokens=7)
    response = httpx.post(
        asgi_server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {plaintext}"},
        json={
            "model": "standard-chat",
            "messages": [{"role": "user", "content": "こんにちは"}],
            "max_completion_tokens": 1,
            "max_tokens": 1_000_000,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    sent = world.primary.last_body
    for name in ("max_tokens", "max_completion_tokens"):
        assert sent.get(name) is None or sent[name] <= 7, f"{name}={sent.get(name)} reached the upstream"
