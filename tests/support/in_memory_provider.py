"""A provider with no network, for measuring and testing the relay without a server's CPU.

Registered with ``reset_providers_for_tests({"in_memory": InMemoryProvider})``;
every request answers ``CHUNKS`` content chunks (``tok0 `` … ``tok63 ``), a finish
chunk and a usage chunk, at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from apps.registry.providers.base import ChatChunk

CHUNKS = 64


class InMemoryProvider:
    """``CHUNKS`` token chunks, ``finish_reason=stop`` and usage, with no I/O."""

    kind = "in_memory"
    raw = [f'{{"choices":[{{"delta":{{"content":"tok{i} "}}}}]}}'.encode() for i in range(CHUNKS)]

    def __init__(self, target: Any) -> None:
        self.target = target

    async def chat(self, request: Any) -> AsyncIterator[ChatChunk]:
        for i, raw in enumerate(self.raw):
            yield ChatChunk(delta=f"tok{i} ", raw=raw)
        yield ChatChunk(finish_reason="stop")
        yield ChatChunk(usage={"prompt_tokens": 7, "completion_tokens": CHUNKS})

    async def aclose(self) -> None:
        """Nothing to close: no connection was opened."""


def expected_answer() -> str:
    """The text a complete relay of one answer saves."""
    return "".join(f"tok{i} " for i in range(CHUNKS))
