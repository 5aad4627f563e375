"""The provider contract (apps/registry/providers/base.py), checked for every installed plugin."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from apps.registry.providers.base import (
    ChatRequest,
    Provider,
    ProviderTarget,
    UpstreamInterrupted,
    UpstreamRejected,
    UpstreamUnavailable,
)
from apps.registry.providers.registry import load_providers
from tests.support.fake_upstream import FakeUpstream, closed_port_url

PROVIDERS = sorted(load_providers().items())


def target(url: str) -> ProviderTarget:
    return ProviderTarget(
        deployment_id=1, name="t", base_url=url, served_model_name="fake-model", first_token_timeout=1.0
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def collect(provider: Provider, request: ChatRequest) -> list[Any]:
    try:
        return [c async for c in provider.chat(request)]
    finally:
        await provider.aclose()


REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}])


@pytest.fixture(params=PROVIDERS, ids=[name for name, _ in PROVIDERS])
def factory(request: pytest.FixtureRequest) -> Any:
    return request.param[1]


def test_constructs_without_io_and_satisfies_protocol(factory: Any) -> None:
    provider = factory(target(closed_port_url()))  # nothing listens: construction must not connect
    assert isinstance(provider, Provider)


def test_streams_each_chunk_with_text_and_raw_bytes(factory: Any) -> None:
    with FakeUpstream(tokens=6, delay=0.01) as up:
        chunks = run(collect(factory(target(up.url)), REQUEST))
    texts = [c.delta for c in chunks if c.delta]
    assert texts == [f"tok{i} " for i in range(6)]
    assert all(c.raw.startswith(b"{") for c in chunks if c.delta)
    assert any(c.usage and c.usage.get("completion_tokens") == 6 for c in chunks)


@pytest.mark.parametrize("mode", ["refused", "500", "429", "slow_first"])
def test_failure_before_first_token_is_unavailable(factory: Any, mode: str) -> None:
    status = {"500": 500, "429": 429}.get(mode, 500)
    with FakeUpstream(
        mode="slow_first" if mode == "slow_first" else "status", status=status, first_delay=3
    ) as up:
        url = closed_port_url() if mode == "refused" else up.url
        with pytest.raises(UpstreamUnavailable):
            run(collect(factory(target(url)), REQUEST))


def test_client_error_is_rejected_not_failed_over(factory: Any) -> None:
    with FakeUpstream(mode="status", status=400) as up, pytest.raises(UpstreamRejected):
        run(collect(factory(target(up.url)), REQUEST))


def test_failure_after_first_token_is_interrupted(factory: Any) -> None:
    with FakeUpstream(mode="drop", drop_after=2) as up, pytest.raises(UpstreamInterrupted):
        run(collect(factory(target(up.url)), REQUEST))


def test_embed_returns_one_vector_per_input_in_order(factory: Any) -> None:
    async def go(url: str) -> Any:
        provider = factory(target(url))
        try:
            return await provider.embed(["a", "bbb", "cc"])
        finally:
            await provider.aclose()

    with FakeUpstream() as up:
        result = run(go(up.url))
    assert [v[0] for v in result.vectors] == [1.0, 3.0, 2.0]


@pytest.mark.parametrize("mode", ["ok", "down", "refused"])
def test_health_never_raises(factory: Any, mode: str) -> None:
    async def go(url: str) -> Any:
        provider = factory(target(url))
        try:
            return await provider.health()
        finally:
            await provider.aclose()

    with FakeUpstream(mode="status" if mode == "down" else "ok", status=503) as up:
        url = closed_port_url() if mode == "refused" else up.url
        result = run(go(url))
    assert result.ok is (mode == "ok")


def test_connection_dropped_before_an_answer_is_retried_once() -> None:
    """A keep-alive connection the server closed as we reused it costs no failed request."""
    from apps.registry.providers.openai_compatible import OpenAICompatibleProvider

    with FakeUpstream(tokens=3, hang_up=1) as up:
        chunks = run(collect(OpenAICompatibleProvider(target(up.url)), REQUEST))
        assert [c.delta for c in chunks if c.delta] == ["tok0 ", "tok1 ", "tok2 "]
        assert up.requests == 2
    with FakeUpstream(tokens=3, hang_up=2) as up:  # once only: a server that keeps hanging up is down
        with pytest.raises(UpstreamUnavailable):
            run(collect(OpenAICompatibleProvider(target(up.url)), REQUEST))
        assert up.requests == 2
