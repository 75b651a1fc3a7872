"""What the numbers were measured on: CPU model, cores, SIMD flags, package versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from mtedge.cpu import mlas_int8_kernel

# The packages whose versions decide the timings (mtedge/DESIGN.md §3 pins them).
PACKAGES = ["mtedge", "onnxruntime", "ctranslate2", "torch", "transformers", "optimum", "optimum-onnx",
            "numpy", "sentencepiece", "sacrebleu"]

# /proc/cpuinfo flag names of the SIMD extensions int8 (and bf16) kernels pick between.
SIMD_FLAGS = {"AVX2": "avx2", "AVX512": "avx512f", "AVX512-VNNI": "avx512_vnni", "AVX-VNNI": "avx_vnni",
              "AVX512-BF16": "avx512_bf16", "AMX-INT8": "amx_int8", "AMX-BF16": "amx_bf16"}


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_machine(gpu: bool = False) -> dict:
    model, flags = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "simd": {name: flag in flags for name, flag in SIMD_FLAGS.items()},
        "onnxruntime_int8_kernel": f"{mlas_int8_kernel(flags)} (inferred from the CPU flags)",
        "ct2_cpu_compute_types": _ct2_compute_types(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": None,
        "packages": package_versions(),
    }
    try:
        # a shared machine's timings are only as good as its quiet: state how busy it was
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        info["load_average"] = None
    try:
        info["memory_total_mb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)
    except (ValueError, OSError, AttributeError):
        info["memory_total_mb"] = None
    if gpu:
        info["gpu"] = _gpu_name()
    return info


def _ct2_compute_types() -> list[str] | None:
    try:
        from mtedge.bench.exporting import ct2_cpu_compute_types

        return sorted(ct2_cpu_compute_types())
    except ImportError:
        return None


def _gpu_name() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return "cuda"
