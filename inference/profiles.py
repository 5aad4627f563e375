"""Serving profiles: one YAML file per open-weight model under ``inference/profiles/``.

A profile says where the weights are, the architecture facts the planner needs, the vLLM
arguments, and how to deploy it. Loading validates every field and reports *all* problems at
once (missing field, wrong type, out-of-range value, unknown GPU, unknown key) as a
:class:`ProfileError` whose message names the file and the dotted field path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from inference.gpus import GPUS, MAX_GPUS_PER_NODE

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

WEIGHT_DTYPES = ("bfloat16", "float16", "float32")
QUANTIZATIONS = ("fp8", "awq", "gptq")
KV_CACHE_DTYPES = ("auto", "fp8")
FAMILIES = ("llama", "qwen3_moe")
TP_SIZES = tuple(2**i for i in range(MAX_GPUS_PER_NODE.bit_length()) if 2**i <= MAX_GPUS_PER_NODE)

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,48}[a-z0-9])?$")
_SERVED_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_TEMPLATE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.jinja$")
_ARCH_FIELDS = (
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "num_kv_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "params_total",
    "params_active",
    "num_experts",
    "num_experts_per_token",
)


class ProfileError(ValueError):
    """A serving profile could not be loaded; ``problems`` lists every issue found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid serving profile:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Architecture:
    """Facts from the model's published ``config.json`` / model card."""

    family: str
    params_total: int
    params_active: int
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    dtype: str
    num_experts: int | None = None
    num_experts_per_token: int | None = None
    estimated: tuple[str, ...] = ()
    """Fields that are estimates rather than published values (the planner flags them)."""

    @property
    def is_moe(self) -> bool:
        return self.num_experts is not None


@dataclass(frozen=True)
class VllmArgs:
    """Arguments for ``vllm serve``."""

    served_model_name: str
    tensor_parallel_size: int | Literal["auto"]
    max_model_len: int
    gpu_memory_utilization: float
    dtype: str
    quantization: str | None
    kv_cache_dtype: str
    max_num_seqs: int
    max_num_batched_tokens: int
    trust_remote_code: bool
    chat_template: str | None
    reasoning_parser: str | None
    reasoning_parser_plugin: str | None
    tool_call_parser: str | None
    tool_parser_plugin: str | None
    extra_args: tuple[str, ...]


@dataclass(frozen=True)
class Deploy:
    """Defaults for ``render``: GPU type, replicas, container image, model volume."""

    gpu: str
    replicas: int
    image: str
    models_pvc: str
    shm_size_gib: int


@dataclass(frozen=True)
class Profile:
    """A validated serving profile."""

    name: str
    display_name: str
    vendor: str
    hf_repo: str
    model_path: str
    license: str
    notes: str
    architecture: Architecture
    vllm: VllmArgs
    deploy: Deploy
    source: str


class _Reader:
    """Reads typed fields out of one YAML mapping, recording problems instead of raising."""

    def __init__(self, data: Any, prefix: str, problems: list[str]) -> None:
        self.prefix = prefix
        self.problems = problems
        self.seen: set[str] = set()
        if isinstance(data, Mapping):
            self.data: Mapping[str, Any] = data
        else:
            self.data = {}
            self.problems.append(
                f"{prefix.rstrip('.') or '<top level>'}: expected a mapping, got {_kind(data)}"
            )
            self.seen.add("*")

    def _get(self, key: str, *, required: bool) -> tuple[bool, Any]:
        self.seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required and "*" not in self.seen:
                self.problems.append(f"{self.prefix}{key}: missing required field")
            return False, None
        return True, self.data[key]

    def _bad(self, key: str, expected: str, value: Any) -> None:
        self.problems.append(f"{self.prefix}{key}: expected {expected}, got {_kind(value)} {value!r}")

    def string(
        self, key: str, *, pattern: re.Pattern[str] | None = None, choices: tuple[str, ...] = ()
    ) -> str:
        value = self.opt_string(key, pattern=pattern, choices=choices, required=True)
        return value if value is not None else ""

    def opt_string(
        self,
        key: str,
        *,
        pattern: re.Pattern[str] | None = None,
        choices: tuple[str, ...] = (),
        required: bool = False,
    ) -> str | None:
        present, value = self._get(key, required=required)
        if not present:
            return None
        if not isinstance(value, str) or not value.strip():
            self._bad(key, "a non-empty string", value)
            return None
        if choices and value not in choices:
            self.problems.append(f"{self.prefix}{key}: {value!r} is not one of {', '.join(choices)}")
            return None
        if pattern is not None and not pattern.match(value):
            self.problems.append(f"{self.prefix}{key}: {value!r} does not match {pattern.pattern}")
            return None
        return value

    def integer(self, key: str, *, minimum: int = 1) -> int:
        value = self.opt_integer(key, minimum=minimum, required=True)
        return value if value is not None else 0

    def opt_integer(self, key: str, *, minimum: int = 1, required: bool = False) -> int | None:
        present, value = self._get(key, required=required)
        if not present:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self._bad(key, "an integer", value)
            return None
        if value < minimum:
            self.problems.append(f"{self.prefix}{key}: must be >= {minimum}, got {value}")
            return None
        return int(value)

    def fraction(self, key: str) -> float:
        present, value = self._get(key, required=True)
        if not present:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._bad(key, "a number", value)
            return 0.0
        if not 0.0 < float(value) <= 1.0:
            self.problems.append(f"{self.prefix}{key}: must be in (0, 1], got {value}")
            return 0.0
        return float(value)

    def boolean(self, key: str, *, default: bool) -> bool:
        present, value = self._get(key, required=False)
        if not present:
            return default
        if not isinstance(value, bool):
            self._bad(key, "true or false", value)
            return default
        return value

    def string_list(self, key: str) -> tuple[str, ...]:
        present, value = self._get(key, required=False)
        if not present:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self._bad(key, "a list of strings", value)
            return ()
        return tuple(value)

    def section(self, key: str) -> _Reader:
        present, value = self._get(key, required=True)
        reader = _Reader(value if present else {}, f"{self.prefix}{key}.", self.problems)
        if not present:
            reader.seen.add("*")
        return reader

    def finish(self) -> None:
        """Report keys nobody asked for: typos must not pass silently."""
        if "*" in self.seen:
            return
        for key in self.data:
            if key not in self.seen:
                self.problems.append(f"{self.prefix}{key}: unknown field")


