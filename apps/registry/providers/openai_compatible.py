"""Built-in provider for any OpenAI-compatible server: vLLM, llama.cpp, TGI, vendor gateways."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from apps.registry.egress import EgressPolicy, EgressRefused, current_policy, guarded_client
from apps.registry.secrets import SecretRefError

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
from .lean_http import KEEPALIVE_EXPIRY_SECONDS, LeanHTTPError, LeanPool

logger = logging.getLogger("gennai.registry.upstream")
LOGGED_BODY_CHARS = 500

#: Most connections one httpx client (one httpcore pool) holds. httpcore's pool scans
#: every one of its connections on each request start and each response close, so a
#: single client with N open streams costs O(N) per stream event — quadratic over a
#: burst (2,000 streams took 68–99 s to finish through one client). A deployment's
#: connections are therefore spread over small clients (docs/adr/0007).
SHARD_CONNECTIONS = 16


class ShardedClient:
    """A deployment's upstream connections: the lean stream pool, and egress-guarded clients of ≤ 16 each.

    Streamed chat completions go through :attr:`stream_pool`
    (:class:`.lean_http.LeanPool`, at most ``max_connections``); embeddings and
    health probes through httpx clients (the shards below, at most
    ``max_connections`` together). A deployment serves one model, a chat or an
    embedding model, so in practice one of the two holds its connections (plus a
    health probe's one, which normally runs in the Celery worker).

    For the shards the deployment's cap holds for the sum: the shards' ``max_connections`` add up
    to exactly ``max_connections``. Shards are created as they are needed: a
    request goes to the least busy existing shard (requests in flight; the first
    such one, so a quiet deployment keeps reusing the same warm connections);
    only when that one is full is the next shard created. When every shard
    exists and is full, the request queues in the least busy shard's pool, as it
    would have in one big pool.
    """

    def __init__(
        self,
        *,
        base_url: str,
        policy: EgressPolicy,
        timeout: httpx.Timeout,
        max_connections: int,
        shard_connections: int = SHARD_CONNECTIONS,
    ) -> None:
        total = max(max_connections, 1)
        count = -(-total // max(shard_connections, 1))
        self.sizes = [total // count + (1 if i < total % count else 0) for i in range(count)]
        self._base_url = base_url
        self._policy = policy
        self._timeout = timeout
        policy.check_url(base_url)  # refused at once, before any shard exists
        # The chat URL as each shard's client would merge it (base URL with one trailing
        # slash + path), parsed once: merging it per request cost ≈50 µs before every first token.
        self.chat_url = httpx.URL(base_url.rstrip("/") + "/v1/chat/completions")
        self.clients: list[httpx.AsyncClient] = []
        self.in_flight: list[int] = []
        self._add_shard()
        # Streamed chat completions (the first-token path) use the lean client instead
        # (one write per request, no httpx layers); its pool is O(1) per request, so it
        # needs no shards. Same egress guard, same cap (docs/adr/0007).
        self.stream_pool = LeanPool(
            url=self.chat_url, policy=policy, timeout=timeout, max_connections=max_connections
        )

    def _add_shard(self) -> None:
        # Security: every shard is built by guarded_client (URL check, address check
        # at connect time, no redirects, no proxy), exactly like a single client.
        size = self.sizes[len(self.clients)]
        self.clients.append(
            guarded_client(
                base_url=self._base_url,
                policy=self._policy,
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=size, keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS),
            )
        )
        self.in_flight.append(0)

    @property
    def is_closed(self) -> bool:
        return self.stream_pool.closed or any(client.is_closed for client in self.clients)

    def acquire(self) -> int:
        """The shard for the next request, counted as busy until :meth:`release`."""
        fewest = min(self.in_flight)
        index = self.in_flight.index(fewest)
        if fewest >= self.sizes[index] and len(self.clients) < len(self.sizes):
            index = len(self.clients)
            self._add_shard()
        self.in_flight[index] += 1
        return index

    def release(self, index: int) -> None:
        self.in_flight[index] -= 1

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[httpx.AsyncClient]:
        """A shard's client for one whole request/response (a streamed body included)."""
        index = self.acquire()
        try:
            yield self.clients[index]
        finally:
            self.release(index)

    async def aclose(self) -> None:
        await self.stream_pool.aclose()
        for client in self.clients:
            await client.aclose()


# One sharded client per (event loop, base URL, egress policy): httpx async clients are
# loop-bound, and a changed allowlist must never reuse a client built under the old one.
_clients: dict[tuple[int, str, EgressPolicy], ShardedClient] = {}


def _client(target: ProviderTarget) -> ShardedClient:
    """The pooled, egress-guarded clients for ``target`` (raises EgressRefused for a refused URL)."""
    policy = current_policy()
    key = (id(asyncio.get_running_loop()), target.base_url, policy)
    client = _clients.get(key)
    if client is None or client.is_closed:
        client = ShardedClient(
            base_url=target.base_url,
            policy=policy,
            timeout=httpx.Timeout(target.read_timeout, connect=target.connect_timeout),
            max_connections=max(target.max_concurrency, 1) * 2,
        )
        _clients[key] = client
    return client


def _log_body(target: ProviderTarget, status: int, body: bytes) -> None:
    """Upstream error bodies go to the log only (truncated), never into an exception."""
    logger.warning(
        "upstream %s answered HTTP %s: %s",
        target.name,
        status,
        body[:LOGGED_BODY_CHARS].decode(errors="replace"),
    )


def _parse_chunk(data: bytes) -> ChatChunk:
    payload: dict[str, Any] = json.loads(data)
    chunk = ChatChunk(raw=data)
    choices = payload.get("choices") or []
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        chunk.delta = delta.get("content") or ""
        chunk.reasoning_delta = delta.get("reasoning_content") or delta.get("reasoning") or ""
        chunk.tool_call_delta = bool(delta.get("tool_calls") or delta.get("function_call"))
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

    def _prepare(self) -> tuple[ShardedClient, dict[str, str]]:
        """Client and headers for one call; refusals become :class:`UpstreamUnavailable`.

        Security: the URL is checked (and the client built) before the key is
        resolved, and the key is resolved from its reference at every call.
        """
        try:
            client = _client(self.target)
            api_key = self.target.resolve_api_key()
        except EgressRefused as exc:
            logger.warning("upstream %s refused by egress policy: %s", self.target.name, exc.detail)
            raise UpstreamUnavailable(f"{self.target.name}: upstream host refused ({exc.code})") from None
        except SecretRefError as exc:
            logger.warning("upstream %s: secret reference refused: %s", self.target.name, exc.code)
            raise UpstreamUnavailable(f"{self.target.name}: secret reference refused ({exc.code})") from None
        return client, ({"Authorization": f"Bearer {api_key}"} if api_key else {})

    def _refused(self, exc: EgressRefused) -> UpstreamUnavailable:
        logger.warning("upstream %s refused at connect time: %s", self.target.name, exc.detail)
        return UpstreamUnavailable(f"{self.target.name}: upstream address refused ({exc.code})")

    async def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """The streamed completion, through the lean client (:mod:`.lean_http`): one write, no httpx."""
        name = self.target.name
        body = {
            **request.params,
            "model": self.target.served_model_name,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        pool, headers = self._prepare()
        lean = pool.stream_pool
        # Encoded here as httpx's json= would (compact, UTF-8); head and body leave in one write.
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        try:
            data = lean.request_bytes(payload, authorization=headers.get("Authorization"))
        except ValueError:
            logger.warning("upstream %s: the key has characters a header cannot carry", name)
            raise UpstreamUnavailable(f"{name}: secret reference refused (invalid_value)") from None
        first_token_timeout = self.target.first_token_timeout
        try:
            async with asyncio.timeout(first_token_timeout):
                response = await lean.stream(data)
        except EgressRefused as exc:
            raise self._refused(exc) from None
        except (LeanHTTPError, TimeoutError) as exc:
            raise UpstreamUnavailable(f"{name}: {type(exc).__name__}") from exc
        try:
            status = response.status
            if status >= 400:
                try:
                    error_body = await response.read()
                except (LeanHTTPError, TimeoutError):
                    error_body = b""
                _log_body(self.target, status, error_body)
                failure = UpstreamUnavailable if status >= 500 or status == 429 else UpstreamRejected
                raise failure(f"{name}: HTTP {status}", status=status)
            if response.is_redirect:  # never followed: a redirect could lead around the allowlist
                raise UpstreamUnavailable(
                    f"{name}: HTTP {status} (redirects are not followed)", status=status
                )
            if response.header(b"content-encoding") not in (None, b"identity"):
                raise UpstreamUnavailable(f"{name}: compressed answer (identity was asked for)")
            started = finished = False
            content_chunks = 0
            usage_seen = False
            while True:
                line = response.next_line()
                if line is None:
                    if response.complete:
                        if not started:
                            raise UpstreamUnavailable(f"{name}: empty response")
                        if not finished:  # closed without [DONE] or a finish_reason: a dropped stream
                            raise UpstreamInterrupted(f"{name}: stream ended early")
                        break
                    try:
                        if started:
                            await response.wait()
                        else:
                            async with asyncio.timeout(first_token_timeout):
                                await response.wait()
                    except (LeanHTTPError, TimeoutError) as exc:
                        error = UpstreamInterrupted if started else UpstreamUnavailable
                        raise error(f"{name}: {type(exc).__name__}") from exc
                    continue
                if not line.startswith(b"data:"):
                    continue
                chunk_data = line[5:].strip()
                if chunk_data == b"[DONE]":
                    # Read the (empty) rest of the body: a response closed unfinished cannot go
                    # back to the pool, and the next request would open a new connection.
                    with contextlib.suppress(LeanHTTPError, TimeoutError):
                        while not response.complete:
                            await response.wait()
                    break
                try:
                    chunk = _parse_chunk(chunk_data)
                except (ValueError, TypeError) as exc:
                    error = UpstreamInterrupted if started else UpstreamUnavailable
                    raise error(f"{name}: malformed chunk") from exc
                started = True
                finished = finished or chunk.finish_reason is not None
                content_chunks += 1 if chunk.produced else 0
                usage_seen = usage_seen or chunk.usage is not None
                yield chunk
            if not usage_seen:
                # Servers that ignore stream_options (llama.cpp) send no usage: count
                # output chunks (text, reasoning, tool-call arguments: one token each on
                # llama.cpp and vLLM) and say so.
                yield ChatChunk(
                    usage={"prompt_tokens": 0, "completion_tokens": content_chunks, "estimated": 1}
                )
        finally:
            response.close()

    async def embed(self, inputs: list[str]) -> EmbedResult:
        pool, headers = self._prepare()
        try:
            async with pool.lease() as client:
                response = await client.post(
                    "v1/embeddings",
                    json={"model": self.target.served_model_name, "input": inputs},
                    headers=headers,
                )
        except EgressRefused as exc:
            raise self._refused(exc) from None
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"{self.target.name}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            _log_body(self.target, response.status_code, response.content)
            failure = UpstreamUnavailable if response.status_code >= 500 else UpstreamRejected
            raise failure(f"{self.target.name}: HTTP {response.status_code}", status=response.status_code)
        if response.is_redirect:
            raise UpstreamUnavailable(
                f"{self.target.name}: HTTP {response.status_code} (redirects are not followed)",
                status=response.status_code,
            )
        payload = response.json()
        rows = sorted(payload.get("data", []), key=lambda row: row.get("index", 0))
        return EmbedResult(
            vectors=[list(map(float, row["embedding"])) for row in rows],
            prompt_tokens=int((payload.get("usage") or {}).get("prompt_tokens", 0)),
        )

    async def health(self) -> HealthResult:
        start = time.perf_counter()
        try:
            pool, headers = self._prepare()
            async with asyncio.timeout(5), pool.lease() as client:
                response = await client.get("v1/models", headers=headers)
            ok = response.status_code == 200
            detail = "" if ok else f"HTTP {response.status_code}"
        except UpstreamUnavailable as exc:
            ok, detail = False, str(exc).partition(": ")[2]
        except EgressRefused as exc:
            # Security: refused before any byte (and so before the key) was sent.
            logger.warning("health probe of %s refused at connect time: %s", self.target.name, exc.detail)
            ok, detail = False, f"upstream address refused ({exc.code})"
        except (httpx.HTTPError, TimeoutError) as exc:
            ok, detail = False, type(exc).__name__
        return HealthResult(ok=ok, detail=detail, latency_ms=(time.perf_counter() - start) * 1000)

    async def aclose(self) -> None:
        loop_id = id(asyncio.get_running_loop())
        for key in [k for k in _clients if k[0] == loop_id and k[1] == self.target.base_url]:
            client = _clients.pop(key, None)
            if client is not None:
                await client.aclose()
