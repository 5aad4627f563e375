"""The planner: golden output for two profiles, the arithmetic, and the failure cases."""

from __future__ import annotations

import io
import json

import pytest

from inference.cli import main
from inference.gpus import GIB, GPUS
from inference.plan import format_table, kv_bytes_per_token, plan, tp_problem
from inference.profiles import load_profile, parse_profile

from .golden import check_golden
from .test_profiles import base_data


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.mark.parametrize(
    ("profile", "gpu"),
    [("llm-jp-4-8b", "h100-80g"), ("llm-jp-4-32b-a3b-thinking", "l40s-48g")],
)
def test_plan_golden(profile: str, gpu: str) -> None:
    code, table = run_cli("plan", profile, "--gpu", gpu)
    assert code == 0
    check_golden(f"plan-{profile}-{gpu}.txt", table)
    code, text = run_cli("plan", profile, "--gpu", gpu, "--json")
    assert code == 0
    check_golden(f"plan-{profile}-{gpu}.json", text)


def test_llm_jp_4_8b_on_h100_arithmetic() -> None:
    p = load_profile("llm-jp-4-8b")
    result = plan(p, GPUS["h100-80g"])
    # 2 (K,V) x 32 layers x 8 KV heads x 128 head_dim x 2 bytes
    assert kv_bytes_per_token(p) == 131_072
    assert result.kv_gib_per_sequence == 4.0
    row = result.chosen
    assert row is not None and row.tensor_parallel_size == 1
    assert row.weights_gib == pytest.approx(8_590_200_832 * 2 / GIB, abs=1e-3)
    assert row.max_concurrency_at_full_context == row.kv_capacity_tokens // 32768 == 13


def test_moe_on_l40s_needs_two_gpus() -> None:
    result = plan(load_profile("llm-jp-4-32b-a3b-thinking"), GPUS["l40s-48g"])
    assert [r.fits for r in result.rows] == [False, True, True, True]
    assert result.chosen is not None and result.chosen.tensor_parallel_size == 2


def test_kv_heads_are_replicated_beyond_their_count() -> None:
    p = load_profile("llm-jp-4-32b-a3b-thinking")  # 4 KV heads
    assert kv_bytes_per_token(p, 4) == kv_bytes_per_token(p, 8) == kv_bytes_per_token(p, 1) // 4


def test_overrides_change_the_answer() -> None:
    p = load_profile("llm-jp-4-8b")
    small = plan(p, GPUS["h100-80g"], max_model_len=8192, concurrency=4)
    assert small.max_model_len == 8192 and small.concurrency == 4
    assert small.rows[0].kv_needed_gib == pytest.approx(4.0)
    big = plan(p, GPUS["h100-80g"], concurrency=20)
    assert big.chosen is not None and big.chosen.tensor_parallel_size == 2


def test_does_not_fit_on_8_gpus() -> None:
    code, table = run_cli(
        "plan",
        "llm-jp-4-32b-a3b-thinking",
        "--gpu",
        "l40s-48g",
        "--max-model-len",
        "65536",
        "--concurrency",
        "64",
    )
    assert code == 1
    assert "result: does not fit on 8 GPUs" in table
    code, text = run_cli(
        "plan",
        "llm-jp-4-32b-a3b-thinking",
        "--gpu",
        "l40s-48g",
        "--max-model-len",
        "65536",
        "--concurrency",
        "64",
        "--json",
    )
    data = json.loads(text)
    assert code == 1 and data["fits"] is False and data["gpus"] is None
    assert data["verdict"].startswith("does not fit on 8 GPUs")


def test_context_beyond_the_model_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run_cli("plan", "sarashina2-7b", "--max-model-len", "8192")
    assert code == 2
    assert "exceeds sarashina2-7b's max_position_embeddings 4096" in capsys.readouterr().err


def test_tp_must_divide_heads() -> None:
    data = base_data()
    data["architecture"].update(num_attention_heads=12, num_kv_heads=12, hidden_size=1536)
    p = parse_profile(data, "synthetic")
    assert tp_problem(p, 8) == "12 attention heads are not divisible by 8"
    result = plan(p, GPUS["h100-80g"])
    assert [r.tensor_parallel_size for r in result.rows] == [1, 2, 4]
    assert "not a valid tensor-parallel size" in format_table(result)


def test_default_gpu_comes_from_profile() -> None:
    _, table = run_cli("plan", "sarashina2-7b")
    assert "gpu            l40s-48g" in table


def test_unknown_gpu_flag_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan", "llm-jp-4-8b", "--gpu", "a100-40g"])
    assert info.value.code == 2
    assert "invalid choice: 'a100-40g'" in capsys.readouterr().err
