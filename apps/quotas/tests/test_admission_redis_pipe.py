"""The multiplexed Redis connection admission uses on the event loop (real Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


def test_replies_split_across_reads_and_packed_into_one_are_each_delivered() -> None:
    """A fake Redis answers two commands in one write, then an array one byte at a time."""
    replies = [b"$5\r\nfirst\r\n:2\r\n", b"*3\r\n$1\r\nx\r\n:-7\r\n$-1\r\n"]

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the first command arrived
        await asyncio.sleep(0.05)  # the second one too
        writer.write(replies[0])
        for byte in replies[1]:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.001)
        await reader.read()

    async def run() -> list[Any]:
        fake = await asyncio.start_server(server, "127.0.0.1", 0)
        port = fake.sockets[0].getsockname()[1]
        client = PipelinedRedis(f"redis://127.0.0.1:{port}/0", timeout=5)
        results = await asyncio.gather(
            client.execute("GET", "a"), client.execute("INCR", "b"), client.execute("X")
        )
        await client.close()
        fake.close()
        return list(results)

    assert asyncio.run(run()) == [b"first", 2, [b"x", -7, None]]


def test_a_server_that_stops_answering_times_out_every_waiting_caller() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def run() -> tuple[list[Any], float]:
        fake = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = fake.sockets[0].getsockname()[1]
        client = PipelinedRedis(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        started = time.monotonic()
        results = await asyncio.gather(client.execute("PING"), client.execute("PING"), return_exceptions=True)
        elapsed = time.monotonic() - started
        fake.close()
        return list(results), elapsed

    results, elapsed = asyncio.run(run())
    assert all(isinstance(r, RedisTimeoutError) for r in results), results
    assert 0.25 < elapsed < 2
