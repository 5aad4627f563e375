"""The project's ASGI application (gennai.asgi: the lean /v1 front, then Django) under
uvicorn, in a thread of the test process.

pytest-django's ``live_server`` is WSGI: Django collects an async streaming
response into a list there, which hides chunk-by-chunk relaying, mid-stream
drops and client disconnects. Tests of streaming use this server instead; it
shares the test database, so test data must be committed (``transactional_db``).
"""

from __future__ import annotations

import socket
import threading
import time


class AsgiServer:
    """uvicorn serving ``gennai.asgi.application`` on a free loopback port."""

    def __init__(self) -> None:
        import uvicorn

        from gennai.asgi import application

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            application, loop="asyncio", http="httptools", ws="none", lifespan="off", log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="uvicorn-test", daemon=True
        )

    def start(self) -> AsgiServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
