"""Which floating-point type training computes in, chosen by what the hardware runs fast.

bf16 autocast (weights, optimizer state and loss stay fp32) pays on CPUs with AMX-BF16 or AVX512-BF16
and on CUDA devices that support bf16; elsewhere it is emulated and slower than fp32, so ``auto`` keeps
fp32 there. Measured on a 2-core Xeon with AMX: 1.6-2.3x per training step at d256-d512.
"""

from __future__ import annotations

from mtedge.cpu import cpu_flags
from mtedge.errors import UserError

PRECISIONS = ("fp32", "bf16", "auto")
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_flags() -> tuple[str, ...]:
    """The bf16 instruction sets this CPU advertises (empty where /proc/cpuinfo does not say)."""
    flags = cpu_flags()
    return tuple(flag for flag in _CPU_BF16_FLAGS if flag in flags)


def resolve_precision(precision: str, device):
    """The autocast dtype for ``precision`` on ``device`` (a torch.device), or None for plain fp32."""
    import torch

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; supported: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    fast = (torch.cuda.is_bf16_supported() if device.type == "cuda" else bool(cpu_bf16_flags()))
    if precision == "auto":
        return torch.bfloat16 if fast else None
    return torch.bfloat16
