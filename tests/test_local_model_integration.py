"""Through our stack against the real local model server (llama.cpp + SmolLM2-135M)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from apps.registry.breaker import breaker
from apps.registry.models import Vendor
from apps.registry.providers.base import ChatRequest, ProviderTarget
from apps.registry.providers.openai_compatible import OpenAICompatibleProvider
from apps.registry.router import plan_route, stream_chat
from apps.registry.snapshot import reset_for_tests
from apps.tenancy.scope import ministry_scope
from tests.support.asgi import AsgiServer
from tests.support.local_model import LocalModel
from tests.support.registry import Upstream, register_alias


def _collect(provider_stream: Any) -> list[Any]:
    async def run() -> list[Any]:
        return [chunk async for chunk in provider_stream]

    return asyncio.run(run())


def test_provider_streams_from_real_llama_cpp(local_model: LocalModel) -> None:
    async def run() -> tuple[list[str], dict[str, int] | None]:
        provider = OpenAICompatibleProvider(
            ProviderTarget(
                deployment_id=1,
                name="local",
                base_url=local_model.url,
                served_model_name=local_model.served_model_name,
            )
        )
        deltas: list[str] = []
        usage = None
        try:
            async for chunk in provider.chat(
                ChatRequest(messages=[{"role": "user", "content": "Say hello."}], params={"max_tokens": 16})
            ):
                if chunk.delta:
                    deltas.append(chunk.delta)
                usage = chunk.usage or usage
        finally:
            await provider.aclose()
        return deltas, usage

    deltas, usage = asyncio.run(run())
    assert len(deltas) >= 2, "expected several streamed chunks"
    assert "".join(deltas).strip()
    assert usage and usage.get("completion_tokens", 0) >= len(deltas) - 1


def test_router_streams_alias_to_real_model(local_model: LocalModel, ministries: Any) -> None:
    digital, _ = ministries
    breaker.reset()
    register_alias(
        upstreams=[Upstream(local_model.url, name="local", served_model_name=local_model.served_model_name)],
        ministries=[digital],
        name="standard-chat",
    )
    with ministry_scope(ministry_id=digital.pk):
        plan = plan_route(alias_name="standard-chat", level=2, sticky_key="conv:1")
    assert [d.name for d in plan.candidates] == ["local"]
    chunks = _collect(
        stream_chat(
            plan, ChatRequest(messages=[{"role": "user", "content": "こんにちは"}], params={"max_tokens": 12})
        )
    )
    assert all(dep.name == "local" for dep, _ in chunks)
    assert sum(1 for _, c in chunks if c.delta) >= 2
    assert Vendor.objects.count() == 1


@pytest.fixture
def platform(local_model: LocalModel, transactional_db: None) -> Iterator[tuple[str, str]]:
    """The platform under uvicorn with the real model behind ``standard-chat`` and an API key."""
    from django.core.management import call_command
    from django.utils import timezone

    from apps.gateway.services import api_key_create
    from apps.tenancy.models import Ministry

    reset_for_tests()
    breaker.reset()
    call_command("seed_demo", verbosity=0)
    call_command(
        "registry_register_local",
        "--base-url",
        local_model.url,
        "--served-model-name",
        local_model.served_model_name,
        verbosity=0,
    )
    _key, plaintext = api_key_create(
        actor=None,
        ministry=Ministry.objects.get(code="digital"),
        name="it",
        aliases=(),
        max_level=2,
        expires_at=timezone.now() + timedelta(days=1),
    )
    server = AsgiServer().start()
    try:
        yield server.url, plaintext
    finally:
        server.stop()
        reset_for_tests()


def test_openai_sdk_through_v1_to_real_model(platform: tuple[str, str]) -> None:
    """The official openai SDK → our /v1 → router → llama.cpp, streaming and not."""
    import openai

    url, key = platform
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
    assert "standard-chat" in [m.id for m in client.models.list()]
    stream = client.chat.completions.create(
        model="standard-chat",
        messages=[{"role": "user", "content": "Write two sentences about the sea."}],
        max_tokens=16,
        stream=True,
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2 and "".join(pieces).strip()
    completion = client.chat.completions.create(
        model="standard-chat", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert completion.model == "standard-chat"
    assert completion.choices[0].message.content
