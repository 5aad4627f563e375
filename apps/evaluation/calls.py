"""One measured model call to one deployment (no failover), for runs, the judge and the arena.

Timings are taken around the router's stream: TTFT is the time to the first
non-empty text delta, latency the time to the end of the stream. Tokens come
from the upstream's usage chunk, else from the platform's estimator (llama.cpp
sends no usage when streaming). No database connection is used while waiting
on the network: callers run this with :func:`run_call` outside any transaction.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from apps.quotas.tokens import count_prompt_tokens, estimate_text_tokens
from apps.registry.providers.base import ChatRequest, UpstreamError
from apps.registry.providers.registry import get_provider_factory
from apps.registry.router import AllUpstreamsFailed, RoutePlan, RouteRefused, provider_target, stream_chat


@dataclass(frozen=True)
class CallResult:
    output: str
    ttft_ms: int | None
    latency_ms: int
    prompt_tokens: int
    completion_tokens: int
    error: str = ""

    @property
    def tokens_per_s(self) -> float | None:
        """Completion tokens per second of generation (after the first token)."""
        if self.error or self.ttft_ms is None or self.completion_tokens <= 1:
            return None
        generating = (self.latency_ms - self.ttft_ms) / 1000
        return round((self.completion_tokens - 1) / generating, 2) if generating > 0 else None


async def call(plan: RoutePlan, *, messages: list[dict[str, str]], max_tokens: int) -> CallResult:
    started = time.perf_counter()
    ttft: int | None = None
    parts: list[str] = []
    usage: dict[str, int] | None = None
    error = ""
    request = ChatRequest(messages=messages, params={"max_tokens": max_tokens, "temperature": 0})
    try:
        async for _deployment, chunk in stream_chat(plan, request):
            if chunk.delta:
                if ttft is None:
                    ttft = round((time.perf_counter() - started) * 1000)
                parts.append(chunk.delta)
            usage = chunk.usage or usage
    except (UpstreamError, AllUpstreamsFailed, RouteRefused, OSError) as exc:
        # Our own messages only (UpstreamError never carries the upstream body).
        error = f"{type(exc).__name__}: {exc}"[:500]
    except Exception as exc:  # noqa: BLE001 - one failed call must not stop a run
        # Anything else (a refused secret reference, an egress refusal, a provider bug) is
        # recorded by its type only: its text might carry what it should not.
        error = type(exc).__name__
    latency = round((time.perf_counter() - started) * 1000)
    output = "".join(parts)
    model_name = plan.candidates[0].model_name if plan.candidates else None
    if usage and usage.get("prompt_tokens") is not None:
        prompt_tokens = int(usage.get("prompt_tokens", 0))
    else:
        prompt_tokens, _estimated = count_prompt_tokens(messages=list(messages), model_name=model_name)
    if usage and usage.get("completion_tokens") is not None:
        completion_tokens = int(usage.get("completion_tokens", 0))
    else:
        completion_tokens = estimate_text_tokens(output) if output else 0
    return CallResult(
        output=output,
        ttft_ms=ttft,
        latency_ms=latency,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        error=error,
    )


async def close_clients(plans: list[RoutePlan]) -> None:
    """Close the pooled clients this event loop opened (callers on a private loop: they are loop-bound)."""
    for plan in plans:
        for deployment in plan.candidates:
            await get_provider_factory(deployment.provider)(provider_target(deployment)).aclose()


async def _call_and_close(plan: RoutePlan, *, messages: list[dict[str, str]], max_tokens: int) -> CallResult:
    try:
        return await call(plan, messages=messages, max_tokens=max_tokens)
    finally:
        await close_clients([plan])


def run_call(plan: RoutePlan, *, messages: list[dict[str, str]], max_tokens: int) -> CallResult:
    """:func:`call` from synchronous code (a Celery worker or a view thread), on a private loop."""
    return asyncio.run(_call_and_close(plan, messages=messages, max_tokens=max_tokens))
