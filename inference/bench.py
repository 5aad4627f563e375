"""``bench``: TTFT, latency, tokens/s and concurrency of any OpenAI-compatible chat endpoint.

For each concurrency level, ``requests`` streaming ``/v1/chat/completions`` calls run with at most
``concurrency`` in flight. Per request it records:

* TTFT: from sending the request to the first chunk that carries generated text (``content``,
  ``reasoning_content``/``reasoning``, or a tool call): the opening role-only chunk does not count;
* latency: until ``data: [DONE]`` (a stream that ends without it is an error);
* completion tokens: from the final usage chunk when the server honours
  ``stream_options: {"include_usage": true}``, else the number of text-carrying chunks
  (exact for llama.cpp and vLLM, which send one token per chunk, an estimate elsewhere);
* decode tokens/s: (tokens - 1) / (latency - TTFT).

Per level: median and p95 of TTFT and latency, aggregate output tokens/s (all tokens / wall time of
the level), median per-request decode rate, and errors. Everything is bounded: request count,
concurrency and a per-request deadline; connections go straight to the endpoint (no proxies).
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

MAX_REQUESTS = 10_000
MAX_CONCURRENCY = 1_024
USAGE_SOURCE = "usage"
DEFAULT_PROMPT = "日本の行政手続きをデジタル化する利点を、職員向けに三つの要点で簡潔に説明してください。"


class BenchError(RuntimeError):
    """The benchmark could not start (bad arguments, endpoint unreachable, no model)."""


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    base_url: str
    model: str | None = None
    requests: int = 16
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    max_tokens: int = 128
    prompt: str = DEFAULT_PROMPT
    timeout_s: float = 120.0
    warmup: int = 1
    ignore_eos: bool = False
    api_key: str | None = field(default=None, repr=False)

    def validate(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise BenchError(f"base URL must start with http:// or https://, got {self.base_url!r}")
        if not 1 <= self.requests <= MAX_REQUESTS:
            raise BenchError(f"--requests must be 1..{MAX_REQUESTS}")
        if not self.concurrency or any(not 1 <= c <= MAX_CONCURRENCY for c in self.concurrency):
            raise BenchError(f"--concurrency levels must be 1..{MAX_CONCURRENCY}")
        if not 1 <= self.max_tokens <= 65_536:
            raise BenchError("--max-tokens must be 1..65536")
        if not 0 < self.timeout_s <= 3_600:
            raise BenchError("--timeout must be in (0, 3600] seconds")
        if not 0 <= self.warmup <= 16:
            raise BenchError("--warmup must be 0..16")


@dataclass(frozen=True)
class RequestResult:
    """One streamed request."""

    concurrency: int
    index: int
    ok: bool
    error: str | None
    status: int | None
    ttft_s: float | None
    latency_s: float
    completion_tokens: int
    token_source: str
    """``usage`` (server-reported), ``chunks`` (counted) or ``none``."""
    text_chunks: int
    decode_tokens_per_s: float | None


@dataclass(frozen=True)
class LevelSummary:
    """Aggregates for one concurrency level."""

    concurrency: int
    requests: int
    ok: int
    errors: int
    wall_s: float
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    completion_tokens: int
    aggregate_tokens_per_s: float
    decode_tokens_per_s_p50: float | None
    usage_reported: int
    error_samples: list[str]


@dataclass(frozen=True)
class BenchReport:
    """Everything ``--json`` writes."""

    base_url: str
    model: str
    max_tokens: int
    requests_per_level: int
    prompt_chars: int
    ignore_eos: bool
    levels: list[LevelSummary]
    results: list[RequestResult]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def api_root(base_url: str) -> str:
    """``http://host:8000``, ``http://host:8000/`` and ``http://host:8000/v1`` all mean ``.../v1``."""
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between ranks; ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _headers(cfg: BenchConfig) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if cfg.api_key:
        headers["Authorization"] = f"Bearer {cfg.api_key}"
    return headers


