"""The GPU types the planner and renderer know about.

Memory sizes are what ``nvidia-smi`` reports as total memory (MiB), not the marketing
"80 GB": vLLM's ``--gpu-memory-utilization`` is a fraction of that total.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024**2
GIB = 1024**3


@dataclass(frozen=True)
class GpuType:
    """One GPU model as seen by vLLM and by the Kubernetes device plugin."""

    key: str
    name: str
    memory_mib: int
    interconnect: str
    k8s_product: str
    """Value of the ``nvidia.com/gpu.product`` node label set by NVIDIA GPU feature discovery."""

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


GPUS: dict[str, GpuType] = {
    g.key: g
    for g in (
        GpuType(
            key="h100-80g",
            name="NVIDIA H100 80GB HBM3 (SXM)",
            memory_mib=81_559,
            interconnect="NVLink",
            k8s_product="NVIDIA-H100-80GB-HBM3",
        ),
        GpuType(
            key="h200-141g",
            name="NVIDIA H200 141GB HBM3e (SXM)",
            memory_mib=143_771,
            interconnect="NVLink",
            k8s_product="NVIDIA-H200",
        ),
        GpuType(
            key="l40s-48g",
            name="NVIDIA L40S 48GB GDDR6",
            memory_mib=46_068,
            interconnect="PCIe (no NVLink: tensor parallel > 1 is bandwidth-bound)",
            k8s_product="NVIDIA-L40S",
        ),
    )
}

MAX_GPUS_PER_NODE = 8
"""The planner does not span nodes: 8 GPUs is the largest tensor-parallel group it considers."""


def get_gpu(key: str) -> GpuType:
    """Return the GPU type for ``key`` or raise ``KeyError`` naming the known keys."""
    try:
        return GPUS[key]
    except KeyError:
        raise KeyError(f"unknown GPU {key!r}; known: {', '.join(sorted(GPUS))}") from None
