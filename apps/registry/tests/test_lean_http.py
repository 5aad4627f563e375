"""The lean client of the streamed chat call (apps/registry/providers/lean_http.py).

Each test runs a scripted HTTP server on loopback (asyncio, same loop) that
records connections and what it received, and answers with exactly the bytes
the test gives it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvloop

from apps.registry.egress import EgressPolicy, EgressRefused
from apps.registry.providers import lean_http
from apps.registry.providers.base import ChatRequest, ProviderTarget, UpstreamInterrupted, UpstreamUnavailable
from apps.registry.providers.lean_http import LeanPool, LeanResponse
from apps.registry.providers.openai_compatible import OpenAICompatibleProvider

LOOPBACK = EgressPolicy.parse(["127.0.0.0/8"])
REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}])


def sse(*payloads: bytes) -> bytes:
    return b"".join(b"data: " + p + b"\n\n" for p in payloads)


def chunk(text: str, finish: str | None = None) -> bytes:
    finish_json = "null" if finish is None else f'"{finish}"'
    return (
        '{"id":"c","object":"chat.completion.chunk","model":"m","choices":'
        f'[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":{finish_json}}}]}}'
    ).encode()


def chunked(*parts: bytes, end: bool = True) -> bytes:
    out = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts)
    return out + (b"0\r\n\r\n" if end else b"")


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
ANSWER = SSE_HEAD + chunked(sse(chunk("a"), chunk("b", "stop"), b"[DONE]"))

Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server whose per-connection behaviour is ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def answering(*answers: bytes, keep_open: bool = True) -> Handler:
    """Answer each request on a connection with the next of ``answers`` (the last one repeats)."""

    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        i = 0
        while True:
            await server.read_request(reader)
            writer.write(answers[min(i, len(answers) - 1)])
            await writer.drain()
            i += 1
            if not keep_open:
                return

    return handler


def provider(url: str, **kwargs: Any) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        ProviderTarget(deployment_id=1, name="t", base_url=url, served_model_name="m", **kwargs)
    )


def pool(url: str, max_connections: int = 4, read: float = 5.0) -> LeanPool:
    return LeanPool(
        url=httpx.URL(url + "/v1/chat/completions"),
        policy=LOOPBACK,
        timeout=httpx.Timeout(read, connect=5.0),
        max_connections=max_connections,
    )


async def deltas(p: OpenAICompatibleProvider) -> list[str]:
    return [c.delta async for c in p.chat(REQUEST) if c.delta]


@pytest.fixture(autouse=True)
def _allow_loopback(settings: Any) -> None:
    settings.GENNAI_UPSTREAM_ALLOWED_HOSTS = ["127.0.0.0/8"]


_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def _event_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test on both loops: uvicorn serves with uvloop, whose transports differ in type."""
    global _loop_factory
    _loop_factory = uvloop.new_event_loop if request.param == "uvloop" else None
    yield
    _loop_factory = None


def run(coro: Awaitable[Any]) -> Any:
    from apps.registry.providers import openai_compatible

    # Clients cached by earlier tests belong to their (closed) event loops: closing them here
    # would touch a dead loop, so they are dropped; this test's own are closed at its end.
    openai_compatible._clients.clear()

    async def main() -> Any:
        try:
            return await coro
        finally:
            from apps.registry.providers import openai_compatible

            for key in list(openai_compatible._clients):
                await openai_compatible._clients.pop(key).aclose()

    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        return runner.run(main())


def test_request_is_one_write_with_head_body_and_key() -> None:
    writes: list[bytes] = []

    async def go() -> list[str]:
        async with Server(answering(ANSWER)) as server:
            original = lean_http._Connection.send

            async def counted(self: lean_http._Connection, data: bytes) -> None:
                real = self.transport

                class Recorder:  # uvloop's transport attributes are read-only: wrap it instead
                    def write(self, data: Any) -> None:
                        writes.append(bytes(data))
                        real.write(data)  # type: ignore[union-attr]

                    def __getattr__(self, name: str) -> Any:
                        return getattr(real, name)

                self.transport = Recorder()  # type: ignore[assignment]
                try:
                    await original(self, data)
                finally:
                    self.transport = real

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(lean_http._Connection, "send", counted)
                result = await deltas(provider(server.url, api_key="sk-1"))
            request = server.requests[0]
            assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
            assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in request
            assert b"Authorization: Bearer sk-1\r\n" in request
            assert b'"stream":true' in request and b'"model":"m"' in request
            return result

    assert run(go()) == ["a", "b"]
    assert len(writes) == 1  # head and body together