def _payload(cfg: BenchConfig, model: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": cfg.prompt}],
        "max_tokens": cfg.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if cfg.ignore_eos:
        payload["ignore_eos"] = True  # vLLM extension: always generate max_tokens
    return payload


def _carries_token(choice: Any) -> bool:
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        return False
    for key in ("content", "reasoning_content", "reasoning"):
        if isinstance(delta.get(key), str) and delta[key]:
            return True
    return bool(delta.get("tool_calls"))


async def stream_one(
    client: httpx.AsyncClient, cfg: BenchConfig, model: str, *, concurrency: int, index: int
) -> RequestResult:
    """Send one streaming request and time it; never raises for endpoint failures."""
    url = api_root(cfg.base_url) + "/chat/completions"
    start = time.perf_counter()
    first: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    status: int | None = None
    error: str | None = None
    done = False
    try:
        async with asyncio.timeout(cfg.timeout_s):
            async with client.stream(
                "POST", url, json=_payload(cfg, model), headers=_headers(cfg)
            ) as response:
                status = response.status_code
                if status != 200:
                    body = (await response.aread())[:300].decode("utf-8", "replace")
                    error = f"HTTP {status}: {body.strip()}"
                else:
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            done = True
                            break
                        event = json.loads(data)
                        if not isinstance(event, dict):
                            raise ValueError("SSE data is not a JSON object")
                        if event.get("error"):
                            error = f"stream error: {json.dumps(event['error'], ensure_ascii=False)[:200]}"
                            break
                        usage = event.get("usage")
                        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                            usage_tokens = usage["completion_tokens"]
                        for choice in event.get("choices") or []:
                            if _carries_token(choice):
                                if first is None:
                                    first = time.perf_counter()
                                chunks += 1
    except TimeoutError:
        error = f"timeout after {cfg.timeout_s:g} s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        error = f"malformed stream: {exc}"
    end = time.perf_counter()
    if error is None and not done:
        error = "stream ended before data: [DONE]"
    if error is None and first is None:
        error = "stream carried no tokens"
    tokens = usage_tokens if usage_tokens is not None else chunks
    source = USAGE_SOURCE if usage_tokens is not None else ("chunks" if chunks else "none")
    ttft = first - start if first is not None else None
    decode = (tokens - 1) / (end - first) if first is not None and tokens > 1 and end > first else None
    return RequestResult(
        concurrency=concurrency,
        index=index,
        ok=error is None,
        error=error,
        status=status,
        ttft_s=_r(ttft),
        latency_s=_r(end - start) or 0.0,
        completion_tokens=tokens,
        token_source=source,
        text_chunks=chunks,
        decode_tokens_per_s=_r(decode),
    )


def summarize(concurrency: int, results: list[RequestResult], wall_s: float) -> LevelSummary:
    """Aggregate one level; failed requests count as errors and add no tokens."""
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    latencies = [r.latency_s for r in ok]
    decodes = [r.decode_tokens_per_s for r in ok if r.decode_tokens_per_s is not None]
    tokens = sum(r.completion_tokens for r in ok)
    samples: list[str] = []
    for r in results:
        if r.error and r.error not in samples and len(samples) < 5:
            samples.append(r.error)
    return LevelSummary(
        concurrency=concurrency,
        requests=len(results),
        ok=len(ok),
        errors=len(results) - len(ok),
        wall_s=_r(wall_s) or 0.0,
        ttft_p50_s=_r(percentile(ttfts, 50)),
        ttft_p95_s=_r(percentile(ttfts, 95)),
        latency_p50_s=_r(percentile(latencies, 50)),
        latency_p95_s=_r(percentile(latencies, 95)),
        completion_tokens=tokens,
        aggregate_tokens_per_s=round(tokens / wall_s, 2) if wall_s > 0 else 0.0,
        decode_tokens_per_s_p50=_r(statistics.median(decodes)) if decodes else None,
        usage_reported=sum(1 for r in ok if r.token_source == USAGE_SOURCE),
        error_samples=samples,
    )


async def discover_model(client: httpx.AsyncClient, cfg: BenchConfig) -> str:
    """The first model id that ``GET /v1/models`` lists."""
    url = api_root(cfg.base_url) + "/models"
    try:
        response = await client.get(url, headers=_headers(cfg))
        response.raise_for_status()
        models = response.json().get("data") or []
        return str(models[0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise BenchError(f"could not list models at {url} ({exc}); pass --model") from exc


async def run_bench(cfg: BenchConfig) -> BenchReport:
    """Run every concurrency level in order (after ``warmup`` unrecorded requests)."""
    cfg.validate()
    peak = max(cfg.concurrency)
    timeout = httpx.Timeout(cfg.timeout_s, connect=min(10.0, cfg.timeout_s))
    limits = httpx.Limits(max_connections=peak, max_keepalive_connections=peak)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        model = cfg.model or await discover_model(client, cfg)
        for i in range(cfg.warmup):
            await stream_one(client, cfg, model, concurrency=0, index=i)
        levels: list[LevelSummary] = []
        results: list[RequestResult] = []
        for concurrency in cfg.concurrency:
            gate = asyncio.Semaphore(concurrency)

            async def gated(
                index: int, concurrency: int = concurrency, gate: asyncio.Semaphore = gate
            ) -> RequestResult:
                async with gate:
                    return await stream_one(client, cfg, model, concurrency=concurrency, index=index)

            started = time.perf_counter()
            level_results = await asyncio.gather(*(gated(i) for i in range(cfg.requests)))
            wall = time.perf_counter() - started
            levels.append(summarize(concurrency, list(level_results), wall))
            results.extend(level_results)
    return BenchReport(
        base_url=cfg.base_url,
        model=model,
        max_tokens=cfg.max_tokens,
        requests_per_level=cfg.requests,
        prompt_chars=len(cfg.prompt),
        ignore_eos=cfg.ignore_eos,
        levels=levels,
        results=results,
    )


def format_table(report: BenchReport) -> str:
    """The per-level table for the terminal."""

    def s(v: float | None) -> str:
        return f"{v:.3f} s" if v is not None else "-"

    lines = [
        f"bench {api_root(report.base_url)}  model={report.model}  max_tokens={report.max_tokens}  "
        f"requests/level={report.requests_per_level}" + ("  ignore_eos" if report.ignore_eos else ""),
        f"{'conc':>4}  {'ok':>5}  {'err':>4}  {'TTFT p50':>9}  {'TTFT p95':>9}  "
        f"{'lat p50':>9}  {'lat p95':>9}  {'tok/s':>8}  {'tok/s/req':>9}  {'tokens':>7}  usage",
    ]
    for lv in report.levels:
        per_req = f"{lv.decode_tokens_per_s_p50:.1f}" if lv.decode_tokens_per_s_p50 is not None else "-"
        lines.append(
            f"{lv.concurrency:>4}  {lv.ok:>5}  {lv.errors:>4}  {s(lv.ttft_p50_s):>9}  {s(lv.ttft_p95_s):>9}  "
            f"{s(lv.latency_p50_s):>9}  {s(lv.latency_p95_s):>9}  {lv.aggregate_tokens_per_s:>8.1f}  "
            f"{per_req:>9}  {lv.completion_tokens:>7}  {lv.usage_reported}/{lv.ok}"
        )
    for lv in report.levels:
        for sample in lv.error_samples:
            lines.append(f"  errors at concurrency {lv.concurrency}: {sample}")
    lines.append(
        "tok/s = all output tokens / wall time of the level; tok/s/req = median per-request decode rate; "
        "usage = requests whose token count the server reported"
    )
    return "\n".join(lines) + "\n"


def _r(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None
