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

logger = logging.getLogger("gennai.registry.upstream")
LOGGED_BODY_CHARS = 500

#: Most connections one httpx client (one httpcore pool) holds. httpcore's pool scans
#: every one of its connections on each request start and each response close, so a
#: single client with N open streams costs O(N) per stream event — quadratic over a
#: burst (2,000 streams took 68–99 s to finish through one client). A deployment's
#: connections are therefore spread over small clients (docs/adr/0007).
SHARD_CONNECTIONS = 16


class ShardedClient:
    """A deployment's upstream connections, spread over egress-guarded clients of ≤ 16 each.

    The deployment's cap holds for the sum: the shards' ``max_connections`` add up
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
        return any(client.is_closed for client in self.clients)

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


# The connection died before any answer arrived: a pooled keep-alive connection the
# server closed as we reused it (uvicorn, and so vLLM, closes idle connections after
# 5 s), or a reset while the server was busy accepting. The server cannot have
# answered, so one immediate retry on a fresh connection is safe and hides nothing.
_NO_ANSWER_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
# Below the 5 s idle timeout of uvicorn/vLLM, so we normally drop a connection first.
KEEPALIVE_EXPIRY_SECONDS = 4.0


async def _send_with_one_retry(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """``client.send(request, stream=True)``, retried once if the connection died before the headers."""
    try:
        return await client.send(request, stream=True)
    except _NO_ANSWER_ERRORS as exc:
        logger.info("upstream connection closed before an answer (%s); retrying once", type(exc).__name__)
        return await client.send(request, stream=True)


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
        body = {
            **request.params,
            "model": self.target.served_model_name,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        pool, headers = self._prepare()
        # Encoded here as httpx's json= would (compact, UTF-8), without its per-request overhead.
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        headers["Content-Type"] = "application/json"
        async with pool.lease() as client:
            try:
                async with asyncio.timeout(self.target.first_token_timeout):
                    response = await _send_with_one_retry(
                        client, client.build_request("POST", pool.chat_url, content=payload, headers=headers)
                    )
            except EgressRefused as exc:
                raise self._refused(exc) from None
            except (httpx.TransportError, TimeoutError) as exc:
                raise UpstreamUnavailable(f"{self.target.name}: {type(exc).__name__}") from exc
            try:
                if response.status_code >= 400:
                    _log_body(self.target, response.status_code, await response.aread())
                    failure = (
                        UpstreamUnavailable
                        if response.status_code >= 500 or response.status_code == 429
                        else UpstreamRejected
                    )
                    raise failure(
                        f"{self.target.name}: HTTP {response.status_code}", status=response.status_code
                    )
                if response.is_redirect:  # never followed: a redirect could lead around the allowlist
                    raise UpstreamUnavailable(
                        f"{self.target.name}: HTTP {response.status_code} (redirects are not followed)",
                        status=response.status_code,
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
                        # Read the (empty) rest of the body: a response closed unfinished cannot go
                        # back to the pool, and the next request would open a new connection.
                        async for _rest in lines:
                            pass
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
