"""A deterministic OpenAI-compatible upstream for failure injection.

Runs in a thread on a loopback port. Behaviour is chosen per instance
(``FakeUpstream(mode=...)``) and can be changed between requests:

* ``ok``          stream ``tokens`` chunks, ``delay`` seconds apart, then usage and [DONE]
* ``status``      answer HTTP ``status`` (e.g. 500, 429) with an OpenAI-shaped error
* ``slow_first``  wait ``first_delay`` seconds before the first byte
* ``drop``        send ``drop_after`` chunks, then cut the connection mid-body

``hang_up=N`` makes the next N POSTs close the connection without an answer
(a keep-alive connection the server dropped as the client reused it).
``usage=False`` leaves out the usage chunk, as llama.cpp does (it ignores
``stream_options.include_usage``). ``tool_calls=True`` streams the words as
one tool call's arguments instead of content. ``requests`` counts requests received;
``last_body`` is the last JSON body.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        fake = self.server.fake
        if fake.mode == "status":
            self._json(fake.status, {"error": {"message": "down"}})
        else:
            self._json(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        with fake.lock:
            fake.requests += 1
            fake.last_body = body
            hang_up = fake.hang_up > 0
            fake.hang_up -= 1 if hang_up else 0
        if hang_up:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.path.endswith("/embeddings"):
            inputs = body.get("input") or []
            inputs = [inputs] if isinstance(inputs, str) else inputs
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.5]}
                for i, t in enumerate(inputs)
            ]
            self._json(
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": fake.model,
                    "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
                },
            )
            return
        if fake.mode == "status":
            self._json(fake.status, {"error": {"message": f"injected {fake.status}", "type": "server_error"}})
            return
        if fake.mode == "slow_first":
            time.sleep(fake.first_delay)
        words = [f"{fake.word}{i} " for i in range(fake.tokens)]
        if not body.get("stream"):
            text = "".join(words)
            self._json(
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": fake.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 7,
                        "completion_tokens": len(words),
                        "total_tokens": 7 + len(words),
                    },
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i, word in enumerate(words):
                if fake.mode == "drop" and i == fake.drop_after:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # cut mid-body: no terminating chunk
                    return
                payload = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": fake.model,
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
                if fake.tool_calls:  # the answer as one tool call's arguments, streamed piece by piece
                    call: dict[str, Any] = {"index": 0, "function": {"arguments": word}}
                    if i == 0:
                        call.update(id="call_fake", type="function")
                        call["function"]["name"] = "lookup"
                    payload["choices"][0]["delta"] = {"tool_calls": [call]}
                self._chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")
                if fake.delay:
                    time.sleep(fake.delay)
            final = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": fake.model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            self._chunk(b"data: " + json.dumps(final).encode() + b"\n\n")
            if not fake.usage:
                self._chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return
            usage = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": fake.model,
                "choices": [],
                "usage": {
                    "prompt_tokens": 7,
                    "completion_tokens": len(words),
                    "total_tokens": 7 + len(words),
                },
            }
            self._chunk(b"data: " + json.dumps(usage).encode() + b"\n\n")
            self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: dozens of streams connecting at
    # once (tests/test_connections.py) would be reset before they are accepted.
    request_queue_size = 256
    fake: FakeUpstream


class FakeUpstream:
    def __init__(
        self,
        *,
        mode: str = "ok",
        tokens: int = 5,
        delay: float = 0.0,
        status: int = 500,
        first_delay: float = 2.0,
        drop_after: int = 2,
        model: str = "fake-model",
        word: str = "tok",
        usage: bool = True,
        hang_up: int = 0,
        tool_calls: bool = False,
    ) -> None:
        self.mode, self.tokens, self.delay, self.status = mode, tokens, delay, status
        self.first_delay, self.drop_after, self.model, self.word = first_delay, drop_after, model, word
        self.usage = usage
        self.hang_up = hang_up
        self.tool_calls = tool_calls
        self.requests = 0
        self.last_body: dict[str, Any] = {}
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
