"""The real local model server (llama.cpp + SmolLM2-135M, via `python -m inference serve-dev`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LocalModel:
    url: str
    served_model_name: str
    process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_local_model(timeout: float = 120) -> LocalModel:
    """Start llama.cpp with SmolLM2, or use the server at ``GENNAI_TEST_MODEL_URL``
    (``make test-vllm`` points it at a real vLLM on CPU)."""
    from inference.devserver import SERVED_MODEL_NAME

    external = os.environ.get("GENNAI_TEST_MODEL_URL")
    if external:
        name = os.environ.get("GENNAI_TEST_MODEL_NAME", SERVED_MODEL_NAME)
        return LocalModel(url=external.rstrip("/"), served_model_name=name, process=None)

    url, process = start_openai_server(
        label="local model server",
        log_name="local-model",
        argv=["-m", "inference", "serve-dev"],
        timeout=timeout,
        poll=0.3,
    )
    return LocalModel(url=url, served_model_name=SERVED_MODEL_NAME, process=process)


def start_openai_server(
    *, label: str, log_name: str, argv: list[str], timeout: float, poll: float
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start ``python <argv> --port N`` on a free port; wait until ``/v1/models`` answers 200.

    Its output goes to ``.gennai/test/<log_name>-<port>.log``, whose tail is in the
    error if the server exits or does not come up within ``timeout`` seconds.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = ROOT / ".gennai" / "test" / f"{log_name}-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *argv, "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{label} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return url, process
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    process.kill()
    raise RuntimeError(f"{label} did not start in {timeout}s: {log.read_text()[-2000:]}")
