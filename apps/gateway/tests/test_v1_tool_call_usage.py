"""Output returned as tool-call arguments is charged when the upstream reports no usage.

llama.cpp ignores ``stream_options.include_usage``; the provider then counts the
chunks that carried output. Tool-call argument chunks are output: before, only
text and reasoning chunks were counted, so an answer streamed as a tool call was
recorded (and settled) as 0 completion tokens.
"""

from __future__ import annotations

from typing import Any

import openai

from apps.registry.providers.openai_compatible import _parse_chunk

from .conftest import AsgiServer, World
from .test_v1_sdk import usage_rows


def test_a_tool_call_chunk_counts_as_output() -> None:
    chunk = _parse_chunk(
        b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"q\\""}}]}}]}'
    )
    assert chunk.delta == "" and chunk.tool_call_delta and chunk.produced
    assert not _parse_chunk(b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}').produced


def test_v1_streamed_tool_call_without_upstream_usage_is_charged(
    asgi_server: AsgiServer, world: World, make_key: Any
) -> None:
    world.primary.tool_calls, world.primary.usage = True, False
    try:
        _key, plaintext = make_key()
        sdk = openai.OpenAI(base_url=asgi_server.url + "/v1", api_key=plaintext, max_retries=0)
        chunks = list(
            sdk.chat.completions.create(
                model="standard-chat", messages=[{"role": "user", "content": "調べて"}], stream=True
            )
        )
    finally:
        world.primary.tool_calls, world.primary.usage = False, True
    arguments = "".join(
        call.function.arguments or ""
        for c in chunks
        if c.choices
        for call in (c.choices[0].delta.tool_calls or [])
        if call.function is not None
    )
    assert arguments == "tok0 tok1 tok2 tok3 tok4 "  # relayed to the client as tool-call deltas
    [row] = usage_rows(world.ministry_a)
    assert row.completion_tokens == 5 and row.prompt_tokens_estimated  # counted by the platform