def _kind(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
    }.get(type(value), type(value).__name__)


def _read_architecture(r: _Reader) -> Architecture:
    arch = Architecture(
        family=r.string("family", choices=FAMILIES),
        params_total=r.integer("params_total"),
        params_active=r.integer("params_active"),
        num_layers=r.integer("num_layers"),
        hidden_size=r.integer("hidden_size"),
        num_attention_heads=r.integer("num_attention_heads"),
        num_kv_heads=r.integer("num_kv_heads"),
        head_dim=r.integer("head_dim"),
        vocab_size=r.integer("vocab_size"),
        max_position_embeddings=r.integer("max_position_embeddings"),
        dtype=r.string("dtype", choices=WEIGHT_DTYPES),
        num_experts=r.opt_integer("num_experts"),
        num_experts_per_token=r.opt_integer("num_experts_per_token"),
        estimated=r.string_list("estimated"),
    )
    r.finish()
    p = r.prefix
    if arch.params_active and arch.params_total and arch.params_active > arch.params_total:
        r.problems.append(f"{p}params_active: {arch.params_active} exceeds params_total {arch.params_total}")
    if arch.num_kv_heads and arch.num_attention_heads % arch.num_kv_heads:
        r.problems.append(
            f"{p}num_kv_heads: {arch.num_kv_heads} does not divide "
            f"num_attention_heads {arch.num_attention_heads}"
        )
    if (arch.num_experts is None) != (arch.num_experts_per_token is None):
        r.problems.append(f"{p}num_experts and num_experts_per_token must be given together")
    if arch.family == "qwen3_moe" and arch.num_experts is None:
        r.problems.append(f"{p}num_experts: required for family qwen3_moe")
    if (
        arch.num_experts is not None
        and arch.num_experts_per_token is not None
        and arch.num_experts_per_token > arch.num_experts
    ):
        r.problems.append(f"{p}num_experts_per_token: exceeds num_experts")
    for field in arch.estimated:
        if field not in _ARCH_FIELDS:
            r.problems.append(f"{p}estimated: {field!r} is not an architecture number")
    return arch


def _read_tp(r: _Reader) -> int | Literal["auto"]:
    present, value = r._get("tensor_parallel_size", required=True)
    if not present:
        return "auto"
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or value not in TP_SIZES:
        r.problems.append(
            f"{r.prefix}tensor_parallel_size: expected 'auto' or one of {', '.join(map(str, TP_SIZES))}, "
            f"got {_kind(value)} {value!r}"
        )
        return "auto"
    return int(value)


