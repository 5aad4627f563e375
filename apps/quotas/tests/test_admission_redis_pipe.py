"""The multiplexed Redis connection admission uses on the event loop (real Redis)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from apps.quotas.redis_pipe import PipelinedRedis, PipelinedScript


def test_concurrent_callers_each_get_their_own_reply(settings: Any) -> None:
    async def run() -> list[Any]:
        client = PipelinedRedis(settings.REDIS_URL, timeout=5)
        replies = await asyncio.gather(*(client.execute("ECHO", f"caller-{i}") for i in range(500)))
        await client.close()
        return replies

    assert asyncio.run(run()) == [f"caller-{i}".encode() for i in range(500)]


def test_an_error_reply_fails_only_its_caller(settings: Any) -> None:
    async def run() -> tuple[Any, Any, Any]:
        client = PipelinedRedis(settings.REDIS_URL, timeout=5)
        results = await asyncio.gather(
            client.execute("ECHO", "before"),
            client.execute("NO-SUCH-COMMAND"),
            client.execute("ECHO", "after"),
            return_exceptions=True,
        )
        await client.close()
        return results[0], results[1], results[2]

    before, error, after = asyncio.run(run())
    assert (before, after) == (b"before", b"after")
    assert isinstance(error, ResponseError)


def test_scripts_load_themselves_then_run_by_sha(settings: Any) -> None:
    source = f"-- {uuid.uuid4().hex}\nreturn {{ARGV[1], tonumber(ARGV[2]) + 1, false}}"

    async def run() -> list[Any]:
        client = PipelinedRedis(settings.REDIS_URL, timeout=5)
        script = PipelinedScript(client, source)
        first = await script(args=["x", 41])
        second = await script(args=["y", 1])
        await client.close()
        return [first, second, script.sha]

    first, second, sha = asyncio.run(run())
    assert first == [b"x", 42, None] and second == [b"y", 2, None]
    assert redis.Redis.from_url(settings.REDIS_URL).script_exists(sha) == [True]


def test_a_dead_server_fails_fast_and_a_killed_connection_reconnects(settings: Any) -> None:
    async def dead() -> None:
        await PipelinedRedis("redis://127.0.0.1:1/0", timeout=1).execute("PING")

    with pytest.raises(RedisConnectionError):
        asyncio.run(dead())

    async def killed() -> tuple[int, int, Any]:
        client = PipelinedRedis(settings.REDIS_URL, timeout=5)
        first_id = await client.execute("CLIENT", "ID")
        redis.Redis.from_url(settings.REDIS_URL).client_kill_filter(_id=first_id)
        await asyncio.sleep(0.1)  # the reader sees the closed socket and fails the connection
        second_id = await client.execute("CLIENT", "ID")  # a fresh connection
        reply = await client.execute("PING")
        await client.close()
        return first_id, second_id, reply

    first_id, second_id, reply = asyncio.run(killed())
    assert second_id != first_id and reply == "PONG"
