"""The relay and the aggregation, without a server or a database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from apps.gateway.auth import Caller
from apps.gateway.relay import MAX_FRAMES_PER_WRITE, aggregate, relay
from apps.gateway.usage import UsageMeter
from apps.registry.providers.base import ChatChunk, UpstreamInterrupted
from apps.registry.snapshot import AliasInfo, DeploymentInfo

DEPLOYMENT = DeploymentInfo(
    id=1,
    name="dep",
    provider="openai_compatible",
    base_url="http://x",
    served_model_name="org/served-7b",
    secret_ref="",
    max_concurrency=1,
    clearance=2,
    enabled=True,
    healthy=True,
    model_name="m",
    context_window=4096,
)
ALIAS = AliasInfo(
    id=1,
    name="standard-chat",
    display_name_ja="標準",
    display_name_en="Standard",
    kind="chat",
    revision_id=1,
    revision_number=3,
    routes=(),
)


def chunk(payload: dict[str, Any], **fields: Any) -> ChatChunk:
    return ChatChunk(raw=json.dumps(payload, separators=(",", ":")).encode(), **fields)


def content(text: str, finish: str | None = None) -> ChatChunk:
    return chunk(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "org/served-7b",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
        },
        delta=text,
        finish_reason=finish,
    )


USAGE_ONLY = chunk(
    {
        "id": "c1",
        "model": "org/served-7b",
        "choices": [],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2},
    },
    usage={"prompt_tokens": 4, "completion_tokens": 2},
)


def make_usage() -> tuple[UsageMeter, list[str]]:
    caller = Caller(
        ministry_id=1, api_key_id=1, user_id=None, allowed_aliases=frozenset(), max_level=2, default_level=2
    )
    usage = UsageMeter(caller=caller, alias_name=ALIAS.name, level=2, endpoint="chat", started=0.0)
    usage.deployment = DEPLOYMENT
    finished: list[str] = []

    async def finish(status: str) -> None:
        finished.append(status)

    usage.finish = finish  # type: ignore[method-assign]
    return usage, finished


async def upstream(*chunks: ChatChunk | Exception) -> AsyncIterator[tuple[DeploymentInfo, ChatChunk]]:
    for item in chunks:
        if isinstance(item, Exception):
            raise item
        yield DEPLOYMENT, item


async def collect(agen: AsyncIterator[bytes]) -> list[bytes]:
    """The SSE frames, whichever writes they came in (the relay joins frames ready together)."""
    return [frame + b"\n\n" for piece in [p async for p in agen] for frame in piece.split(b"\n\n")[:-1]]


@pytest.mark.parametrize("include_usage", [False, True])
def test_relay_passes_bytes_renames_model_and_filters_usage(include_usage: bool) -> None:
    usage, finished = make_usage()
    first = content("こん")
    frames = asyncio.run(
        collect(
            relay(
                upstream(content("にちは", "stop"), USAGE_ONLY),
                first,
                usage,
                include_usage=include_usage,
            )
        )
    )
    assert frames[0] == b"data: " + first.raw.replace(b'"org/served-7b"', b'"standard-chat"') + b"\n\n"
    assert frames[-1] == b"data: [DONE]\n\n"
    assert all(b"served-7b" not in f for f in frames)
    assert len(frames) == (4 if include_usage else 3)
    assert finished == ["ok"] and (usage.prompt_tokens, usage.completion_tokens) == (4, 2)


def test_relay_leaves_text_equal_to_served_name_alone() -> None:
    usage, _ = make_usage()
    tricky = content('"org/served-7b"')  # the model name as text: escaped quotes, not replaced
    [frame, _done] = asyncio.run(collect(relay(upstream(), tricky, usage, include_usage=False)))
    payload = json.loads(frame.removeprefix(b"data: "))
    assert payload["model"] == "standard-chat"
    assert payload["choices"][0]["delta"]["content"] == '"org/served-7b"'


def test_relay_ends_with_error_event_after_first_token() -> None:
    usage, finished = make_usage()
    frames = asyncio.run(
        collect(relay(upstream(UpstreamInterrupted("dep: cut")), content("a"), usage, include_usage=False))
    )
    error = json.loads(frames[-1].removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_interrupted" and b"[DONE]" not in b"".join(frames)
    assert finished == ["interrupted"] and usage.completion_tokens == 1


def test_relay_synthesizes_chunks_for_providers_without_raw() -> None:
    usage, _ = make_usage()
    frames = asyncio.run(
        collect(
            relay(upstream(ChatChunk(finish_reason="stop")), ChatChunk(delta="x"), usage, include_usage=False)
        )
    )
    first = json.loads(frames[0].removeprefix(b"data: "))
    assert first["model"] == "standard-chat" and first["choices"][0]["delta"] == {"content": "x"}
    assert json.loads(frames[1].removeprefix(b"data: "))["choices"][0]["finish_reason"] == "stop"


def test_aggregate_joins_content_and_tool_calls() -> None:
    usage, _ = make_usage()

    def tool_delta(index: int, **fn: str) -> ChatChunk:
        call: dict[str, Any] = {"index": index, "function": fn}
        if "name" in fn:
            call.update(id=f"call_{index}", type="function")
        return chunk({"id": "c9", "created": 5, "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})

    result = asyncio.run(
        aggregate(
            upstream(
                tool_delta(0, arguments='{"city": '),
                tool_delta(0, arguments='"東京"}'),
                chunk(
                    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
                    finish_reason="tool_calls",
                ),
                USAGE_ONLY,
            ),
            tool_delta(0, name="weather", arguments=""),
            usage,
        )
    )
    message = result["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "call_0", "type": "function", "function": {"name": "weather", "arguments": '{"city": "東京"}'}}
    ]
    assert result["choices"][0]["finish_reason"] == "tool_calls"
    assert (result["id"], result["created"], result["model"]) == ("c9", 5, "standard-chat")
    assert result["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


# --- Frames ready together go out together (never waiting for more) ----------------------


def frame_of(item: ChatChunk) -> bytes:
    return b"data: " + item.raw.replace(b'"org/served-7b"', b'"standard-chat"') + b"\n\n"


def test_frames_already_available_are_joined_into_one_write() -> None:
    usage, finished = make_usage()
    first, rest = content("一"), [content("二"), content("三", "stop")]
    pieces = asyncio.run(
        relay_pieces(upstream(*rest, USAGE_ONLY), first, usage)  # nothing here ever waits
    )
    # The first token alone, at once; what was buffered behind it in one write.
    assert pieces == [frame_of(first), frame_of(rest[0]) + frame_of(rest[1]), b"data: [DONE]\n\n"]
    assert finished == ["ok"]


async def relay_pieces(
    stream: AsyncIterator[tuple[DeploymentInfo, ChatChunk]], first: ChatChunk, usage: UsageMeter
) -> list[bytes]:
    return [piece async for piece in relay(stream, first, usage, include_usage=False)]


def test_coalescing_never_holds_back_the_first_token_or_any_frame() -> None:
    """Each piece leaves as soon as the upstream would make the relay wait, not later."""

    async def scenario() -> None:
        usage, finished = make_usage()
        gates = [asyncio.Event(), asyncio.Event()]
        a, b, c = content("A"), content("B"), content("C", "stop")

        async def gated() -> AsyncIterator[tuple[DeploymentInfo, ChatChunk]]:
            await gates[0].wait()  # the model is slow after its first token
            yield DEPLOYMENT, a
            yield DEPLOYMENT, b  # buffered behind A
            await gates[1].wait()
            yield DEPLOYMENT, c

        first = content("first")
        out = relay(gated(), first, usage, include_usage=False)
        # The first token leaves while the upstream is still waiting for gate 0.
        assert await asyncio.wait_for(out.__anext__(), 1) == frame_of(first)
        pending = asyncio.ensure_future(out.__anext__())
        await asyncio.sleep(0.01)
        assert not pending.done()  # nothing to send yet: no empty write either
        gates[0].set()
        # A and B were ready together: one piece, sent while gate 1 is still closed.
        assert await asyncio.wait_for(pending, 1) == frame_of(a) + frame_of(b)
        gates[1].set()
        assert await asyncio.wait_for(out.__anext__(), 1) == frame_of(c)
        assert await out.__anext__() == b"data: [DONE]\n\n"
        assert finished == ["ok"]

    asyncio.run(scenario())


@pytest.mark.parametrize("seed", range(5))
def test_coalesced_byte_stream_is_the_frame_by_frame_byte_stream(seed: int) -> None:
    import random

    rng = random.Random(seed)  # noqa: S311 - test data, not security
    chunks = [content(f"tok{i}") for i in range(64)] + [content("", "stop"), USAGE_ONLY]
    waits = [rng.choice([None, 0.0, 0.001]) for _ in chunks]

    async def mixed() -> AsyncIterator[tuple[DeploymentInfo, ChatChunk]]:
        for item, wait in zip(chunks, waits, strict=True):
            if wait is not None:
                await asyncio.sleep(wait)  # 0.0: a bare yield; 0.001: a real timer future
            yield DEPLOYMENT, item

    usage, finished = make_usage()
    first = content("first")
    pieces = asyncio.run(relay_pieces(mixed(), first, usage))
    expected = frame_of(first) + b"".join(frame_of(c) for c in chunks[:-1]) + b"data: [DONE]\n\n"
    assert b"".join(pieces) == expected  # same bytes, same order
    assert len(pieces) < len(chunks) + 2  # in fewer writes
    assert finished == ["ok"] and usage.completion_tokens == 2


def test_client_leaving_while_a_read_is_pending_closes_the_upstream() -> None:
    async def scenario() -> None:
        usage, finished = make_usage()
        closed: list[bool] = []
        never = asyncio.Event()

        async def slow() -> AsyncIterator[tuple[DeploymentInfo, ChatChunk]]:
            try:
                yield DEPLOYMENT, content("second")
                await never.wait()
                yield DEPLOYMENT, content("never")
            finally:
                await asyncio.sleep(0)  # cleanup that itself awaits (like response.aclose())
                closed.append(True)

        out = relay(slow(), content("first"), usage, include_usage=False)
        await out.__anext__()  # the first frame
        await out.__anext__()  # the second one; the next read is now suspended, pending
        await out.aclose()  # type: ignore[attr-defined]  # the client went away
        assert closed == [True]
        assert finished == ["interrupted"]

    asyncio.run(scenario())


def test_upstream_failure_after_ready_frames_sends_them_before_the_error() -> None:
    usage, finished = make_usage()
    frames = asyncio.run(
        collect(
            relay(
                upstream(content("ok"), UpstreamInterrupted("x")),
                content("first"),
                usage,
                include_usage=False,
            )
        )
    )
    assert frames[:2] == [frame_of(content("first")), frame_of(content("ok"))]
    assert json.loads(frames[2].removeprefix(b"data: "))["error"]["code"] == "upstream_interrupted"
    assert finished == ["interrupted"]


def test_a_long_ready_run_is_cut_into_bounded_writes() -> None:
    usage, _ = make_usage()
    rest = [content(f"t{i}") for i in range(40)]
    pieces = asyncio.run(relay_pieces(upstream(*rest), content("first"), usage))
    assert [p.count(b"data: ") for p in pieces] == [1, MAX_FRAMES_PER_WRITE, MAX_FRAMES_PER_WRITE, 8, 1]


def test_after_first_runs_once_after_the_first_frame_was_taken() -> None:
    """Background work (cache refreshes) starts only once the first token is out, and only once."""
    usage, _ = make_usage()
    calls: list[int] = []

    async def run() -> list[int]:
        frames = relay(
            upstream(content("b"), content("c", "stop")),
            content("a"),
            usage,
            include_usage=False,
            after_first=lambda: calls.append(len(seen)),
        )
        seen: list[bytes] = []
        async for piece in frames:
            seen.append(piece)
            if len(seen) == 1:
                assert calls == [], "ran before the first frame was taken"
        return calls

    assert asyncio.run(run()) == [1]
