"""Facts about the exporting machine: which int8 preset suits its CPU (whether a CUDA GPU is there:
:func:`mtedge.engines.cuda_available`)."""

from __future__ import annotations

import platform

from mtedge.cpu import cpu_flags

QUANT_PRESETS = ("avx512_vnni", "avx512", "avx2", "arm64")


def host_quant_preset() -> str:
    """The optimum dynamic-quantization preset that fits this CPU (int8 kernels differ per ISA)."""
    if platform.machine().lower() in {"arm64", "aarch64"}:
        return "arm64"
    flags = cpu_flags()
    if {"avx512_vnni", "avx512vnni"} & flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"
