"""The lean /v1 front (gennai.asgi) over a real server: who serves what, body limits, the gates,
upstream errors, and prompt counting when the upstream reports none."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from apps.gateway import routing, validation
from apps.quotas.journal import usage_journal_drain
from apps.quotas.models import UsageRecord
from apps.quotas.tokens import count_prompt_tokens
from apps.tenancy.scope import ministry_scope

from .conftest import AsgiServer, World

LEVEL = "X-Gennai-Confidentiality"


def usage_rows(ministry: Any) -> list[UsageRecord]:
    usage_journal_drain()
    with ministry_scope(ministry_id=ministry.pk):
        return list(UsageRecord.objects.order_by("id"))


def chat_body(model: str = "standard-chat", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "こんにちは"}], **extra}


def test_api_keys_are_served_in_front_of_django_and_sessions_by_django(
    asgi_server: AsgiServer, world: World, make_key: Any
) -> None:
    _key, plaintext = make_key()
    lean = httpx.get(asgi_server.url + "/v1/models", headers={"Authorization": f"Bearer {plaintext}"})
    assert lean.status_code == 200 and lean.headers["x-content-type-options"] == "nosniff"
    # Django's middleware (clickjacking, CSP) never ran for the key...
    assert "x-frame-options" not in lean.headers and "content-security-policy" not in lean.headers
    # ...but does for a request without one (a browser session would be resolved there).
    django = httpx.get(asgi_server.url + "/v1/models")
    assert django.status_code == 401 and "x-frame-options" in django.headers
    assert django.json()["error"]["code"] == "invalid_api_key"


def _chunked_upload(url: str, headers: dict[str, str], total: int) -> tuple[int, bytes]:
    """POST ``total`` bytes chunked, *without* the terminating chunk; return the answer.

    The server can only answer if it stops reading at the limit: it never sees
    the end of this body.
    """
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
        head += "Content-Type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(head.encode() + b"\r\n")
        piece = b"x" * 65536
        sent = 0
        try:
            while sent < total:
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: fine
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def test_body_limit_holds_for_chunked_and_declared_bodies(
    asgi_server: AsgiServer, world: World, make_key: Any
) -> None:
    _key, plaintext = make_key()
    limit = validation.MAX_BODY_BYTES
    for headers in ({"Authorization": f"Bearer {plaintext}"}, {}):  # lean front, and Django's path
        status, body = _chunked_upload(asgi_server.url, headers, limit + 256 * 1024)
        assert status == 413, body
        assert b"request_too_large" in body
    declared = httpx.post(
        asgi_server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {plaintext}", "Content-Type": "application/json"},
        content=b"{" + b" " * limit + b"}",
    )
    assert declared.status_code == 413
    assert usage_rows(world.ministry_a) == []
    assert world.primary.requests == 0


@pytest.mark.parametrize("value", ["0", "4", "high", "", "2x", "1.0"])
def test_invalid_level_header_is_400_on_chat_and_embeddings(
    asgi_server: AsgiServer, world: World, make_key: Any, value: str
) -> None:
    _key, plaintext = make_key(max_level=3)
    headers = {"Authorization": f"Bearer {plaintext}", LEVEL: value}
    for path, body in (
        ("/v1/chat/completions", chat_body()),
        ("/v1/embeddings", {"model": "embed", "input": "テスト"}),
    ):
        response = httpx.post(asgi_server.url + path, headers=headers, json=body)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_confidentiality"
    assert world.primary.requests == 0


def test_embeddings_pass_the_classification_gate(
    asgi_server: AsgiServer, world: World, make_key: Any
) -> None:
    _key, plaintext = make_key(max_level=3)
    url = asgi_server.url + "/v1/embeddings"
    body = {"model": "embed", "input": ["極秘の文書"]}
    refused = httpx.post(url, headers={"Authorization": f"Bearer {plaintext}", LEVEL: "3"}, json=body)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "classification"
    assert world.primary.requests == 0, "level-3 text reached a deployment cleared for 2"
    ok = httpx.post(url, headers={"Authorization": f"Bearer {plaintext}", LEVEL: "2"}, json=body)
    assert ok.status_code == 200 and len(ok.json()["data"]) == 1
    refused_row, ok_row = usage_rows(world.ministry_a)
    assert (refused_row.endpoint, refused_row.status, refused_row.level) == ("embedding", "refused", 3)
    assert (ok_row.endpoint, ok_row.status, ok_row.prompt_tokens) == ("embedding", "ok", 1)


def test_lowered_clearance_refuses_new_requests_within_the_bound(
    asgi_server: AsgiServer, world: World, make_key: Any
) -> None:
    """Clearance lowered after a request was served: the next ones at that level are refused
    within the routing bound (the snapshot's check interval plus the route cache's 0.25 s)."""
    from apps.registry.services import deployment_save
    from apps.tenancy import versions

    _key, plaintext = make_key()
    headers = {"Authorization": f"Bearer {plaintext}", LEVEL: "2"}
    url = asgi_server.url + "/v1/chat/completions"
    assert httpx.post(url, headers=headers, json=chat_body()).status_code == 200
    deployment_save(actor=None, deployment=world.deployments["primary"], clearance=1)
    lowered = time.monotonic()
    bound = versions.check_seconds() + routing.cache_seconds() + 0.5
    while True:
        response = httpx.post(url, headers=headers, json=chat_body())
        if response.status_code == 403:
            break
        assert response.status_code == 200
        assert time.monotonic() - lowered < bound, "level-2 requests still routed to a level-1 deployment"
        time.sleep(0.05)
    assert response.json()["error"]["code"] == "classification"
    served_after = world.primary.requests
    assert httpx.post(url, headers=headers, json=chat_body()).status_code == 403
    assert world.primary.requests == served_after


def test_upstream_error_bodies_are_not_reflected(
    asgi_server: AsgiServer, world: World, make_key: Any
) -> None:
    _key, plaintext = make_key()
    world.failing.status = 400  # a 4xx: rejected, not failed over; its body names internals
    response = httpx.post(
        asgi_server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {plaintext}"},
        json=chat_body("failover-chat"),
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "upstream_rejected" and "HTTP 400" in error["message"]
    for leak in ("injected", "served-failing", "dep-failing", "127.0.0.1"):
        assert leak not in response.text
    [row] = usage_rows(world.ministry_a)
    assert (row.status, row.detail) == ("error", "upstream_rejected")


# --- A llama.cpp-like upstream that reports no usage ------------------------------------


class _NoUsageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for delta, finish in (({"content": "は"}, None), ({"content": "い"}, None), ({}, "stop")):
            payload = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "llama"}
            payload["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
            data = b"data: " + json.dumps(payload).encode() + b"\n\n"
            self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
        self.wfile.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")


@pytest.fixture
def no_usage_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoUsageHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_tokens_are_counted_when_the_upstream_reports_none(
    asgi_server: AsgiServer, world: World, make_key: Any, no_usage_upstream: str, stream: bool
) -> None:
    from tests.support.registry import Upstream, register_alias

    register_alias(
        upstreams=[Upstream(no_usage_upstream, served_model_name="llama")],
        ministries=[world.ministry_a],
        name="llama-chat",
    )
    _key, plaintext = make_key()
    messages = [
        {"role": "system", "content": "あなたは行政文書の要約を手伝うアシスタントです。"},
        {"role": "user", "content": "令和8年度の予算要求の要点を三行でまとめてください。"},
    ]
    response = httpx.post(
        asgi_server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {plaintext}"},
        json={"model": "llama-chat", "messages": messages, "stream": stream},
    )
    assert response.status_code == 200
    expected, estimated = count_prompt_tokens(messages=messages, model_name=None)
    assert estimated and expected > 40
    if not stream:
        assert response.json()["usage"]["prompt_tokens"] == expected
    [row] = usage_rows(world.ministry_a)
    assert (row.prompt_tokens, row.prompt_tokens_estimated, row.completion_tokens) == (expected, True, 2)


def test_lifespan_is_answered_and_freezes_the_startup_heap() -> None:
    import asyncio
    import gc

    from apps.gateway.asgi import V1Application

    async def django(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("lifespan must not reach Django's handler")

    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    try:
        asyncio.run(V1Application(django)({"type": "lifespan"}, receive, send))
        assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
