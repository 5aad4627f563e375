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


def encode_args(parts: list[Any] | tuple[Any, ...]) -> bytes:
    """Bulk strings of a command in Redis's wire protocol (RESP), without the array header."""
    out = []
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def encode_command(*parts: Any) -> bytes:
    """One command in Redis's wire protocol (RESP); str and int parts are sent as text."""
    return b"*%d\r\n" % len(parts) + encode_args(parts)


class _ErrorReply:
    def __init__(self, message: str) -> None:
        self.message = message


_INCOMPLETE: Any = object()


def parse_reply(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 reply at ``buf[pos:]`` as :func:`read_reply` returns it, and the position after it;
    ``(_INCOMPLETE, pos)`` when the buffer does not hold all of it yet."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return _INCOMPLETE, pos
    kind = buf[pos]
    if kind == 58:  # ":" integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 36:  # "$" bulk string
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            return _INCOMPLETE, pos
        return buf[end + 2 : stop], stop + 2
    if kind == 42:  # "*" array
        count = int(buf[pos + 1 : end])
        if count < 0:
            return None, end + 2
        items = []
        at = end + 2
        for _ in range(count):
            item, at = parse_reply(buf, at)
            if item is _INCOMPLETE:
                return _INCOMPLETE, pos
            items.append(item)
        return items, at
    if kind == 43:  # "+" simple string
        return buf[pos + 1 : end].decode(), end + 2
    if kind == 45:  # "-" error
        return _ErrorReply(buf[pos + 1 : end].decode(errors="replace")), end + 2
    raise RedisConnectionError(f"unexpected reply from Redis: {buf[pos : pos + 40]!r}")


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


class _Replies(asyncio.Protocol):
    """Hands each reply to the oldest waiting caller as soon as its bytes arrive (no reader task)."""

    def __init__(self, owner: PipelinedRedis) -> None:
        self.owner = owner
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        pos, size = 0, len(buf)
        owner = self.owner
        try:
            while pos < size:
                reply, pos = parse_reply(buf, pos)
                if reply is _INCOMPLETE:
                    break
                owner._deliver(reply)
        except (RedisConnectionError, ValueError, IndexError) as exc:
            owner._fail(exc, self)
            return
        self.buffer = buf[pos:] if pos < size else b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._fail(exc or RedisConnectionError("closed by Redis"), self)


class PipelinedRedis:
    """Commands of one event loop over one connection, answered in order.

    Replies are parsed in the transport's callback (:class:`_Replies`) and the
    timeout is one timer for the oldest outstanding command, not one per call:
    both cost a request a few µs instead of tens (docs/performance.md, "Admission").
    """

    def __init__(self, url: str, *, timeout: float) -> None:
        from redis.asyncio.connection import parse_url

        self.options = parse_url(url)
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.protocol: _Replies | None = None
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.deadlines: deque[float] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.connecting: asyncio.Future[None] | None = None

    async def _connect(self) -> None:
        _reader, writer = await open_connection(self.options)
        transport = writer.transport
        protocol = _Replies(self)
        transport.set_protocol(protocol)
        # Held: a StreamWriter that is garbage-collected closes its transport.
        self.writer = writer
        self.transport, self.protocol = transport, protocol  # type: ignore[assignment]

    def _deliver(self, reply: Any) -> None:
        waiter = self.waiters.popleft()  # IndexError: a reply nobody asked for
        self.deadlines.popleft()
        if waiter.done():  # its caller was cancelled (a client that went away)
            return
        if isinstance(reply, _ErrorReply):
            waiter.set_exception(ResponseError(reply.message))
        else:
            waiter.set_result(reply)

    def _check_deadline(self) -> None:
        self.timer = None
        if not self.deadlines:
            return
        loop = asyncio.get_running_loop()
        if self.deadlines[0] <= loop.time():
            self._fail(RedisTimeoutError("Redis did not answer in time"), timed_out=True)
        else:
            self.timer = loop.call_at(self.deadlines[0], self._check_deadline)

    def _fail(self, exc: BaseException, protocol: _Replies | None = None, *, timed_out: bool = False) -> None:
        if protocol is not None and protocol is not self.protocol:
            return  # news from a connection already given up
        if self.transport is not None:
            self.transport.close()
        self.transport = self.protocol = self.writer = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiters, self.waiters, self.deadlines = self.waiters, deque(), deque()
        for waiter in waiters:
            if not waiter.done():
                if timed_out:
                    waiter.set_exception(RedisTimeoutError("Redis did not answer in time"))
                else:
                    waiter.set_exception(RedisConnectionError(f"Redis connection lost: {exc}"))

    async def _ensure_connected(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                if self.connecting is None:
                    self.connecting = asyncio.ensure_future(self._connect())
                try:
                    await asyncio.shield(self.connecting)
                finally:
                    if self.connecting is not None and self.connecting.done():
                        self.connecting = None
        except TimeoutError as exc:
            raise RedisTimeoutError("Redis did not answer in time") from exc
        except OSError as exc:
            raise RedisConnectionError(str(exc)) from exc

    async def send(self, data: bytes) -> Any:
        """Send one encoded command and wait for its reply (at most ``timeout`` seconds, connecting
        included); a timeout or a lost connection fails every waiting caller (see the module)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        if self.transport is None:
            await self._ensure_connected()
        transport = self.transport
        if transport is None:  # lost again while this caller waited for the connection
            raise RedisConnectionError("Redis connection lost")
        waiter: asyncio.Future[Any] = loop.create_future()
        self.waiters.append(waiter)
        self.deadlines.append(deadline)
        if self.timer is None:
            self.timer = loop.call_at(deadline, self._check_deadline)
        try:
            transport.write(data)
        except OSError as exc:
            self._fail(exc)
            raise RedisConnectionError(str(exc)) from exc
        return await waiter

    async def execute(self, *parts: Any) -> Any:
        """Send one command and wait for its reply (see :meth:`send`)."""
        return await self.send(encode_command(*parts))

    async def close(self) -> None:
        self._fail(RedisConnectionError("closed"))


class PipelinedScript:
    """A Lua script run by ``EVALSHA`` (``EVAL`` once if this Redis has not seen it yet)."""

    def __init__(self, client: PipelinedRedis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._evalsha = encode_args(["EVALSHA", self.sha, 0])

    async def __call__(
        self, *, args: list[Any], encoded: tuple[int, bytes] = (0, b""), after: list[Any] | None = None
    ) -> Any:
        """Run with ``args``, then ``encoded``: more arguments already in the wire format
        (``(count, bytes)`` from :func:`encode_args`, for parts that repeat from call to call),
        then ``after``."""
        count, tail = encoded
        body = encode_args(args) + tail
        if after:
            body += encode_args(after)
            count += len(after)
        try:
            return await self.client.send(b"*%d\r\n" % (3 + len(args) + count) + self._evalsha + body)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        head = encode_args(["EVAL", self.source, 0])
        return await self.client.send(b"*%d\r\n" % (3 + len(args) + count) + head + body)
