"""The byte relay (streamed answers) and the aggregation (non-streamed answers) of ``/v1``.

Per *chunk* the relay does no ORM work and no JSON: each upstream chunk's raw
JSON bytes go out as ``data: <raw>\\n\\n`` with the served model name swapped
for the alias the client asked for by one ``bytes.replace`` (see :func:`relay`).
Non-streamed requests are streamed from the upstream too and joined here into
one ``chat.completion`` (:func:`aggregate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar, cast

from apps.quotas.models import UsageStatus
from apps.registry.providers.base import ChatChunk, UpstreamError
from apps.registry.snapshot import DeploymentInfo

from . import errors
from .usage import UsageMeter

logger = logging.getLogger("gennai.gateway")

DONE = b"data: [DONE]\n\n"
T = TypeVar("T")
#: Most frames joined into one write (≈25 µs of relay work each): bounds how long a
#: frame can wait behind the frames buffered with it.
MAX_FRAMES_PER_WRITE = 16


def _empty_choices(raw: bytes) -> bool:
    return b'"choices":[]' in raw or b'"choices": []' in raw


def _synthesized(chunk: ChatChunk, alias: str) -> bytes:
    """OpenAI chunk JSON for a provider plugin that leaves ``raw`` empty (allowed by its contract)."""
    delta: dict[str, str] = {}
    if chunk.delta:
        delta["content"] = chunk.delta
    if chunk.reasoning_delta:
        delta["reasoning_content"] = chunk.reasoning_delta
    payload: dict[str, Any] = {
        "id": "chatcmpl-gennai",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": alias,
        "choices": []
        if chunk.usage and not delta and chunk.finish_reason is None
        else [{"index": 0, "delta": delta, "finish_reason": chunk.finish_reason}],
    }
    if chunk.usage:
        payload["usage"] = chunk.usage
    return json.dumps(payload, ensure_ascii=False).encode()


class _Waiting:
    """An ``__anext__`` that could not complete without waiting, suspended at its first await."""

    __slots__ = ("awaiting", "coro")

    def __init__(self, coro: Coroutine[Any, Any, Any], awaiting: Any) -> None:
        self.coro = coro
        self.awaiting = awaiting


def next_if_ready(stream: AsyncIterator[T]) -> T | _Waiting:
    """The next item if the iterator can produce it without waiting, else a :class:`_Waiting`.

    Steps ``stream.__anext__()`` once by hand, as the event loop's task would:
    when the upstream's bytes are already buffered (a server writes many chunks
    per TCP segment), the whole chain down to httpx's line decoder completes
    without suspending and the item is returned at once. Otherwise the
    coroutine is suspended on a future and :func:`resume` finishes it.
    Raises what ``__anext__`` raises (``StopAsyncIteration`` at the end).
    """
    # An async generator's asend object or a coroutine: both have send/throw.
    coro = cast(Coroutine[Any, Any, T], stream.__anext__())
    try:
        awaiting = coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    return _Waiting(coro, awaiting)


async def resume(waiting: _Waiting) -> Any:
    """Finish a suspended ``__anext__`` exactly as the running task would drive it.

    Waits for what the coroutine awaits, then resumes it; what the wait raises
    (the task's cancellation included: a client disconnect, a timeout inside
    the provider) is thrown into the coroutine, which is what the task does.
    """
    coro, awaiting = waiting.coro, waiting.awaiting
    while True:
        try:
            if awaiting is None:  # a bare yield (asyncio.sleep(0)): just let others run
                await asyncio.sleep(0)
            else:
                # The coroutine yielded a future to its task: take it over as the task
                # does (clear the "blocking" flag its await set), then wait for it here.
                awaiting._asyncio_future_blocking = False
                await awaiting
        except BaseException as exc:  # noqa: BLE001 - forwarded into the coroutine, like Task.__step
            try:
                awaiting = coro.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            awaiting = coro.send(None)
        except StopIteration as done:
            return done.value


async def abandon(waiting: _Waiting) -> None:
    """Cancel a suspended ``__anext__`` (the client left while it was pending), running its cleanup.

    This is what cancelling the task would have done to an awaited ``__anext__``:
    ``CancelledError`` at its await, its ``finally`` blocks (closing the upstream
    response) driven to the end.
    """
    try:
        awaiting = waiting.coro.throw(asyncio.CancelledError())
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - it ended, as it should
        return
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await resume(_Waiting(waiting.coro, awaiting))


async def relay(
    stream: AsyncIterator[tuple[DeploymentInfo, ChatChunk]],
    first: ChatChunk,
    usage: UsageMeter,
    *,
    include_usage: bool,
    after_first: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """SSE frames from upstream chunks: raw JSON bytes passed through, model renamed.

    The rename is ``raw.replace(b'"<served>"', b'"<alias>"', 1)``: the first
    JSON string exactly equal to the served model name is the ``model`` field in
    every OpenAI-compatible chunk (``id``/``object``/``created`` come before it
    and are never that string; text inside strings has its quotes escaped). If a
    server names the model differently, the chunk is relayed unchanged.

    Frames that are ready together go out together: after each chunk the next
    one is taken only if it is already available (:func:`next_if_ready`); the
    frames gathered so far are yielded as one piece *before* any wait, so no
    frame is ever held back to wait for another — the byte stream is the same,
    in fewer writes. The first frame (the first token) always goes alone, and a
    piece holds at most :data:`MAX_FRAMES_PER_WRITE` frames. ``after_first`` is
    called once the first frame was taken by the server (background work that
    must not delay the first token).
    """
    assert usage.deployment is not None
    needle = json.dumps(usage.deployment.served_model_name, ensure_ascii=False).encode()
    alias = json.dumps(usage.alias_name, ensure_ascii=False).encode()
    status = UsageStatus.INTERRUPTED
    content_chunks = 0
    final = DONE
    batch: list[bytes] = []
    pending: _Waiting | None = None
    limit = 1
    try:
        chunk = first
        while True:
            if not chunk.raw:
                chunk.raw = _synthesized(chunk, usage.alias_name)
            if chunk.usage is None:
                if chunk.produced:  # text, reasoning or tool-call arguments
                    content_chunks += 1
                batch.append(b"data: " + chunk.raw.replace(needle, alias, 1) + b"\n\n")
            else:
                usage.take_usage(chunk.usage)
                # The provider always asks the upstream for usage; forward the
                # usage-only chunk (no choices) only if the client asked for it.
                if include_usage or chunk.delta or chunk.finish_reason or not _empty_choices(chunk.raw):
                    batch.append(b"data: " + chunk.raw.replace(needle, alias, 1) + b"\n\n")
            if len(batch) >= limit:
                # The first token always goes alone (nothing buffered behind it may
                # delay it, not even by the CPU time of relaying the rest); later
                # pieces are bounded so that no frame waits long behind the others.
                yield batch[0] if len(batch) == 1 else b"".join(batch)
                batch = []
                limit = MAX_FRAMES_PER_WRITE
                if after_first is not None:
                    after_first()
                    after_first = None
            failure: BaseException | None = None
            ended = False
            step: Any = None
            try:
                step = next_if_ready(stream)
            except StopAsyncIteration:
                ended = True
            except Exception as exc:  # noqa: BLE001 - raised after the frames before it: send those first
                failure = exc
            else:
                if not isinstance(step, _Waiting):
                    chunk = step[1]
                    continue
            if batch:
                # While this frame is sent the next __anext__ stays suspended (``pending``):
                # if the client leaves here, the finally below cancels it first.
                pending = step if isinstance(step, _Waiting) else None
                yield batch[0] if len(batch) == 1 else b"".join(batch)
                pending = None
                batch = []
            if ended:
                break
            if failure is not None:
                raise failure
            assert isinstance(step, _Waiting)
            try:
                chunk = (await resume(step))[1]
            except StopAsyncIteration:
                break
        status = UsageStatus.OK
    except UpstreamError as exc:
        logger.warning("stream interrupted after first token: %s", exc)
        usage.detail = "upstream_interrupted"
        final = errors.sse_error_event(
            "モデルサーバーとの接続が途中で切れたため、回答が途中で終わりました。"
            " / The model server connection was lost; the answer is incomplete.",
            code="upstream_interrupted",
        )
    except Exception:
        logger.exception("stream relay failed")
        status = UsageStatus.ERROR
        usage.detail = "relay_error"
        final = errors.sse_error_event(
            "内部エラーにより回答が途中で終わりました。 / An internal error ended the answer early.",
            code="internal_error",
        )
    finally:
        # Normal end, upstream failure, or client gone (GeneratorExit/CancelledError,
        # which then propagates past the last yield): close the upstream response,
        # then write the usage row once.
        if pending is not None:
            await abandon(pending)
        await stream.aclose()  # type: ignore[attr-defined]
        if not usage.completion_tokens:
            usage.completion_tokens = content_chunks
        await usage.finish(status)
    # After the write: once a client has seen the end, its usage is on the books.
    yield final


def _merge_tool_calls(calls: dict[int, dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    for delta in deltas:
        call = calls.setdefault(
            int(delta.get("index", len(calls))),
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


async def aggregate(
    stream: AsyncIterator[tuple[DeploymentInfo, ChatChunk]], first: ChatChunk, usage: UsageMeter
) -> dict[str, Any]:
    """One ``chat.completion`` from the streamed chunks (non-stream requests)."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish_reason: str | None = None
    meta: dict[str, Any] = {}
    chunk: ChatChunk | None = first
    while chunk is not None:
        payload = json.loads(chunk.raw or _synthesized(chunk, usage.alias_name))
        for key in ("id", "created", "system_fingerprint"):
            if payload.get(key) is not None:
                meta.setdefault(key, payload[key])
        for choice in payload.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            if chunk.reasoning_delta:
                reasoning.append(chunk.reasoning_delta)
            if delta.get("tool_calls"):
                _merge_tool_calls(calls, delta["tool_calls"])
            finish_reason = choice.get("finish_reason") or finish_reason
        usage.take_usage(chunk.usage)
        try:
            chunk = (await stream.__anext__())[1]
        except StopAsyncIteration:
            chunk = None
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(content) if content or not calls else None,
    }
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if not usage.completion_tokens:
        usage.completion_tokens = len(content)
    prompt_tokens = usage.prompt_count()[0]  # the upstream's count, else ours
    result: dict[str, Any] = {
        "id": meta.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(meta.get("created") or time.time()),
        "model": usage.alias_name,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason or "stop", "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": prompt_tokens + usage.completion_tokens,
        },
    }
    if meta.get("system_fingerprint"):
        result["system_fingerprint"] = meta["system_fingerprint"]
    return result
