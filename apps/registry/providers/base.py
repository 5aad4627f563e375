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
* It MUST reach the upstream only through a client from
  :func:`apps.registry.egress.guarded_client` (allowlist, connect-time address
  check, no redirects), and MUST take the key from
  :meth:`ProviderTarget.resolve_api_key` at call time, never from elsewhere.
* Exceptions MUST NOT carry upstream response bodies: ``str(exc)`` and every
  public attribute are shown to API callers. Log the body (truncated) instead.
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
    api_key: str = ""  # an explicit key (tests, bench); the registry passes ``secret_ref`` instead
    max_concurrency: int = 16
    connect_timeout: float = 5.0
    first_token_timeout: float = 60.0
    read_timeout: float = 120.0
    secret_ref: str = ""  # ``env:GENNAI_UPSTREAM_…`` or ``file:…`` (apps/registry/secrets.py)

    def resolve_api_key(self) -> str:
        """The key to send, resolved now (raises ``SecretRefError`` for a refused reference).

        Security: a reference is re-validated at every call (defence in depth),
        so a row that bypassed the form and service still cannot reach a
        platform credential.
        """
        if self.secret_ref:
            from apps.registry.secrets import resolve_secret_ref

            return resolve_secret_ref(self.secret_ref)
        return self.api_key


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
    #: The chunk carries tool-call (or legacy ``function_call``) output, relayed in ``raw``.
    tool_call_delta: bool = False

    @property
    def produced(self) -> bool:
        """Whether the model produced output here: text, reasoning or a tool call's arguments.

        Security: what an upstream that reports no usage is charged for is the
        count of such chunks; output returned as tool-call arguments is output too.
        """
        return bool(self.delta or self.reasoning_delta or self.tool_call_delta)


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
    """Base of provider errors; ``status`` is the upstream HTTP status if any.

    Security: ``message`` is our own text (deployment name, HTTP status, the
    kind of failure) and never contains the upstream's response body, which
    may reflect internal details or attacker-chosen text; ``str(exc)``,
    ``message``, ``status`` and ``public_message`` are all safe to show.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @property
    def public_message(self) -> str:
        """A generic English text for API callers (no deployment name, no upstream text)."""
        if self.status is not None:
            return f"The model server answered HTTP {self.status}."
        return "The model server could not be reached."


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
