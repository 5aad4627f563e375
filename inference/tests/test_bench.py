"""bench against an in-process fake OpenAI-compatible streaming server on loopback."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from inference.bench import BenchConfig, BenchError, api_root, percentile, run_bench
from inference.cli import main

from .fake_openai import FakeConfig, FakeOpenAI

TTFT = 0.2
SLACK = 0.5  # generous for a loaded 2-core CI machine


def bench(cfg: BenchConfig):  # type: ignore[no-untyped-def]
    return asyncio.run(run_bench(cfg))


def test_ttft_latency_and_usage_tokens() -> None:
    with FakeOpenAI(FakeConfig(ttft_s=TTFT, inter_token_s=0.02)) as server:
        report = bench(BenchConfig(server.base_url, model="m", requests=3, concurrency=(1,), warmup=0))
        sent = server.state.requests
    (level,) = report.levels
    assert level.ok == 3 and level.errors == 0
    for r in report.results:
        assert r.ok, r.error
        assert TTFT <= r.ttft_s < TTFT + SLACK  # the empty role chunk at t=0 does not count
        assert r.latency_s >= TTFT + 3 * 0.02
        assert r.completion_tokens == 6 and r.token_source == "usage"  # usage wins over 4 chunks
        assert r.text_chunks == 4
        assert r.decode_tokens_per_s is not None and r.decode_tokens_per_s > 0
    assert level.completion_tokens == 18
    assert level.usage_reported == 3
    assert level.aggregate_tokens_per_s == pytest.approx(18 / level.wall_s, rel=0.01)
    assert TTFT <= level.ttft_p50_s <= level.ttft_p95_s < TTFT + SLACK
    assert sent[0]["stream"] is True and sent[0]["stream_options"] == {"include_usage": True}
    assert sent[0]["max_tokens"] == 128 and sent[0]["model"] == "m"


def test_counts_chunks_when_usage_is_not_honoured() -> None:
    with FakeOpenAI(FakeConfig(ttft_s=0.05, honour_usage=False)) as server:
        report = bench(BenchConfig(server.base_url, model="m", requests=2, concurrency=(1,), warmup=0))
    assert all(r.completion_tokens == 4 and r.token_source == "chunks" for r in report.results)
    assert report.levels[0].usage_reported == 0


def test_concurrency_is_bounded_per_level() -> None:
    with FakeOpenAI(FakeConfig(ttft_s=0.3)) as server:
        bench(BenchConfig(server.base_url, model="m", requests=6, concurrency=(3,), warmup=0))
        assert server.state.max_in_flight == 3
    with FakeOpenAI(FakeConfig(ttft_s=0.1)) as server:
        report = bench(BenchConfig(server.base_url, model="m", requests=3, concurrency=(1,), warmup=0))
        assert server.state.max_in_flight == 1
    assert report.levels[0].wall_s >= 3 * 0.1


def test_levels_run_in_order_and_discover_the_model() -> None:
    with FakeOpenAI(FakeConfig(ttft_s=0.02, inter_token_s=0.0)) as server:
        report = bench(BenchConfig(server.base_url + "/v1/", requests=4, concurrency=(1, 2, 4), warmup=1))
        assert len(server.state.requests) == 1 + 3 * 4
    assert report.model == "fake-model"
    assert [lv.concurrency for lv in report.levels] == [1, 2, 4]
    assert all(lv.ok == 4 for lv in report.levels)


def test_http_errors_are_counted() -> None:
    with FakeOpenAI() as server:
        report = bench(BenchConfig(server.base_url, model="broken", requests=2, concurrency=(2,), warmup=0))
    (level,) = report.levels
    assert level.errors == 2 and level.ok == 0 and level.completion_tokens == 0
    assert level.ttft_p50_s is None and level.aggregate_tokens_per_s == 0
    assert level.error_samples[0].startswith("HTTP 500")


def test_timeout_is_an_error() -> None:
    with FakeOpenAI(FakeConfig(slow_s=2.0)) as server:
        report = bench(
            BenchConfig(server.base_url, model="slow", requests=1, concurrency=(1,), warmup=0, timeout_s=0.3)
        )
    (result,) = report.results
    assert not result.ok and result.error == "timeout after 0.3 s"
    assert result.latency_s < 1.5


def test_truncated_stream_is_an_error() -> None:
    with FakeOpenAI(FakeConfig(ttft_s=0.01)) as server:
        report = bench(
            BenchConfig(server.base_url, model="truncated", requests=1, concurrency=(1,), warmup=0)
        )
    (result,) = report.results
    assert result.error == "stream ended before data: [DONE]"
    assert result.text_chunks == 4


def test_unreachable_endpoint_errors_per_request() -> None:
    # A port nobody listens on: connection refused, counted, no exception.
    report = bench(
        BenchConfig("http://127.0.0.1:9", model="m", requests=1, concurrency=(1,), warmup=0, timeout_s=2)
    )
    assert report.levels[0].errors == 1
    assert "ConnectError" in report.results[0].error


def test_model_discovery_failure_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match="pass --model"):
        bench(BenchConfig("http://127.0.0.1:9", requests=1, concurrency=(1,), warmup=0, timeout_s=2))


@pytest.mark.parametrize(
    "cfg",
    [
        BenchConfig("ftp://x"),
        BenchConfig("http://x", requests=0),
        BenchConfig("http://x", requests=100_000),
        BenchConfig("http://x", concurrency=(0,)),
        BenchConfig("http://x", timeout_s=0),
    ],
)
def test_bounds(cfg: BenchConfig) -> None:
    with pytest.raises(BenchError):
        cfg.validate()


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([float(i) for i in range(1, 21)], 95) == pytest.approx(19.05)


def test_api_root() -> None:
    assert (
        api_root("http://h:8000")
        == api_root("http://h:8000/")
        == api_root("http://h:8000/v1")
        == "http://h:8000/v1"
    )


def test_cli_table_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out_json = tmp_path / "bench.json"
    monkeypatch.setenv("GENNAI_BENCH_API_KEY", "secret-token")
    with FakeOpenAI(FakeConfig(ttft_s=0.02, inter_token_s=0.0)) as server:
        out = io.StringIO()
        code = main(
            [
                "bench",
                server.base_url,
                "--requests",
                "2",
                "--concurrency",
                "1,2",
                "--max-tokens",
                "16",
                "--warmup",
                "0",
                "--json",
                str(out_json),
            ],
            out=out,
        )
        sent = server.state.requests
    assert code == 0
    table = out.getvalue()
    assert "model=fake-model" in table and "TTFT p50" in table
    assert len(table.splitlines()) >= 4
    data = json.loads(out_json.read_text(encoding="utf-8"))
    assert [lv["concurrency"] for lv in data["levels"]] == [1, 2]
    assert len(data["results"]) == 4
    assert "secret-token" not in out_json.read_text(encoding="utf-8")
    assert sent[0]["max_tokens"] == 16


def test_cli_exit_status_when_requests_fail() -> None:
    with FakeOpenAI() as server:
        code = main(
            [
                "bench",
                server.base_url,
                "--model",
                "broken",
                "--requests",
                "1",
                "--concurrency",
                "1",
                "--warmup",
                "0",
            ],
            out=io.StringIO(),
        )
    assert code == 1
