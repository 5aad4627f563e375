"""One real web process: uvicorn serving Django's ASGI app, with its own small connection pool.

Tests of connection handling need what production has and the in-thread
:class:`tests.support.asgi.AsgiServer` lacks: a psycopg pool of a known size, a
process of its own (its own memory, its own threads), and connections that can
be told apart in ``pg_stat_activity`` (``application_name``). The child runs
``gennai.settings.test`` against the *test* database of the calling process,
with ``OPTIONS["pool"]`` switched on before Django reads its settings.

Parent side::

    with WebProcess(pool_max=4) as web:
        httpx.get(web.url + "/")

Child side: ``python -m tests.support.web_process`` (reads ``GENNAI_WEB_PROCESS``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ENV_KEY = "GENNAI_WEB_PROCESS"
ROOT = Path(__file__).resolve().parents[2]


class WebProcess:
    """``uvicorn`` in a child process against the current test database."""

    def __init__(
        self,
        *,
        pool_max: int,
        pool_min: int = 1,
        pool_timeout: float = 5.0,
        application_name: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        from django.db import connection

        db = connection.settings_dict
        self.application_name = application_name or f"gennai-web-{uuid.uuid4().hex[:8]}"
        self.pool_max = pool_max
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "port": self.port,
            "database": {k: db.get(k) for k in ("NAME", "HOST", "PORT", "USER", "PASSWORD")},
            "pool": {"min_size": pool_min, "max_size": pool_max, "timeout": pool_timeout},
            "application_name": self.application_name,
        }
        self._env = {
            **os.environ,
            **(extra_env or {}),
            ENV_KEY: json.dumps(config),
            "DJANGO_SETTINGS_MODULE": "gennai.settings.test",
            "PYTHONPATH": str(ROOT),
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="gennai-web-", suffix=".log", delete=False)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the child's stderr (its log), for assertion messages."""
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def start(self, timeout: float = 120.0) -> WebProcess:
        # Generous: Django set-up alone took 8–19 s at load average 10–14 on 2 cores; a slow start
        # is not what the tests using this process measure.
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.web_process"],
            cwd=ROOT,
            env=self._env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"web process exited: {self.log_tail()}")
            try:
                httpx.get(self.url + "/healthz-does-not-exist", timeout=1.0)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"web process did not start in {timeout}s: {self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> WebProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve() -> None:  # pragma: no cover - runs in the child process
    config: dict[str, Any] = json.loads(os.environ[ENV_KEY])
    from gennai.settings import test as test_settings

    database = test_settings.DATABASES["default"]
    database.update({k: v for k, v in config["database"].items() if v is not None})
    database["CONN_MAX_AGE"] = 0
    database["OPTIONS"] = {"pool": config["pool"], "application_name": config["application_name"]}

    import uvicorn

    from gennai.asgi import application  # the production entry point, /v1 gateway included

    uvicorn.run(
        application,
        host="127.0.0.1",
        port=int(config["port"]),
        loop="auto",
        http="httptools",
        ws="none",
        lifespan="off",
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    _serve()
