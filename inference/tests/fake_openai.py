"""A tiny OpenAI-compatible streaming server for tests: stdlib only, loopback only.

``/v1/chat/completions`` streams SSE chunks with controlled delays. The requested model picks the
behaviour: ``broken`` answers 500, ``slow`` sleeps before answering, ``truncated`` ends the stream
without ``[DONE]``; any other model streams normally.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeConfig:
    model_id: str = "fake-model"
    ttft_s: float = 0.2
    inter_token_s: float = 0.01
    tokens: tuple[str, ...] = ("行政", "手続き", "の", "デジタル化")
    usage_completion_tokens: int = 6
    """What the usage chunk reports: deliberately not the chunk count, to tell the two apart."""
    honour_usage: bool = True
    slow_s: float = 2.0


@dataclass
class FakeState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    max_in_flight: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def enter(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


class FakeOpenAI:
    """Run with ``with FakeOpenAI(cfg) as server: server.base_url``."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.state = FakeState()
        handler = _make_handler(self.config, self.state)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _make_handler(cfg: FakeConfig, state: FakeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # no keep-alive: the stream ends when the connection closes

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _event(self, payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": cfg.model_id, "object": "model"}]})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            if self.path != "/v1/chat/completions":
                self._json(404, {"error": {"message": "not found"}})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            state.enter(body)
            try:
                self._complete(body)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                state.leave()

        def _complete(self, body: dict[str, Any]) -> None:
            model = str(body.get("model"))
            if model == "broken":
                self._json(500, {"error": {"message": "engine dead"}})
                return
            if model == "slow":
                time.sleep(cfg.slow_s)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self._event(_chunk(model, {"role": "assistant", "content": ""}))
            time.sleep(cfg.ttft_s)
            for i, token in enumerate(cfg.tokens):
                if i:
                    time.sleep(cfg.inter_token_s)
                self._event(_chunk(model, {"content": token}))
            if model == "truncated":
                return
            self._event(_chunk(model, {}, finish="stop"))
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            if include_usage and cfg.honour_usage:
                usage = {"prompt_tokens": 12, "completion_tokens": cfg.usage_completion_tokens}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                self._event(
                    {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [], "usage": usage}
                )
            self._event("[DONE]")

    return Handler