def _read_vllm(r: _Reader, arch: Architecture) -> VllmArgs:
    args = VllmArgs(
        served_model_name=r.string("served_model_name", pattern=_SERVED_RE),
        tensor_parallel_size=_read_tp(r),
        max_model_len=r.integer("max_model_len", minimum=16),
        gpu_memory_utilization=r.fraction("gpu_memory_utilization"),
        dtype=r.string("dtype", choices=WEIGHT_DTYPES),
        quantization=r.opt_string("quantization", choices=QUANTIZATIONS),
        kv_cache_dtype=r.opt_string("kv_cache_dtype", choices=KV_CACHE_DTYPES) or "auto",
        max_num_seqs=r.integer("max_num_seqs"),
        max_num_batched_tokens=r.opt_integer("max_num_batched_tokens", minimum=16) or 8192,
        trust_remote_code=r.boolean("trust_remote_code", default=False),
        chat_template=r.opt_string("chat_template", pattern=_TEMPLATE_RE),
        reasoning_parser=r.opt_string("reasoning_parser"),
        reasoning_parser_plugin=r.opt_string("reasoning_parser_plugin", pattern=_MODULE_RE),
        tool_call_parser=r.opt_string("tool_call_parser"),
        tool_parser_plugin=r.opt_string("tool_parser_plugin", pattern=_MODULE_RE),
        extra_args=r.string_list("extra_args"),
    )
    r.finish()
    p = r.prefix
    if arch.max_position_embeddings and args.max_model_len > arch.max_position_embeddings:
        r.problems.append(
            f"{p}max_model_len: {args.max_model_len} exceeds the model's max_position_embeddings "
            f"{arch.max_position_embeddings}"
        )
    if args.reasoning_parser_plugin and not args.reasoning_parser:
        r.problems.append(f"{p}reasoning_parser_plugin: set without reasoning_parser")
    if args.tool_parser_plugin and not args.tool_call_parser:
        r.problems.append(f"{p}tool_parser_plugin: set without tool_call_parser")
    if args.chat_template and not (TEMPLATES_DIR / args.chat_template).is_file():
        r.problems.append(f"{p}chat_template: {args.chat_template!r} is not a file in inference/templates/")
    for extra in args.extra_args:
        if not extra.startswith("--"):
            r.problems.append(f"{p}extra_args: {extra!r} must be a --flag or --flag=value")
    return args


def _read_deploy(r: _Reader) -> Deploy:
    gpu = r.string("gpu")
    if gpu and gpu not in GPUS:
        r.problems.append(f"{r.prefix}gpu: unknown GPU {gpu!r}; known: {', '.join(sorted(GPUS))}")
    deploy = Deploy(
        gpu=gpu,
        replicas=r.opt_integer("replicas") or 1,
        image=r.string("image"),
        models_pvc=r.string("models_pvc", pattern=_NAME_RE),
        shm_size_gib=r.opt_integer("shm_size_gib") or 16,
    )
    r.finish()
    return deploy


def parse_profile(data: Any, source: str, *, expected_name: str | None = None) -> Profile:
    """Validate already-parsed YAML ``data``; raise :class:`ProfileError` listing every problem."""
    problems: list[str] = []
    top = _Reader(data, "", problems)
    name = top.string("name", pattern=_NAME_RE)
    if expected_name is not None and name and name != expected_name:
        problems.append(f"name: {name!r} must equal the file name {expected_name!r}")
    display_name = top.string("display_name")
    vendor = top.string("vendor")
    hf_repo = top.string("hf_repo", pattern=re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$"))
    model_path = top.string("model_path", pattern=re.compile(r"^/[^\s]*$"))
    license_ = top.string("license")
    notes = top.opt_string("notes") or ""
    arch = _read_architecture(top.section("architecture"))
    vllm = _read_vllm(top.section("vllm"), arch)
    deploy = _read_deploy(top.section("deploy"))
    top.finish()
    if problems:
        raise ProfileError(source, problems)
    return Profile(
        name=name,
        display_name=display_name,
        vendor=vendor,
        hf_repo=hf_repo,
        model_path=model_path,
        license=license_,
        notes=notes.strip(),
        architecture=arch,
        vllm=vllm,
        deploy=deploy,
        source=source,
    )


def load_profile_file(path: Path) -> Profile:
    """Load and validate one profile file."""
    source = _display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(source, [f"cannot read file: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(source, [f"YAML syntax error: {where}{problem}"]) from exc
    return parse_profile(data, source, expected_name=path.stem)


def available_profiles(directory: Path = PROFILES_DIR) -> list[str]:
    """Names of the profiles in ``directory`` (file stems), sorted."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_profile(ref: str, directory: Path = PROFILES_DIR) -> Profile:
    """Load a profile by name (``llm-jp-4-8b``) or by path to a ``.yaml`` file."""
    candidate = Path(ref)
    if ref.endswith((".yaml", ".yml")) or candidate.parent != Path("."):
        return load_profile_file(candidate)
    path = directory / f"{ref}.yaml"
    if not path.is_file():
        known = ", ".join(available_profiles(directory)) or "(none)"
        raise ProfileError(ref, [f"no such profile in {_display_path(directory)}; known: {known}"])
    return load_profile_file(path)


def load_all(directory: Path = PROFILES_DIR) -> list[Profile]:
    """Load every profile in ``directory``; the first invalid one raises."""
    return [load_profile_file(directory / f"{name}.yaml") for name in available_profiles(directory)]


def _display_path(path: Path) -> str:
    """Path relative to the repository root when inside it, so messages and goldens are stable."""
    root = Path(__file__).resolve().parent.parent
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)
