"""The contract between the export's row-wise int8 ONNX graphs and the ONNX engine: the weight width.

The export (``mtedge/convert/rowwise_int8.py``) writes 8-bit weights only where the exporting CPU's int8
kernel has VNNI or AMX, and records the width in the graph's metadata. A bundle with 8-bit weights run on an
x86 CPU without them gets a warning (its kernel sums pairs of products in 16 bits and can saturate; see
:mod:`mtedge.cpu`) that says how to export one that is safe there. Row-wise graphs without the record were
written before 2026-12-02, in a form whose biases onnxruntime's fusion lost (mtedge/DESIGN.md §4.12): they
get a warning to re-export.
"""

from __future__ import annotations

import json
import warnings

from mtedge.cpu import int8_pairs_saturate

METADATA_KEY = "mtedge_rowwise_int8"   # JSON: {"weight_bits": 7 or 8, "activation_bits": 8, "kernel": ...}
SAFE_WEIGHT_BITS = 7
# the kernel a graph's int8 MatMuls were written for, and the onnxruntime op that runs them; graphs written
# before the record had "kernel" are GEMM ones
KERNEL_OPS = {"gemm": "MatMulIntegerToFloat", "gemv": "MatMulNBits"}
# MatMulNBits (8- and 4-bit) sums a row in one order when the call pairs it with another row and in another
# when it is a call's odd one out: ~1 ulp apart from K = 128 on (onnxruntime 1.31 and 1.32, measured; a row's
# result does not depend on its partner). A graph on it is therefore not batch-invariant: a near-tie could
# resolve differently alone and in a batch. MatMulIntegerToFloat gives a row the same bits in every call.
BATCH_INVARIANT_KERNELS = frozenset({"gemm"})


def kernels_batch_invariant(kernels) -> bool:
    """Whether graphs on these kernels give a row the same result whatever else is in its batch."""
    return set(kernels) <= BATCH_INVARIANT_KERNELS


class Int8SaturationWarning(UserWarning):
    """8-bit int8 weights on a CPU whose int8 kernel can saturate them."""


class StaleInt8Warning(UserWarning):
    """Row-wise int8 graphs exported before the bias fix (mtedge/DESIGN.md §4.12)."""


def _record(metadata: dict) -> dict | None:
    """The export's JSON record in a graph's metadata (None: not a row-wise int8 graph)."""
    try:
        record = json.loads(metadata[METADATA_KEY])
    except (KeyError, ValueError, TypeError):
        return None
    return record if isinstance(record, dict) else None


def weight_bits_of(metadata: dict) -> int | None:
    """The weight width a row-wise int8 graph was written with (None: not such a graph, or older)."""
    try:
        return int((_record(metadata) or {})["weight_bits"])
    except (KeyError, ValueError, TypeError):
        return None


def int8_matmul_op(metadata: dict) -> str | None:
    """The onnxruntime op of a row-wise int8 graph's weight MatMuls (None: not such a graph)."""
    record = _record(metadata)
    return None if record is None else KERNEL_OPS.get(record.get("kernel", "gemm"))


def is_stale(options: dict) -> bool:
    """Whether the bundle's record of a precision (its ``options``) is a row-wise int8 from before the fix:
    the export records ``weight_bits`` since the fix, in the manifest as in the graph."""
    return options.get("quantization") == "rowwise" and "weight_bits" not in options


def check_graph(options: dict, metadata: dict, flags: set[str] | None = None) -> None:
    """Warn about a stale row-wise graph, or one whose weights are wider than this CPU's int8 kernel takes
    without saturating. ``options``: the bundle's record of the precision; ``metadata``: the graph's."""
    if is_stale(options):
        warnings.warn("this bundle's row-wise ONNX int8 was exported before 2026-12-02, in a form whose biases "
                      "onnxruntime's graph fusion loses (its translations drift from fp32); re-export it with "
                      "`mtedge export`", StaleInt8Warning, stacklevel=4)
        return
    bits = weight_bits_of(metadata)
    if bits is not None and bits > SAFE_WEIGHT_BITS and int8_pairs_saturate(flags):
        warnings.warn(f"this bundle's ONNX int8 weights use {bits} bits (exported on a CPU with VNNI); this CPU's "
                      f"int8 kernel sums pairs in 16 bits and can saturate them. Re-export with "
                      f"--onnx-quant-preset avx2 for {SAFE_WEIGHT_BITS}-bit weights, or use the ct2 engine",
                      Int8SaturationWarning, stacklevel=4)