def test_keep_alive_connection_is_reused() -> None:
    async def go() -> Server:
        async with Server(answering(ANSWER)) as server:
            p = provider(server.url)
            for _ in range(3):
                assert await deltas(p) == ["a", "b"]
            return server

    server = run(go())
    assert server.connections == 1 and len(server.requests) == 3


def test_expired_idle_connection_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean_http, "KEEPALIVE_EXPIRY_SECONDS", 0.0)

    async def go() -> Server:
        async with Server(answering(ANSWER)) as server:
            p = provider(server.url)
            await deltas(p)
            await deltas(p)
            return server

    assert run(go()).connections == 2


def test_server_closing_after_each_answer_costs_no_failure() -> None:
    close_after = ANSWER.replace(b"Transfer-Encoding", b"Connection: close\r\nTransfer-Encoding")

    async def go() -> Server:
        async with Server(answering(close_after, keep_open=False)) as server:
            p = provider(server.url)
            for _ in range(3):
                assert await deltas(p) == ["a", "b"]
            return server

    server = run(go())
    assert server.connections == 3


def test_lines_split_anywhere_and_every_line_break_kind() -> None:
    body = b"data: " + chunk("x") + b"\r\n\r\n: a comment\rdata: " + chunk("y", "stop") + b"\r\ndata: [DONE]"

    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(SSE_HEAD)
        for i in range(len(body)):  # one byte per chunk, each its own write
            writer.write(chunked(body[i : i + 1], end=False))
            await writer.drain()
            if i % 7 == 0:
                await asyncio.sleep(0)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def go() -> list[str]:
        async with Server(handler) as server:
            return await deltas(provider(server.url))

    assert run(go()) == ["x", "y"]


def test_content_length_and_close_delimited_bodies() -> None:
    body = sse(chunk("a"), chunk("b", "stop"), b"[DONE]")
    with_length = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    close_delimited = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body

    async def go() -> tuple[list[str], list[str]]:
        async with (
            Server(answering(with_length)) as a,
            Server(answering(close_delimited, keep_open=False)) as b,
        ):
            return await deltas(provider(a.url)), await deltas(provider(b.url))

    assert run(go()) == (["a", "b"], ["a", "b"])


def test_body_cut_mid_stream_is_interrupted() -> None:
    cut = SSE_HEAD + chunked(sse(chunk("a")), end=False)

    async def go() -> list[str]:
        async with Server(answering(cut, keep_open=False)) as server:
            got: list[str] = []
            with pytest.raises(UpstreamInterrupted):
                async for c in provider(server.url).chat(REQUEST):
                    got.append(c.delta)
            return got

    assert run(go()) == ["a"]


def test_a_key_that_would_split_the_request_is_refused_before_any_connection() -> None:
    async def go() -> Server:
        async with Server(answering(ANSWER)) as server:
            with pytest.raises(UpstreamUnavailable, match="secret reference refused"):
                await deltas(provider(server.url, api_key="k\r\nX-Injected: 1"))
            return server

    assert run(go()).connections == 0


def test_the_cap_holds_and_requests_queue_for_a_connection() -> None:
    async def go() -> Server:
        gate = asyncio.Event()

        async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await server.read_request(reader)
                writer.write(SSE_HEAD + chunked(sse(chunk("a")), end=False))
                await writer.drain()
                await gate.wait()
                writer.write(chunked(sse(chunk("b", "stop"), b"[DONE]")))
                await writer.drain()

        async with Server(handler) as server:
            p = provider(server.url, max_concurrency=1)  # 2 connections
            tasks = [asyncio.create_task(deltas(p)) for _ in range(5)]
            await asyncio.sleep(0.3)
            assert server.open == 2 and len(server.requests) == 2  # three wait for a connection
            gate.set()
            results = await asyncio.gather(*tasks)
            assert results == [["a", "b"]] * 5
            return server

    server = run(go())
    assert server.most_open == 2 and server.connections == 2 and len(server.requests) == 5


