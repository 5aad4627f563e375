"""Profile loading and validation: every shipped profile is valid; bad ones fail clearly."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from inference.cli import main
from inference.profiles import (
    PROFILES_DIR,
    ProfileError,
    available_profiles,
    load_all,
    load_profile,
    parse_profile,
)

REPO = Path(__file__).resolve().parents[2]


def base_data() -> dict[str, Any]:
    return yaml.safe_load((PROFILES_DIR / "llm-jp-4-8b.yaml").read_text(encoding="utf-8"))


def problems_for(data: Any) -> list[str]:
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "bad.yaml", expected_name="llm-jp-4-8b")
    return info.value.problems


def test_shipped_profiles_all_load() -> None:
    names = available_profiles()
    assert {
        "llm-jp-4-8b",
        "llm-jp-4-32b-a3b-thinking",
        "llama31-swallow-8b-instruct",
        "llama3-elyza-jp-8b",
        "sarashina2-7b",
    } <= set(names)
    profiles = load_all()
    assert [p.name for p in profiles] == names


def test_llm_jp_4_32b_is_moe_with_reasoning_parser() -> None:
    p = load_profile("llm-jp-4-32b-a3b-thinking")
    assert p.architecture.is_moe
    assert p.architecture.params_active < p.architecture.params_total
    assert p.vllm.reasoning_parser == "llmjp4"
    assert "num_kv_heads" in p.architecture.estimated


def test_load_by_path() -> None:
    p = load_profile(str(PROFILES_DIR / "sarashina2-7b.yaml"))
    assert p.name == "sarashina2-7b"
    assert p.source == "inference/profiles/sarashina2-7b.yaml"


def test_missing_field() -> None:
    data = base_data()
    del data["vllm"]["max_model_len"]
    assert "vllm.max_model_len: missing required field" in problems_for(data)


def test_missing_section_reported_once() -> None:
    data = base_data()
    del data["architecture"]
    problems = problems_for(data)
    assert "architecture: missing required field" in problems
    assert not any(p.startswith("architecture.") for p in problems)


def test_wrong_type() -> None:
    data = base_data()
    data["architecture"]["num_layers"] = "32"
    data["vllm"]["trust_remote_code"] = "yes"
    data["vllm"]["gpu_memory_utilization"] = 1.5
    problems = problems_for(data)
    assert "architecture.num_layers: expected an integer, got string '32'" in problems
    assert "vllm.trust_remote_code: expected true or false, got string 'yes'" in problems
    assert "vllm.gpu_memory_utilization: must be in (0, 1], got 1.5" in problems


def test_boolean_is_not_an_integer() -> None:
    data = base_data()
    data["architecture"]["num_layers"] = True
    assert "architecture.num_layers: expected an integer, got boolean True" in problems_for(data)


def test_unknown_gpu() -> None:
    data = base_data()
    data["deploy"]["gpu"] = "a100-40g"
    (problem,) = problems_for(data)
    assert problem.startswith("deploy.gpu: unknown GPU 'a100-40g'; known: h100-80g, h200-141g, l40s-48g")


def test_unknown_field_is_a_typo() -> None:
    data = base_data()
    data["vllm"]["max_model_length"] = 4096
    assert "vllm.max_model_length: unknown field" in problems_for(data)


def test_semantic_checks() -> None:
    data = base_data()
    data["vllm"]["max_model_len"] = 131072
    data["vllm"]["tensor_parallel_size"] = 3
    data["architecture"]["num_kv_heads"] = 5
    data["architecture"]["params_active"] = data["architecture"]["params_total"] + 1
    problems = problems_for(data)
    assert any(
        "max_model_len: 131072 exceeds the model's max_position_embeddings 65536" in p for p in problems
    )
    assert any(
        p.startswith("vllm.tensor_parallel_size: expected 'auto' or one of 1, 2, 4, 8") for p in problems
    )
    assert any("num_kv_heads: 5 does not divide num_attention_heads 32" in p for p in problems)
    assert any("params_active" in p for p in problems)


def test_all_problems_reported_together() -> None:
    data = copy.deepcopy(base_data())
    del data["hf_repo"]
    data["deploy"]["gpu"] = "nope"
    data["vllm"]["dtype"] = "int3"
    problems = problems_for(data)
    assert len(problems) == 3
    assert "hf_repo: missing required field" in problems
    assert "vllm.dtype: 'int3' is not one of bfloat16, float16, float32" in problems


def test_name_must_match_file() -> None:
    data = base_data()
    data["name"] = "other-name"
    assert "name: 'other-name' must equal the file name 'llm-jp-4-8b'" in problems_for(data)


def test_top_level_not_a_mapping() -> None:
    assert problems_for(["a", "list"]) == ["<top level>: expected a mapping, got list"]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\narchitecture: [unclosed\n", encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        load_profile(str(bad))
    assert "YAML syntax error: line" in str(info.value)


def test_unknown_profile_lists_known() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("gpt-5")
    assert "known: " in str(info.value) and "llm-jp-4-8b" in str(info.value)


def test_cli_reports_invalid_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = base_data()
    data["name"] = "bad"
    data["deploy"]["gpu"] = "rtx-4090"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "invalid serving profile" in err and "deploy.gpu: unknown GPU 'rtx-4090'" in err


def test_cli_profiles_dir_validates_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.yaml").write_text("name: x\n", encoding="utf-8")
    assert main(["--profiles-dir", str(tmp_path), "profiles"]) == 2
    assert "display_name: missing required field" in capsys.readouterr().err


def test_inference_does_not_import_django() -> None:
    code = (
        "import sys, inference.cli, inference.bench, inference.plan, inference.render, inference.devserver\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    pattern = re.compile(r"^\s*(import|from)\s+django\b", re.MULTILINE)
    for source in (REPO / "inference").rglob("*.py"):
        assert not pattern.search(source.read_text(encoding="utf-8")), source
