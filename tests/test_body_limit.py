"""Request bodies over the limit are refused before Django spools them (gennai/body_limit.py).

Driven through the production ASGI application (``gennai.asgi``: the lean /v1
front, the body limit, then Django) with hand-made ASGI messages, so the test
sees exactly how much of the body was read and every message sent; and once
over a real uvicorn server with an HTTP client.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest
from django.test import override_settings

from gennai.asgi import application
from gennai.body_limit import MULTIPART_SLACK, body_limit_for
from tests.support.asgi import AsgiServer

CHUNK = 64 * 1024


def _scope(path: str, *, method: str = "POST", content_length: int | None = None) -> dict[str, Any]:
    headers = [(b"host", b"testserver"), (b"content-type", b"application/x-www-form-urlencoded")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def _drive(scope: dict[str, Any], *, chunks: int) -> tuple[list[dict[str, Any]], int]:
    """Run the application on a body of ``chunks`` × 64 KiB; the messages sent and chunks read."""
    sent: list[dict[str, Any]] = []
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read < chunks:
            read += 1
            return {"type": "http.request", "body": b"x" * CHUNK, "more_body": read < chunks}
        await asyncio.sleep(3600)  # the client waits for the answer
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    async def run() -> None:
        await asyncio.wait_for(application(scope, receive, send), timeout=30)

    asyncio.run(run())
    return sent, read


@override_settings(GENNAI_MAX_REQUEST_BYTES=4 * CHUNK)
def test_a_declared_length_over_the_limit_is_refused_before_anything_is_read() -> None:
    sent, read = _drive(_scope("/chat/", content_length=100 * CHUNK), chunks=100)
    assert read == 0
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 413
    text = sent[1]["body"].decode()
    assert "リクエストが大きすぎます" in text and "Request body too large" in text and str(4 * CHUNK) in text


@override_settings(GENNAI_MAX_REQUEST_BYTES=4 * CHUNK)
def test_a_chunked_body_is_cut_at_the_limit_and_django_answers_nothing() -> None:
    """No Content-Length: reading stops at the first chunk past the limit; one 413, nothing from Django."""
    sent, read = _drive(_scope("/chat/"), chunks=100)
    assert read == 5  # 4 chunks fit; the 5th goes over
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [413]
    assert len(sent) == 2


@override_settings(GENNAI_MAX_REQUEST_BYTES=4 * CHUNK)
def test_a_body_within_the_limit_reaches_django() -> None:
    """Django answers (here: CSRF refuses the anonymous POST) — the limit let the body through."""
    sent, read = _drive(_scope("/chat/", content_length=2 * CHUNK), chunks=2)
    assert read == 2
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] != 413


@override_settings(
    GENNAI_MAX_REQUEST_BYTES=CHUNK, GENNAI_DOCUMENT_MAX_FILES=3, GENNAI_DOCUMENT_MAX_BYTES=2 * CHUNK
)
def test_the_document_upload_view_gets_room_for_its_files_and_nothing_else_does() -> None:
    upload = "/documents/workspaces/7/upload"
    assert body_limit_for(upload) == 3 * 2 * CHUNK + MULTIPART_SLACK
    assert body_limit_for("/documents/workspaces/7/") == CHUNK
    assert body_limit_for("/documents/workspaces/7/upload/../../../x") == CHUNK
    assert body_limit_for("/no/such/page") == CHUNK
    sent, _read = _drive(_scope(upload, content_length=5 * CHUNK), chunks=5)
    assert sent[0]["status"] != 413  # within the upload limit: Django decides (CSRF/login)
    sent, _read = _drive(_scope("/chat/", content_length=5 * CHUNK), chunks=5)
    assert sent[0]["status"] == 413


@override_settings(GENNAI_MAX_REQUEST_BYTES=CHUNK)
def test_v1_keeps_its_own_limit() -> None:
    """/v1 is limited by the lean front (validation.MAX_BODY_BYTES), not by the general limit."""
    assert body_limit_for("/v1/chat/completions") == CHUNK  # what the wrapper would use, were it asked
    sent, _read = _drive(_scope("/v1/chat/completions", content_length=2 * CHUNK), chunks=2)
    assert sent[0]["status"] != 413  # a browser-session /v1 request within the /v1 limit goes on to Django


@pytest.mark.django_db(transaction=True)
@override_settings(GENNAI_MAX_REQUEST_BYTES=4 * CHUNK)
def test_over_a_real_server_a_large_post_gets_413_and_the_server_keeps_serving() -> None:
    server = AsgiServer().start()
    try:
        response = httpx.post(server.url + "/chat/", content=b"x" * (10 * CHUNK), timeout=10)
        assert response.status_code == 413
        assert "Request body too large" in response.text
        # A chunked upload of unknown length, over a raw socket: refused once past the limit.
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /chat/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            answer = b""
            try:
                for _ in range(64):
                    sock.sendall(f"{CHUNK:x}\r\n".encode() + b"y" * CHUNK + b"\r\n")
            except OSError:
                pass  # the server answered and closed while we were still sending
            sock.settimeout(10)
            while b"\r\n\r\n" not in answer:
                part = sock.recv(4096)
                if not part:
                    break
                answer += part
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    finally:
        server.stop()
