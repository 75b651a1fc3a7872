"""The ONNX IR version of the graphs mtedge writes: the lowest their opsets need.

``onnx.helper.make_model`` stamps the IR version of the onnx library that writes the file (14 for onnx 1.23),
and onnxruntime refuses a file newer than it knows. The runtimes users install lag the writer:
onnxruntime-gpu 1.31.1, the newest CUDA build on PyPI in December 2026, reads up to IR 13, so it refused every
lean decoder mtedge had written ("Unsupported model IR version: 14, max supported IR version: 13", seen on an
NVIDIA H200), while the encoders, which the torch exporter writes at IR 8, loaded. Nothing in our graphs
needs more than their opsets do.
"""

from __future__ import annotations

import re

_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")


def portable_ir_version(opset_imports) -> int:
    """The lowest IR version that carries these opsets (contrib domains need no more than the default's)."""
    from onnx import helper

    return helper.find_min_ir_version_for(list(opset_imports), ignore_unknown=True)


def ir_too_new(message: str) -> tuple[int, int] | None:
    """(the file's IR version, the newest onnxruntime reads) when onnxruntime refused a file as too new."""
    found = _TOO_NEW.search(message)
    return (int(found.group(1)), int(found.group(2))) if found else None
