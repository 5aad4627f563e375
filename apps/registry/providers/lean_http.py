"""A lean HTTP/1.1 client for the one call on the first-token path: the streamed chat POST.

Why: through httpx the upstream POST of a ``/v1`` stream went through httpx's
client, auth and redirect layers, httpcore's pool and connection, h11 (request
head and body as two socket writes, each behind anyio's checkpoint, i.e. one
more event-loop pass), then back through h11, httpcore, httpx's ``Response``
and its line decoder stack — ≈1 ms of the gateway's added time to first token
on the reference machine (docs/performance.md, "/v1 overhead"). Here the
request is one pre-encoded ``bytes`` written in one ``transport.write``, the
response is parsed by ``httptools`` (llhttp, the parser uvicorn serves with),
and SSE lines are split from the body bytes directly.

What is kept, and how:

* **Egress guard, connect time.** Every new connection is opened through
  :class:`apps.registry.egress.GuardedNetworkBackend` itself (resolve with
  ``egress.resolve``, every address checked by the policy, connect to a
  checked address); only its innermost step — the socket — is ours
  (:class:`_Connector`). So the DNS-rebinding guard is the same code as for
  httpx's clients, not a copy. The URL-time check runs when the pool is built.
* **TLS**: the platform's one verifying context (``egress._ssl_context``, no
  environment), SNI and certificate checked against the URL's host name.
* **Connection reuse**: keep-alive connections are reused most-recent-first and
  dropped after :data:`KEEPALIVE_EXPIRY_SECONDS` idle, or when the server
  closed them (seen as EOF) or sent anything while idle. A response that was
  not read to its end closes its connection (it cannot be reused).
* **Cap**: at most ``max_connections`` open at once; further requests queue
  (FIFO) for a released connection or a freed slot, bounded by the pool timeout.
* **Timeouts**: connect (resolution, TCP and TLS), pool wait, and each wait for
  response bytes (the read timeout) — as httpx's ``Timeout(read, connect=…)``.
* **Backpressure**: reading from the socket pauses while more than
  :data:`READ_HIGH_WATER` bytes are buffered unread, so a slow client slows
  the upstream instead of filling memory.
* **No redirects** (the caller refuses 3xx), no proxies, no cookies, no
  compression (``Accept-Encoding: identity``; a compressed answer is refused).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Iterable
from typing import Any, cast

import httpcore
import httptools
import httpx

from apps.registry.egress import EgressPolicy, GuardedNetworkBackend, _ssl_context

#: Below the 5 s idle timeout of uvicorn/vLLM, so we normally drop a connection first.
KEEPALIVE_EXPIRY_SECONDS = 4.0
#: Unread response bytes above which the socket is no longer read (backpressure).
READ_HIGH_WATER = 256 * 1024
#: Request bytes waiting in the socket's buffer above which writing waits for it to drain.
WRITE_HIGH_WATER = 64 * 1024
#: Most bytes of an error body kept (it only goes to the log, truncated further).
ERROR_BODY_LIMIT = 64 * 1024


class LeanHTTPError(Exception):
    """The connection failed (our text only: never the upstream's bytes)."""


class NoAnswer(LeanHTTPError):
    """The connection ended before any byte of an answer: the request was not processed, retry is safe."""


class ConnectFailed(LeanHTTPError):
    """No connection could be opened (refused, unreachable, TLS failure, connect timeout)."""


class BodyIncomplete(LeanHTTPError):
    """The connection ended in the middle of a response body."""


def _header_value(value: str) -> str:
    """``value`` if it is safe in a request header (visible ASCII, spaces, tabs), else ValueError.

    Security: a key read from a secret file with a line break in it must not
    become a second header (request splitting); httpx refused such values too.
    """
    if not all(" " <= ch <= "~" or ch == "\t" for ch in value):
        raise ValueError("header value with control or non-ASCII characters")
    return value


class _Connector(httpcore.AsyncNetworkBackend):
    """The innermost step of :class:`GuardedNetworkBackend`: a socket to an address it checked.

    The guard resolves the name and checks every address, then calls this with
    one checked address at a time; we open an asyncio connection there (TLS with
    the original host name for SNI and certificate checks) and hand back the
    protocol object, which the guard returns unchanged.
    """

    def __init__(self, pool: LeanPool) -> None:
        self.pool = pool

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        pool = self.pool
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _transport, conn = await loop.create_connection(
                    lambda: _Connection(pool),
                    host,
                    port,
                    ssl=_ssl_context() if pool.tls else None,
                    server_hostname=pool.host if pool.tls else None,
                )
        except (OSError, TimeoutError) as exc:
            # GuardedNetworkBackend tries the next checked address on ConnectError.
            raise httpcore.ConnectError(f"{type(exc).__name__}") from exc
        return conn

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> Any:  # pragma: no cover - the guard refuses unix sockets before calling us
        raise ConnectFailed("unix sockets are not upstreams")

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - part of the interface only
        await asyncio.sleep(seconds)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: an asyncio protocol feeding ``httptools``' response parser."""

    def __init__(self, pool: LeanPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.usable = True  # may carry another request once this one is complete
        self.lost = False  # connection_lost was called
        self.owns_slot = False  # counted in the pool's ``open`` (set when the pool took it)
        self.idle_since = 0.0
        self.response: LeanResponse | None = None
        self._drain: asyncio.Future[None] | None = None
        self._reading_paused = False

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response.complete:
            # Bytes nobody asked for (a server talking while idle): this connection's
            # framing can no longer be trusted.
            self.usable = False
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            response.fail(
                BodyIncomplete("malformed HTTP response") if response.head else NoAnswer("bad answer")
            )
            self.usable = False
            self.abort()

    def eof_received(self) -> bool:
        self._ended()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._ended()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(NoAnswer("connection lost while writing"))
        if self.owns_slot:
            self.owns_slot = False
            self.pool._discard(self)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # --- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue and friends: the real answer follows
            response.headers.clear()
            response.informational = True
            return
        response.status = status
        response.head = True
        response.wake()

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response.chunks.append(body)
        response.buffered += len(body)
        if response.buffered > READ_HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        response.wake()

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        if response.informational:
            response.informational = False
            return
        response.complete = True
        if not self.parser.should_keep_alive():
            self.usable = False
        response.wake()

    # --- ours ------------------------------------------------------------------------------

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _ended(self) -> None:
        """The server closed (or the connection broke): end or fail the response in progress."""
        self.usable = False
        response = self.response
        if response is None or response.complete or response.error is not None:
            return
        if not response.head:
            response.fail(NoAnswer("connection closed before an answer"))
        elif response.close_delimited():
            response.complete = True  # a body without length or chunking ends with the connection
            response.wake()
        else:
            response.fail(BodyIncomplete("connection closed in the middle of the body"))

    def abort(self) -> None:
        self.usable = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    async def send(self, data: bytes) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            raise NoAnswer("connection closed before the request was sent")
        self.transport.write(data)  # head and body in one write
        if self._drain is not None and not self._drain.done():
            await self._drain


class LeanResponse:
    """The answer to one request, read as it arrives (head first, then the body)."""

    __slots__ = (
        "buffered",
        "chunks",
        "complete",
        "connection",
        "error",
        "head",
        "headers",
        "informational",
        "lines",
        "partial",
        "read_timeout",
        "status",
        "waiter",
    )

    def __init__(self, conn: _Connection, read_timeout: float | None) -> None:
        self.connection = conn
        self.read_timeout = read_timeout
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = False
        self.informational = False
        self.complete = False
        self.error: LeanHTTPError | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.lines: collections.deque[bytes] = collections.deque()
        self.partial = b""
        self.waiter: asyncio.Future[None] | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def is_redirect(self) -> bool:
        """As httpx: a redirect status with a ``Location`` header."""
        return self.status in (301, 302, 303, 307, 308) and self.header(b"location") is not None

    def close_delimited(self) -> bool:
        """Whether the body has neither a length nor chunking (it ends when the connection does)."""
        return (
            self.header(b"content-length") is None
            and self.header(b"transfer-encoding") is None
            and self.status not in (204, 304)
        )

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: LeanHTTPError) -> None:
        self.error = error
        self.wake()

    async def wait(self) -> None:
        """Until something new arrived (head, body bytes, the end, an error), or the read timeout."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = (
            loop.call_later(self.read_timeout, _time_out, waiter) if self.read_timeout is not None else None
        )
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        if self.error is not None:
            raise self.error

    async def read_head(self) -> None:
        while not self.head:
            await self.wait()

    def next_line(self) -> bytes | None:
        """The next body line (without its line break) if one is buffered, else ``None``.

        Lines end with ``\\n``, ``\\r\\n`` or ``\\r`` (as SSE and httpx's line decoder
        have it); the text after the last line break is a line once the body is complete.
        """
        lines = self.lines
        if lines:
            return lines.popleft()
        if self.chunks:
            data = self.partial + (self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks))
            self.chunks.clear()
            self.buffered = 0
            self.connection.resume_reading()
            if b"\r" in data:
                # A trailing "\r" may be the first half of "\r\n": keep it for the next bytes.
                tail = b"\r" if data.endswith(b"\r") and not self.complete else b""
                if tail:
                    data = data[:-1]
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            else:
                tail = b""
            parts = data.split(b"\n")
            self.partial = parts.pop() + tail
            if parts:
                lines.extend(parts)
                return lines.popleft()
        if self.complete and self.partial:
            line, self.partial = self.partial, b""
            return line.rstrip(b"\r")
        return None

    @property
    def finished(self) -> bool:
        """The body was read to its end (every line taken)."""
        return self.complete and not self.lines and not self.chunks and not self.partial

    async def read(self, limit: int = ERROR_BODY_LIMIT) -> bytes:
        """The rest of the body, at most ``limit`` bytes (more is dropped with the connection)."""
        parts: list[bytes] = []
        size = 0
        while True:
            if self.chunks:
                for chunk in self.chunks:
                    parts.append(chunk)
                    size += len(chunk)
                self.chunks.clear()
                self.buffered = 0
                self.connection.resume_reading()
            if self.complete or size >= limit:
                return b"".join(parts)[:limit]
            await self.wait()

    def close(self) -> None:
        """Done with this response: its connection goes back to the pool, or is closed if unfinished."""
        conn = self.connection
        if conn.response is not self:
            return
        conn.response = None
        if self.complete and conn.usable:
            conn.pool._release(conn)
        else:
            conn.abort()


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class LeanPool:
    """Keep-alive connections to one upstream (one event loop), at most ``max_connections`` open."""

    def __init__(
        self,
        *,
        url: httpx.URL,
        policy: EgressPolicy,
        timeout: httpx.Timeout,
        max_connections: int,
    ) -> None:
        policy.check_url(str(url))  # refused at once, before any connection
        self.policy = policy
        self.tls = url.scheme == "https"
        self.host = url.raw_host.decode("ascii")  # IDNA-encoded: what DNS, SNI and the certificate see
        self.port = url.port or (443 if self.tls else 80)
        self.connect_timeout = timeout.connect
        self.read_timeout = timeout.read
        self.pool_timeout = timeout.pool
        self.max_connections = max(max_connections, 1)
        self.open = 0  # connections open or being opened (slots taken)
        self.idle: collections.deque[_Connection] = collections.deque()
        self.waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self.closed = False
        # Everything of the request head that does not change per request.
        target = url.raw_path.decode("ascii")
        self.head_prefix = (
            f"POST {target} HTTP/1.1\r\n"
            f"Host: {url.netloc.decode('ascii')}\r\n"
            "Accept: */*\r\n"
            "Accept-Encoding: identity\r\n"
            "Connection: keep-alive\r\n"
            "User-Agent: gennai\r\n"
            "Content-Type: application/json\r\n"
        ).encode("ascii")

    def request_bytes(self, body: bytes, *, authorization: str | None) -> bytes:
        """The whole request (head and body) as one ``bytes``; raises ValueError for an unsafe key."""
        auth = (
            b""
            if authorization is None
            else b"Authorization: " + _header_value(authorization).encode() + b"\r\n"
        )
        return b"".join(
            (self.head_prefix, auth, b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        )

    # --- the pool ---------------------------------------------------------------------------

    async def _acquire(self) -> _Connection:
        loop = asyncio.get_running_loop()
        now = loop.time()
        idle = self.idle
        while idle and now - idle[0].idle_since >= KEEPALIVE_EXPIRY_SECONDS:
            idle.popleft().abort()  # expired: the server may drop it any moment
        while idle:
            conn = idle.pop()  # the most recently used: the warmest
            if conn.usable and conn.transport is not None and not conn.transport.is_closing():
                return conn
            conn.abort()
        if self.open < self.max_connections:
            self.open += 1
            return await self._connect()
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(self.pool_timeout):
                handed = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                late = waiter.result()  # handed over just as we gave up: pass it on
                if late is None:
                    self._slot_freed()
                else:
                    self._release(late)
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise
        if handed is None:  # a slot was freed for us (``open`` already counts it)
            return await self._connect()
        return handed

    async def _connect(self) -> _Connection:
        """A new connection through the egress guard; the caller holds a slot, freed on failure."""
        try:
            conn = await GuardedNetworkBackend(self.policy, inner=_Connector(self)).connect_tcp(
                self.host, self.port, timeout=self.connect_timeout
            )
        except httpcore.ConnectError as exc:
            self._slot_freed()
            raise ConnectFailed(str(exc) or "connect failed") from None
        except BaseException:  # EgressRefused, cancellation: the slot is free again
            self._slot_freed()
            raise
        assert isinstance(conn, _Connection)
        if conn.lost or self.closed:  # closed before we got to it: it never held the slot
            conn.abort()
            self._slot_freed()
            raise NoAnswer("connection closed as soon as it was opened")
        # From here on the connection holds the slot; ``connection_lost`` frees it. (A
        # connection asyncio opened but closed itself because we were cancelled never
        # holds one: the except branches above free the slot exactly once.)
        conn.owns_slot = True
        return conn

    def _slot_freed(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter
                return
        self.open -= 1

    def _release(self, conn: _Connection) -> None:
        """A connection whose response was read to its end: to a waiter, or idle."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if self.closed:
            conn.abort()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self.idle.append(conn)

    def _discard(self, conn: _Connection) -> None:
        """A connection that held a slot is gone (called once, from ``connection_lost``)."""
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        self._slot_freed()

    # --- requests ---------------------------------------------------------------------------

    async def _send_once(self, data: bytes) -> LeanResponse:
        conn = await self._acquire()
        response = LeanResponse(conn, self.read_timeout)
        conn.response = response
        try:
            await conn.send(data)
            await response.read_head()
        except BaseException:
            response.close()
            raise
        return response

    async def stream(self, data: bytes) -> LeanResponse:
        """Send ``data`` (a whole request) and return the response once its head arrived.

        A connection that ends before any byte of an answer (a keep-alive connection
        the server closed as we reused it, or a reset while it was busy accepting)
        cannot have processed the request: it is retried once, on another connection.
        The caller must :meth:`LeanResponse.close` the response.
        """
        try:
            return await self._send_once(data)
        except NoAnswer:
            return await self._send_once(data)

    async def aclose(self) -> None:
        self.closed = True
        while self.idle:
            self.idle.pop().abort()
