"""GPU memory planner: does a serving profile fit, on how many GPUs, with what concurrency?

Per GPU, for a tensor-parallel group of ``tp`` GPUs (vLLM's own accounting, simplified):

* budget      = GPU memory (nvidia-smi total) x ``gpu_memory_utilization``
* weights     = params_total x bytes per parameter (dtype or quantization) / tp
* overhead    = runtime fixed cost + CUDA graphs + activation peak + sampler logits (see constants)
* KV per token (per GPU) = 2 (K and V) x layers x ceil(kv_heads / tp) x head_dim x KV bytes
* KV needed   = KV per token x max_model_len x concurrency
* fits when   weights + overhead + KV needed <= budget

Valid ``tp``: powers of two up to 8 (one node) that divide the attention heads and are compatible
with the KV heads (one divides the other; vLLM replicates KV heads when tp exceeds them).
The answer is the smallest valid ``tp`` that fits, with the most concurrent full-length
sequences its KV space holds; or "does not fit on 8 GPUs".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from inference.gpus import GIB, MAX_GPUS_PER_NODE, GpuType
from inference.profiles import TP_SIZES, Profile

BYTES_PER_PARAM: dict[str, float] = {
    "float32": 4.0,
    "bfloat16": 2.0,
    "float16": 2.0,
    "fp8": 1.0,
    # 4-bit weights plus group-wise scales/zeros (group 128) and unquantised embeddings/norms,
    # rounded up to 4.5 bits per parameter.
    "awq": 0.5625,
    "gptq": 0.5625,
}

RUNTIME_FIXED_GIB = 1.5
"""CUDA context, cuBLAS/NCCL workspaces and allocator fragmentation per GPU (vLLM's "non-torch"
memory is typically 0.5-1.5 GiB; NCCL buffers grow it with tp > 1)."""

CUDA_GRAPHS_GIB = 1.0
"""vLLM captures CUDA graphs for decode batch sizes up to max_num_seqs: typically 0.3-1.5 GiB."""

ACTIVATION_FACTOR = 16
"""Peak activation bytes per (token x hidden unit) of one prefill chunk, in bf16 elements: residual,
QKV, attention output and the gate/up MLP intermediates (~3.5-4x hidden each) live at once. Applied
to max_num_batched_tokens (chunked prefill) and not divided by tp, which errs on the safe side."""

LOGITS_BYTES = 4
"""The sampler materialises float32 logits for up to max_num_seqs sequences."""


@dataclass(frozen=True)
class PlanRow:
    """Memory accounting for one tensor-parallel size."""

    tensor_parallel_size: int
    weights_gib: float
    overhead_gib: float
    kv_needed_gib: float
    kv_available_gib: float
    kv_capacity_tokens: int
    max_concurrency_at_full_context: int
    fits: bool


@dataclass(frozen=True)
class Plan:
    """The planner's answer for one profile on one GPU type."""

    profile: str
    display_name: str
    gpu: str
    gpu_name: str
    gpu_memory_gib: float
    gpu_memory_utilization: float
    budget_gib: float
    max_model_len: int
    concurrency: int
    weight_dtype: str
    bytes_per_param: float
    kv_cache_dtype: str
    kv_bytes_per_element: int
    kv_bytes_per_token: int
    kv_gib_per_sequence: float
    params_total: int
    params_active: int
    estimated_fields: tuple[str, ...]
    rows: tuple[PlanRow, ...]
    invalid_tp: dict[int, str] = field(default_factory=dict)
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> PlanRow | None:
        """The smallest tensor-parallel size that fits, or ``None``."""
        return next((row for row in self.rows if row.fits), None)

    @property
    def fits(self) -> bool:
        return self.chosen is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the verdict at the top."""
        chosen = self.chosen
        data = asdict(self)
        data["rows"] = [asdict(row) for row in self.rows]
        data["estimated_fields"] = list(self.estimated_fields)
        data["invalid_tp"] = {str(k): v for k, v in self.invalid_tp.items()}
        return {
            "fits": chosen is not None,
            "gpus": chosen.tensor_parallel_size if chosen else None,
            "tensor_parallel_size": chosen.tensor_parallel_size if chosen else None,
            "max_concurrency_at_full_context": chosen.max_concurrency_at_full_context if chosen else None,
            "verdict": verdict(self),
            **data,
        }


def bytes_per_param(profile: Profile) -> tuple[str, float]:
    """The weight storage format and its bytes per parameter."""
    fmt = profile.vllm.quantization or profile.vllm.dtype
    return fmt, BYTES_PER_PARAM[fmt]


def kv_bytes_per_element(profile: Profile) -> int:
    """``auto`` stores the KV cache in the model dtype; ``fp8`` in one byte."""
    if profile.vllm.kv_cache_dtype == "fp8":
        return 1
    return int(BYTES_PER_PARAM[profile.vllm.dtype])


def kv_bytes_per_token(profile: Profile, tp: int = 1) -> int:
    """KV-cache bytes one token occupies on one GPU of a ``tp``-wide group."""
    arch = profile.architecture
    kv_heads_per_gpu = math.ceil(arch.num_kv_heads / tp)
    return 2 * arch.num_layers * kv_heads_per_gpu * arch.head_dim * kv_bytes_per_element(profile)


def overhead_bytes(profile: Profile) -> int:
    """Runtime, CUDA-graph, activation and sampler memory per GPU (see module constants)."""
    arch = profile.architecture
    activations = profile.vllm.max_num_batched_tokens * arch.hidden_size * 2 * ACTIVATION_FACTOR
    logits = profile.vllm.max_num_seqs * arch.vocab_size * LOGITS_BYTES
    return int((RUNTIME_FIXED_GIB + CUDA_GRAPHS_GIB) * GIB) + activations + logits


def tp_problem(profile: Profile, tp: int) -> str | None:
    """Why ``tp`` is not a valid tensor-parallel size for this model, or ``None``."""
    arch = profile.architecture
    if arch.num_attention_heads % tp:
        return f"{arch.num_attention_heads} attention heads are not divisible by {tp}"
    if arch.num_kv_heads % tp and tp % arch.num_kv_heads:
        return f"{arch.num_kv_heads} KV heads and {tp} GPUs do not divide one another"
    return None


def plan(
    profile: Profile,
    gpu: GpuType,
    *,
    max_model_len: int | None = None,
    concurrency: int = 1,
) -> Plan:
    """Compute the memory fit of ``profile`` on 1..8 GPUs of type ``gpu``."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    context = max_model_len or profile.vllm.max_model_len
    if context < 1:
        raise ValueError("max_model_len must be >= 1")
    if context > profile.architecture.max_position_embeddings:
        raise ValueError(
            f"max_model_len {context} exceeds {profile.name}'s max_position_embeddings "
            f"{profile.architecture.max_position_embeddings}"
        )
    util = profile.vllm.gpu_memory_utilization
    budget = gpu.memory_bytes * util
    fmt, bpp = bytes_per_param(profile)
    weights_total = profile.architecture.params_total * bpp
    overhead = overhead_bytes(profile)
    rows: list[PlanRow] = []
    invalid: dict[int, str] = {}
    for tp in TP_SIZES:
        if tp > MAX_GPUS_PER_NODE:
            break
        problem = tp_problem(profile, tp)
        if problem:
            invalid[tp] = problem
            continue
        kv_token = kv_bytes_per_token(profile, tp)
        weights = weights_total / tp
        kv_available = max(0.0, budget - weights - overhead)
        kv_needed = kv_token * context * concurrency
        capacity_tokens = int(kv_available // kv_token)
        rows.append(
            PlanRow(
                tensor_parallel_size=tp,
                weights_gib=_gib(weights),
                overhead_gib=_gib(overhead),
                kv_needed_gib=_gib(kv_needed),
                kv_available_gib=_gib(kv_available),
                kv_capacity_tokens=capacity_tokens,
                max_concurrency_at_full_context=capacity_tokens // context,
                fits=weights + overhead + kv_needed <= budget,
            )
        )
    kv_token_1 = kv_bytes_per_token(profile, 1)
    return Plan(
        profile=profile.name,
        display_name=profile.display_name,
        gpu=gpu.key,
        gpu_name=gpu.name,
        gpu_memory_gib=_gib(gpu.memory_bytes),
        gpu_memory_utilization=util,
        budget_gib=_gib(budget),
        max_model_len=context,
        concurrency=concurrency,
        weight_dtype=fmt,
        bytes_per_param=bpp,
        kv_cache_dtype=profile.vllm.kv_cache_dtype,
        kv_bytes_per_element=kv_bytes_per_element(profile),
        kv_bytes_per_token=kv_token_1,
        kv_gib_per_sequence=_gib(kv_token_1 * context),
        params_total=profile.architecture.params_total,
        params_active=profile.architecture.params_active,
        estimated_fields=profile.architecture.estimated,
        rows=tuple(rows),
        invalid_tp=invalid,
        assumptions={
            "runtime_fixed_gib": RUNTIME_FIXED_GIB,
            "cuda_graphs_gib": CUDA_GRAPHS_GIB,
            "activation_factor": ACTIVATION_FACTOR,
            "max_num_batched_tokens": profile.vllm.max_num_batched_tokens,
            "max_num_seqs": profile.vllm.max_num_seqs,
            "logits_bytes": LOGITS_BYTES,
        },
    )


def verdict(p: Plan) -> str:
    """One sentence: the GPU count and concurrency, or that it does not fit."""
    chosen = p.chosen
    if chosen is None:
        return (
            f"does not fit on {MAX_GPUS_PER_NODE} GPUs: {p.profile} at {p.max_model_len:,} tokens x "
            f"{p.concurrency} sequence(s) needs more than {MAX_GPUS_PER_NODE} x {p.gpu}; lower "
            f"--max-model-len or --concurrency, quantise, or use a larger GPU"
        )
    return (
        f"fits on {chosen.tensor_parallel_size} x {p.gpu} "
        f"(tensor_parallel_size={chosen.tensor_parallel_size}): "
        f"up to {chosen.max_concurrency_at_full_context} concurrent sequences at the full "
        f"{p.max_model_len:,}-token context"
    )


def format_table(p: Plan) -> str:
    """Human-readable plan: inputs, per-tp rows, verdict, caveats."""
    params = f"{p.params_total / 1e9:.2f}B"
    if p.params_active != p.params_total:
        params += f" total, {p.params_active / 1e9:.2f}B active (MoE: all experts stay resident)"
    lines = [
        f"profile        {p.profile} ({p.display_name})",
        f"parameters     {params}",
        f"gpu            {p.gpu}: {p.gpu_name}, {p.gpu_memory_gib:.1f} GiB",
        f"budget/GPU     {p.gpu_memory_gib:.1f} GiB x gpu_memory_utilization {p.gpu_memory_utilization:.2f}"
        f" = {p.budget_gib:.1f} GiB",
        f"weights        {p.weight_dtype}, {p.bytes_per_param:g} bytes/parameter",
        f"KV cache       {p.kv_cache_dtype} ({p.kv_bytes_per_element} B): "
        f"{p.kv_bytes_per_token / 1024:.0f} KiB/token on 1 GPU, {p.kv_gib_per_sequence:.2f} GiB per "
        f"{p.max_model_len:,}-token sequence",
        f"target         {p.concurrency} concurrent sequence(s) x {p.max_model_len:,} tokens",
        "",
        f"{'tp':>3}  {'weights':>9}  {'overhead':>9}  {'KV need':>9}  {'KV free':>9}  "
        f"{'KV tokens':>10}  {'max conc':>8}  fits",
    ]
    for row in p.rows:
        lines.append(
            f"{row.tensor_parallel_size:>3}  {row.weights_gib:>5.1f} GiB  {row.overhead_gib:>5.1f} GiB  "
            f"{row.kv_needed_gib:>5.1f} GiB  {row.kv_available_gib:>5.1f} GiB  "
            f"{row.kv_capacity_tokens:>10,}  {row.max_concurrency_at_full_context:>8}  "
            f"{'yes' if row.fits else 'no'}"
        )
    for tp, why in p.invalid_tp.items():
        lines.append(f"{tp:>3}  (not a valid tensor-parallel size: {why})")
    lines += ["", f"result: {verdict(p)}"]
    max_num_seqs = p.assumptions["max_num_seqs"]
    if any(row.max_concurrency_at_full_context > max_num_seqs for row in p.rows):
        lines.append(
            f"note: vLLM runs at most max_num_seqs={max_num_seqs} sequences at once (profile setting)"
        )
    if p.estimated_fields:
        lines.append(
            f"note: {', '.join(p.estimated_fields)} "
            f"{'is an estimate' if len(p.estimated_fields) == 1 else 'are estimates'}"
            " (see the profile); verify against config.json before procurement"
        )
    lines.append(
        f"assumptions: overhead/GPU = {RUNTIME_FIXED_GIB:g} GiB runtime + {CUDA_GRAPHS_GIB:g} GiB CUDA graphs"
        f" + activations ({p.assumptions['max_num_batched_tokens']} tokens x hidden x 2 B"
        f" x {ACTIVATION_FACTOR}) + logits ({p.assumptions['max_num_seqs']} seqs x vocab x {LOGITS_BYTES} B)"
    )
    return "\n".join(lines) + "\n"


def _gib(n: float) -> float:
    return round(n / GIB, 3)
