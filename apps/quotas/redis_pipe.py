"""A multiplexed Redis connection for the event loop: every concurrent command shares one socket.

Why not ``redis.asyncio``: admission sits in front of every request, and under
200 concurrent requests its pool either runs out of connections (the default
pool raises, a blocking pool makes requests queue for seconds on a busy loop)
or costs ≈150 µs of CPU per call. Redis answers the commands of one connection
in order, so concurrent callers can write their commands as they come and take
the replies in the same order: one socket, no pool, no waiting for a
connection, and a few µs of CPU per call (see docs/performance.md, "Admission").
The same idea as the usage journal's appender (:mod:`apps.quotas.journal`),
with a full reply parser because scripts answer with arrays.

Failure is all-or-nothing: a timeout or a broken socket closes the connection
and fails every waiting caller with :class:`redis.exceptions.ConnectionError`
or :class:`~redis.exceptions.TimeoutError` (a late reply could otherwise be
handed to the wrong caller); the next call reconnects. Error replies become
:class:`~redis.exceptions.ResponseError` for that caller only.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from redis.asyncio.connection import ConnectKwargs


def encode_command(*parts: Any) -> bytes:
    """One command in Redis's wire protocol (RESP); str and int parts are sent as text."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _ErrorReply:
    def __init__(self, message: str) -> None:
        self.message = message


async def read_reply(reader: asyncio.StreamReader) -> Any:
    """One RESP2 reply: str for simple strings, int, bytes or None for bulk strings, lists, errors."""
    line = await reader.readuntil(b"\r\n")
    kind, body = line[:1], line[1:-2]
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        return (await reader.readexactly(size + 2))[:-2]
    if kind == b"*":
        count = int(body)
        if count < 0:
            return None
        return [await read_reply(reader) for _ in range(count)]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        return _ErrorReply(body.decode(errors="replace"))
    raise RedisConnectionError(f"unexpected reply from Redis: {line[:40]!r}")


async def open_connection(options: ConnectKwargs) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to Redis from ``redis.asyncio.connection.parse_url`` options: TCP (TLS for
    ``rediss://``) or a Unix socket, then ``AUTH`` and ``SELECT`` when the URL asks for them.

    Shared by this pipe and the usage journal's appender (:mod:`apps.quotas.journal`).
    Raises :class:`redis.exceptions.ConnectionError` when Redis refuses the setup.
    """
    if "path" in options:
        reader, writer = await asyncio.open_unix_connection(options["path"])
    else:
        ssl = None
        if "SSL" in getattr(options.get("connection_class"), "__name__", ""):
            import ssl as ssl_module

            ssl = ssl_module.create_default_context()
        reader, writer = await asyncio.open_connection(options["host"], options["port"], ssl=ssl)
    setup: list[bytes] = []
    if options.get("password"):
        auth = [options["username"]] if options.get("username") else []
        setup.append(encode_command("AUTH", *auth, options["password"]))
    if options.get("db"):
        setup.append(encode_command("SELECT", options["db"]))
    if setup:
        writer.write(b"".join(setup))
        for _ in setup:
            reply = await read_reply(reader)
            if isinstance(reply, _ErrorReply):
                writer.close()
                raise RedisConnectionError(reply.message)
    return reader, writer


class PipelinedRedis:
    """Commands of one event loop over one connection, answered in order."""

    def __init__(self, url: str, *, timeout: float) -> None:
        from redis.asyncio.connection import parse_url

        self.options = parse_url(url)
        self.timeout = timeout
        self.writer: asyncio.StreamWriter | None = None
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.connecting: asyncio.Future[None] | None = None
        self.reading: asyncio.Task[None] | None = None

    async def _connect(self) -> None:
        reader, writer = await open_connection(self.options)
        self.writer = writer
        self.reading = asyncio.get_running_loop().create_task(self._read_replies(reader))

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                reply = await read_reply(reader)
                waiter = self.waiters.popleft()
                if waiter.done():  # its caller was cancelled (a client that went away)
                    continue
                if isinstance(reply, _ErrorReply):
                    waiter.set_exception(ResponseError(reply.message))
                else:
                    waiter.set_result(reply)
        except (OSError, RedisConnectionError, IndexError, asyncio.IncompleteReadError) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None
        if self.reading is not None and self.reading is not asyncio.current_task():
            self.reading.cancel()
        self.reading = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RedisConnectionError(f"Redis connection lost: {exc}"))

    async def execute(self, *parts: Any) -> Any:
        """Send one command and wait for its reply (at most ``timeout`` seconds, connecting included)."""
        try:
            async with asyncio.timeout(self.timeout):
                if self.writer is None:
                    if self.connecting is None:
                        self.connecting = asyncio.ensure_future(self._connect())
                    try:
                        await asyncio.shield(self.connecting)
                    finally:
                        if self.connecting is not None and self.connecting.done():
                            self.connecting = None
                assert self.writer is not None
                waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self.waiters.append(waiter)
                self.writer.write(encode_command(*parts))
                return await waiter
        except TimeoutError as exc:
            self._fail(exc)
            raise RedisTimeoutError("Redis did not answer in time") from exc
        except OSError as exc:
            self._fail(exc)
            raise RedisConnectionError(str(exc)) from exc

    async def close(self) -> None:
        self._fail(RedisConnectionError("closed"))


class PipelinedScript:
    """A Lua script run by ``EVALSHA`` (``EVAL`` once if this Redis has not seen it yet)."""

    def __init__(self, client: PipelinedRedis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, *, args: list[Any]) -> Any:
        try:
            return await self.client.execute("EVALSHA", self.sha, 0, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.client.execute("EVAL", self.source, 0, *args)
