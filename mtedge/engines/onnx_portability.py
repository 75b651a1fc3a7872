"""What older onnxruntime releases refuse in the graphs mtedge writes, and what the graphs do instead.

The runtimes users install lag the writer: onnxruntime-gpu 1.31.1 is the newest CUDA build on PyPI in
December 2026, while the base install pins onnxruntime 1.32, and a GPU user runs the CPU path of that same
package too.

- **IR version.** ``onnx.helper.make_model`` stamps the IR version of the onnx library that writes the file
  (14 for onnx 1.23), and onnxruntime refuses a file newer than it knows. onnxruntime-gpu 1.31.1 reads up to
  IR 13, so it refused every lean decoder mtedge had written ("Unsupported model IR version: 14, max supported
  IR version: 13", seen on an NVIDIA H200), while the encoders, which the torch exporter writes at IR 8,
  loaded. Nothing in our graphs needs more than their opsets do: they declare that (:func:`portable_ir_version`).
- **MatMulNBits blocks.** onnxruntime 1.31 takes 8-bit ``MatMulNBits`` blocks of 16, 32, 64, 128 or 256
  values only ("Only block sizes 16, 32, 64, 128, and 256 are supported for MatMulNBits op, got: 1024", its
  CPU kernel refusing the reference model's int8_latency decoder), and 1.32 any power of two from 16 ("Only
  power-of-two block sizes >= 16 are supported ..., got: 768": a block spanning K failed wherever K was not a
  power of two, T5-base's 768 and mT5's 384 among them). The 8-bit weights are written in blocks both take
  (:func:`portable_nbits_block`). The int8-compute kernel quantizes the activations per block, so blocks of
  256 compute exactly what one block spanning a K of 512, 1024 or 2048 did (onnxruntime 1.32, measured
  bit-identical).
"""

from __future__ import annotations

import re

_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
PORTABLE_NBITS_BLOCKS = (256, 128, 64, 32, 16)   # what onnxruntime 1.31's MatMulNBits takes, largest first
_BLOCK_REFUSED = re.compile(r"Only ([\w ,>=-]+?) are supported for MatMulNBits op, got: (\d+)")


def portable_ir_version(opset_imports) -> int:
    """The lowest IR version that carries these opsets (contrib domains need no more than the default's)."""
    from onnx import helper

    return helper.find_min_ir_version_for(list(opset_imports), ignore_unknown=True)


def ir_too_new(message: str) -> tuple[int, int] | None:
    """(the file's IR version, the newest onnxruntime reads) when onnxruntime refused a file as too new."""
    found = _TOO_NEW.search(message)
    return (int(found.group(1)), int(found.group(2))) if found else None


def portable_nbits_block(k: int) -> int:
    """Values per block of an 8-bit ``MatMulNBits`` weight with K = ``k``: the largest block every onnxruntime
    we meet takes that divides ``k`` (so an embedding table's rows stay its tied ``lm_head``'s columns with no
    padding). Where none divides it (a width that is not a multiple of 16), the smallest block that holds
    min(``k``, 256) values, the last one padded with zeros."""
    dividing = next((block for block in PORTABLE_NBITS_BLOCKS if k % block == 0), None)
    return dividing or min(block for block in PORTABLE_NBITS_BLOCKS if block >= min(k, PORTABLE_NBITS_BLOCKS[0]))


def nbits_block_refused(message: str) -> tuple[int, str] | None:
    """(the graph's block size, what this onnxruntime takes, in its words) when it refused a ``MatMulNBits``
    block."""
    found = _BLOCK_REFUSED.search(message)
    return (int(found.group(2)), found.group(1)) if found else None
