"""Built-in provider for any OpenAI-compatible server: vLLM, llama.cpp, TGI, vendor gateways."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .base import (
    ChatChunk,
    ChatRequest,
    EmbedResult,
    HealthResult,
    ProviderTarget,
    UpstreamInterrupted,
    UpstreamRejected,
    UpstreamUnavailable,
)

# One pooled client per (event loop, base URL): httpx async clients are loop-bound.
_clients: dict[tuple[int, str], httpx.AsyncClient] = {}


def _client(target: ProviderTarget) -> httpx.AsyncClient:
    key = (id(asyncio.get_running_loop()), target.base_url)
    client = _clients.get(key)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            base_url=target.base_url.rstrip("/") + "/",
            timeout=httpx.Timeout(target.read_timeout, connect=target.connect_timeout),
            limits=httpx.Limits(max_connections=max(target.max_concurrency, 1) * 2),
        )
        _clients[key] = client
    return client


def _parse_chunk(data: bytes) -> ChatChunk:
    payload: dict[str, Any] = json.loads(data)
    chunk = ChatChunk(raw=data)
    choices = payload.get("choices") or []
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        chunk.delta = delta.get("content") or ""
        chunk.reasoning_delta = delta.get("reasoning_content") or delta.get("reasoning") or ""
        chunk.finish_reason = choice.get("finish_reason")
    usage = payload.get("usage")
    if isinstance(usage, dict):
        chunk.usage = {k: int(v) for k, v in usage.items() if isinstance(v, int)}
    return chunk


class OpenAICompatibleProvider:
    """Streams ``/v1/chat/completions`` and calls ``/v1/embeddings`` and ``/health``."""

    kind = "openai_compatible"

    def __init__(self, target: ProviderTarget) -> None:
        self.target = target

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.target.api_key}"} if self.target.api_key else {}

    async def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        body = {
            **request.params,
            "model": self.target.served_model_name,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        client = _client(self.target)
        try:
            async with asyncio.timeout(self.target.first_token_timeout):
                response = await client.send(
                    client.build_request("POST", "v1/chat/completions", json=body, headers=self._headers()),
                    stream=True,
                )
        except (httpx.TransportError, TimeoutError) as exc:
            raise UpstreamUnavailable(f"{self.target.name}: {type(exc).__name__}") from exc
        try:
            if response.status_code >= 500 or response.status_code == 429:
                raise UpstreamUnavailable(
                    f"{self.target.name}: HTTP {response.status_code}", status=response.status_code
                )
            if response.status_code >= 400:
                detail = (await response.aread())[:500].decode(errors="replace")
                raise UpstreamRejected(
                    f"{self.target.name}: HTTP {response.status_code}: {detail}", status=response.status_code
                )
            lines = response.aiter_lines()
            started = finished = False
            content_chunks = 0
            usage_seen = False
            while True:
                try:
                    if started:
                        line = await lines.__anext__()
                    else:
                        async with asyncio.timeout(self.target.first_token_timeout):
                            line = await lines.__anext__()
                except StopAsyncIteration:
                    if not started:
                        raise UpstreamUnavailable(f"{self.target.name}: empty response") from None
                    if not finished:  # closed without [DONE] or a finish_reason: a dropped stream
                        raise UpstreamInterrupted(f"{self.target.name}: stream ended early") from None
                    break
                except (httpx.TransportError, TimeoutError) as exc:
                    error = UpstreamInterrupted if started else UpstreamUnavailable
                    raise error(f"{self.target.name}: {type(exc).__name__}") from exc
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = _parse_chunk(data.encode())
                except (ValueError, TypeError) as exc:
                    error = UpstreamInterrupted if started else UpstreamUnavailable
                    raise error(f"{self.target.name}: malformed chunk") from exc
                started = True
                finished = finished or chunk.finish_reason is not None
                content_chunks += 1 if (chunk.delta or chunk.reasoning_delta) else 0
                usage_seen = usage_seen or chunk.usage is not None
                yield chunk
            if not usage_seen:
                # Servers that ignore stream_options (llama.cpp) send no usage: count
                # content chunks (one token each on llama.cpp and vLLM) and say so.
                yield ChatChunk(
                    usage={"prompt_tokens": 0, "completion_tokens": content_chunks, "estimated": 1}
                )
        finally:
            await response.aclose()

    async def embed(self, inputs: list[str]) -> EmbedResult:
        client = _client(self.target)
        try:
            response = await client.post(
                "v1/embeddings",
                json={"model": self.target.served_model_name, "input": inputs},
                headers=self._headers(),
            )
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"{self.target.name}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise UpstreamUnavailable(
                f"{self.target.name}: HTTP {response.status_code}", status=response.status_code
            )
        if response.status_code >= 400:
            raise UpstreamRejected(
                f"{self.target.name}: HTTP {response.status_code}", status=response.status_code
            )
        payload = response.json()
        rows = sorted(payload.get("data", []), key=lambda row: row.get("index", 0))
        return EmbedResult(
            vectors=[list(map(float, row["embedding"])) for row in rows],
            prompt_tokens=int((payload.get("usage") or {}).get("prompt_tokens", 0)),
        )

    async def health(self) -> HealthResult:
        start = time.perf_counter()
        client = _client(self.target)
        try:
            async with asyncio.timeout(5):
                response = await client.get("v1/models", headers=self._headers())
            ok = response.status_code == 200
            detail = "" if ok else f"HTTP {response.status_code}"
        except (httpx.HTTPError, TimeoutError) as exc:
            ok, detail = False, type(exc).__name__
        return HealthResult(ok=ok, detail=detail, latency_ms=(time.perf_counter() - start) * 1000)

    async def aclose(self) -> None:
        key = (id(asyncio.get_running_loop()), self.target.base_url)
        client = _clients.pop(key, None)
        if client is not None:
            await client.aclose()
