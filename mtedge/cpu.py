"""What this CPU can do, read from /proc/cpuinfo: its flags and which int8 GEMM kernel onnxruntime runs on it.

One home for these facts: the export picks the row-wise int8 weight width from them, the ONNX engine warns
when a bundle needs a kernel this CPU lacks, training picks bf16, and benchmark reports name the kernel.
"""

from __future__ import annotations

from pathlib import Path

# onnxruntime's MLAS picks its u8 x s8 GEMM (MatMulInteger, our row-wise int8) by CPUID at start-up, each
# check overriding the one before (onnxruntime/core/mlas/lib/platform.cpp: AVX2, AVX-VNNI, AVX512 core,
# AVX512-VNNI, AMX); it does not report the choice. Listed best first: (flag, name, saturates). The kernels
# without VNNI/AMX sum pairs of u8 x s8 products with VPMADDUBSW, which saturates at int16: 255 * 127 * 2
# overflows, 255 * 63 * 2 = 32,130 does not (onnxruntime's quantization docs call the cure "reduce_range").
MLAS_INT8_KERNELS = [("amx_int8", "AMX", False), ("avx512_vnni", "AVX512-VNNI", False),
                     ("avx512bw", "AVX512 core (VPMADDUBSW, 16-bit saturating pairs)", True),
                     ("avx_vnni", "AVX-VNNI", False),
                     ("avx2", "AVX2 (VPMADDUBSW, 16-bit saturating pairs)", True)]
NO_AVX2_KERNEL = ("SSE (no AVX2)", True)


def cpu_flags(path: str | Path = "/proc/cpuinfo") -> set[str]:
    """The first processor's flags (``Features`` on ARM); empty where the file does not say."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def _x86(flags: set[str]) -> bool:
    return bool({"sse2", "avx2", "avx512f"} & flags)


def mlas_int8_kernel(flags: set[str]) -> str:
    """The name of the u8 x s8 kernel onnxruntime selects on a CPU with ``flags``."""
    return next((name for flag, name, _ in MLAS_INT8_KERNELS if flag in flags), NO_AVX2_KERNEL[0])


def int8_pairs_saturate(flags: set[str] | None = None) -> bool:
    """Whether onnxruntime's int8 GEMM on this CPU can saturate 8-bit weights (x86 without VNNI or AMX).

    Not known for other architectures from the flags alone: they answer False, and 8-bit weights are
    only exported where VNNI is known to be there
    (:func:`mtedge.convert.rowwise_int8.weight_bits_for_preset`)."""
    flags = cpu_flags() if flags is None else flags
    if not _x86(flags):
        return False
    return next((saturates for flag, _, saturates in MLAS_INT8_KERNELS if flag in flags), NO_AVX2_KERNEL[1])
