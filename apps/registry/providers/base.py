"""The provider plugin contract.

A provider adapts one kind of model server (vLLM, llama.cpp, a vendor API) to
the platform. Vendors ship adapters as their own packages, registered under the
entry-point group ``gennai.providers`` (see docs/registry.md).

Contract (checked for every registered provider by the conformance tests):

* ``__init__(target: ProviderTarget)`` MUST NOT do I/O.
* ``chat(request)`` MUST be an async iterator of :class:`ChatChunk`, yielding
  each upstream chunk as soon as it arrives (no buffering). It MUST raise
  :class:`UpstreamUnavailable` for failures *before* the first chunk (connect
  error, HTTP 5xx/429, timeout to first byte) so the router can fail over, and
  :class:`UpstreamInterrupted` for failures after it.
* ``raw`` of each chunk SHOULD be the upstream's OpenAI-compatible JSON bytes, so
  the ``/v1`` API can pass them through without re-serialising.
* ``embed(inputs)`` MUST return one vector per input, in order.
* ``health()`` MUST return within its timeout and MUST NOT raise.
* ``aclose()`` releases pooled connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ProviderTarget:
    """What a provider needs to reach one deployment (no Django objects)."""

    deployment_id: int
    name: str
    base_url: str
    served_model_name: str
    api_key: str = ""
    max_concurrency: int = 16
    connect_timeout: float = 5.0
    first_token_timeout: float = 60.0
    read_timeout: float = 120.0


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, top_p, stop, seed…


@dataclass
class ChatChunk:
    """One streamed piece. ``delta`` is the new text; ``raw`` the upstream JSON bytes."""

    delta: str = ""
    raw: bytes = b""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    reasoning_delta: str = ""


@dataclass
class EmbedResult:
    vectors: list[list[float]]
    prompt_tokens: int = 0


@dataclass
class HealthResult:
    ok: bool
    detail: str = ""
    latency_ms: float = 0.0


class UpstreamError(Exception):
    """Base of provider errors; ``status`` is the upstream HTTP status if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamUnavailable(UpstreamError):
    """Failed before the first token: safe to fail over to another deployment."""


class UpstreamInterrupted(UpstreamError):
    """Failed after the first token: the answer is partial."""


class UpstreamRejected(UpstreamError):
    """The upstream refused the request itself (HTTP 4xx other than 429): do not retry."""


@runtime_checkable
class Provider(Protocol):
    kind: str

    def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...

    async def embed(self, inputs: list[str]) -> EmbedResult: ...

    async def health(self) -> HealthResult: ...

    async def aclose(self) -> None: ...