def test_reading_pauses_while_the_consumer_does_not_read() -> None:
    big = sse(*(chunk("x" * 1000) for _ in range(12000)))  # ≈12 MB of SSE
    sent = 0

    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await server.read_request(reader)
        writer.write(SSE_HEAD)
        for i in range(0, len(big), 16384):
            writer.write(chunked(big[i : i + 16384], end=False))
            await writer.drain()
            sent += 16384

    async def go() -> tuple[int, int]:
        async with Server(handler) as server:
            p = pool(server.url)
            response = await p.stream(p.request_bytes(b"{}", authorization=None))
            await asyncio.sleep(0.5)  # nobody reads
            buffered = response.buffered
            response.close()
            await p.aclose()
            return buffered, sent

    buffered, sent_bytes = run(go())
    assert buffered <= lean_http.READ_HIGH_WATER + 256 * 1024  # at most one more read past the mark
    assert sent_bytes < len(big)  # the server is held back by TCP, not buffered by us


def test_read_timeout_while_waiting_for_bytes() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(SSE_HEAD)
        await writer.drain()
        await asyncio.sleep(5)

    async def go() -> None:
        async with Server(handler) as server:
            p = pool(server.url, read=0.2)
            response = await p.stream(p.request_bytes(b"{}", authorization=None))
            with pytest.raises(TimeoutError):
                while response.next_line() is None:
                    await response.wait()
            response.close()
            await p.aclose()

    run(go())


def test_unsolicited_bytes_on_an_idle_connection_retire_it() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ANSWER + b"HTTP/1.1 200 OK\r\n")  # garbage after the answer
        await writer.drain()
        await server.read_request(reader)  # never reached over this connection
        writer.write(ANSWER)

    async def go() -> Server:
        async with Server(handler) as server:
            p = provider(server.url)
            await deltas(p)
            await asyncio.sleep(0.05)
            await deltas(p)
            return server

    assert run(go()).connections == 2


def test_pool_refuses_a_url_outside_the_policy_before_any_connection() -> None:
    with pytest.raises(EgressRefused):
        pool("http://169.254.169.254")


def test_error_body_is_read_up_to_the_limit() -> None:
    body = b"e" * (lean_http.ERROR_BODY_LIMIT * 2)
    answer = b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    async def go() -> int:
        async with Server(answering(answer)) as server:
            p = pool(server.url)
            response: LeanResponse = await p.stream(p.request_bytes(b"{}", authorization=None))
            assert response.status == 500
            size = len(await response.read())
            response.close()
            await p.aclose()
            return size

    assert run(go()) == lean_http.ERROR_BODY_LIMIT


def test_cancelled_requests_give_their_slots_back() -> None:
    """Clients that leave while connecting or queueing never leak (or double-free) a slot."""

    async def go() -> tuple[int, int, list[str]]:
        async with Server(answering(ANSWER)) as server:
            p = pool(server.url, max_connections=2)
            for delay in (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01):
                tasks = [
                    asyncio.create_task(p.stream(p.request_bytes(b"{}", authorization=None)))
                    for _ in range(5)
                ]
                await asyncio.sleep(delay)
                for task in tasks:
                    task.cancel()
                for result in await asyncio.gather(*tasks, return_exceptions=True):
                    if isinstance(result, LeanResponse):
                        result.close()
            await asyncio.sleep(0.05)  # connection_lost callbacks
            live = sum(1 for c in p.idle if not c.lost)
            response = await p.stream(p.request_bytes(b"{}", authorization=None))
            lines = []
            while not response.finished:
                line = response.next_line()
                if line is None:
                    await response.wait()
                elif line:
                    lines.append(line.decode())
            response.close()
            await asyncio.sleep(0.05)
            opened = p.open
            assert opened == sum(1 for c in p.idle if not c.lost)  # every slot is a live connection
            await p.aclose()
            return live, opened, lines

    live, opened, lines = run(go())
    assert 0 <= live <= 2 and 1 <= opened <= 2
    assert lines[-1] == "data: [DONE]"
