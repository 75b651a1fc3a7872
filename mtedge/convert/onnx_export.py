"""ONNX export: optimum's encoder + merged decoder with KV cache, then int8 quantization.

Two int8 schemes (``--onnx-int8``):
- ``rowwise`` (default, :mod:`mtedge.convert.rowwise_int8`): one activation scale per row, so a sentence's
  translation does not depend on its batch neighbours; the tied ``lm_head`` and the embeddings are int8 too.
- ``dynamic``: onnxruntime's dynamic quantization as optimum's ``ORTQuantizer`` applies it (one activation
  scale per tensor: batch-dependent results; the ``lm_head`` stays float). Kept for comparison.
The ``int8_latency`` precision is ``rowwise`` with the decoder written for onnxruntime's one-row kernel, and
``int4`` is both graphs written for that kernel with 4-bit weights in blocks (``QUANTIZED_PRECISIONS``).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mtedge.convert.quiet import quiet_libraries
from mtedge.convert.rowwise_int8 import DEFAULT_INT4_BLOCK
from mtedge.convert.search_head import append_search_head
from mtedge.engines.onnx_engine import DECODER_FILE, ENCODER_FILE
from mtedge.errors import UserError

ONNX_FILES = (ENCODER_FILE, DECODER_FILE)
TASK = "text2text-generation-with-past"
# --onnx-decoder: "auto" writes the lean decoder (mtedge/convert/lean_decoder.py) where the family allows,
# "optimum" keeps optimum's traced one everywhere
DECODERS = ("auto", "optimum")
# Bumped whenever the written graphs change what they compute or how fast (2: the search head's fused
# LogSoftmax and no Add of an all-zero final_logits_bias; 3: int8 activations quantized by one QuantizeLinear;
# 4: the search head's two-stage top-k over a large vocabulary; 5: the lean decoder's in-place self-attention
# cache; 6: the weights in a side file, :func:`store_weights_apart`; 7: the lean decoder's output layer outside
# the step's If, with the vocabulary shortlist's second one beside it; 8: that shortlist layer int8 in the int8
# GEMM graph; 9: the lean decoder declares the lowest IR version its opsets need; 10: int8_latency's 8-bit weights
# in MatMulNBits blocks of at most 256 values, which onnxruntime 1.31 runs too; both in
# mtedge/engines/onnx_portability.py); a benchmark re-exports a cached bundle of another.
GRAPH_REVISION = 10
# Each graph's weights go to ``<graph>_data`` next to it (optimum's name for the side file; onnxruntime and
# optimum read it from there): onnxruntime 1.32 holds an inline graph's weights about twice once loaded
# (mtedge/DESIGN.md §4.17).
WEIGHTS_SUFFIX = "_data"


def _keep_only(directory: Path, keep: tuple[str, ...]) -> None:
    """Drop everything optimum wrote besides ``keep`` and their external-data files (``<name>_data``,
    ``<name>.data``): the runtime uses only the encoder and the merged decoder."""
    for path in list(directory.iterdir()):
        if not any(path.name == name or path.name.startswith(name + "_data") or path.name.startswith(name + ".data")
                   for name in keep):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def store_weights_apart(directory: Path) -> None:
    """Rewrite every graph of ``directory`` with its weights in ``<graph>_data`` (:data:`WEIGHTS_SUFFIX`)."""
    import onnx

    for path in sorted(Path(directory).glob("*.onnx")):
        model = onnx.load(str(path))   # with the weights of any side file it had
        for old in path.parent.glob(path.name + "?*"):
            old.unlink()               # onnx.save appends to an existing side file
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + WEIGHTS_SUFFIX, size_threshold=1024)
        # onnx 1.x creates the side file owner-only (0600): readable by whoever may read the graph
        (path.parent / (path.name + WEIGHTS_SUFFIX)).chmod(path.stat().st_mode & 0o777)


def export_onnx(model_dir: Path, out_dir: Path, family_optimum_type: str, dtype: str = "fp32", *,
                renormalize: bool = False, decoder: str = "auto") -> dict:
    """Export ``model_dir`` to ``out_dir`` (encoder_model.onnx + decoder_model_merged.onnx with the search
    head; ``renormalize``: the checkpoint's ``renormalize_logits``; ``decoder``: one of :data:`DECODERS`)."""
    from optimum.exporters.onnx import main_export

    from mtedge.convert import lean_decoder

    if decoder not in DECODERS:
        raise UserError(f"unknown ONNX decoder {decoder!r}; choose from {', '.join(DECODERS)}")

    out_dir = Path(out_dir)
    device = "cuda" if dtype == "fp16" else "cpu"
    with quiet_libraries():
        main_export(str(model_dir), output=out_dir, task=TASK, device=device, dtype=dtype,
                    do_validation=False,  # our own validation (translation parity) is stricter
                    library_name="transformers", local_files_only=True)
    missing = [n for n in ONNX_FILES if not (out_dir / n).is_file()]
    if missing:
        raise RuntimeError(f"optimum did not write {', '.join(missing)} for this {family_optimum_type} model")
    _keep_only(out_dir, ONNX_FILES)
    options = {"exporter": "optimum main_export", "task": TASK, "dtype": dtype, "device": device}
    # the lean graph is written in fp32 only; fp16 (CUDA) keeps optimum's
    reason = "--onnx-decoder optimum" if decoder == "optimum" else \
        "fp16 is traced by optimum" if dtype != "fp32" else lean_decoder.unsupported_reason(model_dir)
    if reason is None:
        for stale in out_dir.glob("decoder_model_merged.onnx?*"):   # optimum's side file of the traced graph
            stale.unlink()
        options.update(lean_decoder.build_decoder(model_dir, out_dir / DECODER_FILE, renormalize))
    else:
        options["decoder"] = f"optimum (traced; lean decoder not used: {reason})"
    # int8 graphs are made from this one and keep the head
    append_search_head(out_dir / DECODER_FILE, renormalize)
    options["search_head"] = "bans, top-k and log-softmax in the decoder graph (mtedge/convert/search_head.py)"
    options["graph_revision"] = GRAPH_REVISION
    return options


def quantization_config(preset: str):
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    factory = getattr(AutoQuantizationConfig, preset, None)
    if factory is None:
        raise UserError(f"unknown ONNX quantization preset {preset!r}")
    return factory(is_static=False, per_channel=True)


INT8_SCHEMES = ("rowwise", "dynamic")


@dataclass(frozen=True)
class QuantizedPrecision:
    """How a quantized ONNX precision is written: the kernel each graph's weight MatMuls are written for
    (``gemm``: MatMulIntegerToFloat, for many rows; ``gemv``: MatMulNBits, for one) and the weight width
    (``None``: int8's, 8 or 7 bits by ``--onnx-quant-preset``)."""

    encoder_kernel: str
    decoder_kernel: str
    weight_bits: int | None = None

    @property
    def batch_invariant(self) -> bool:
        from mtedge.engines.rowwise_int8 import kernels_batch_invariant

        return kernels_batch_invariant((self.encoder_kernel, self.decoder_kernel))

    @property
    def follows_int8_scheme(self) -> bool:
        """An int8 precision: ``--onnx-int8 dynamic`` writes it with onnxruntime's quantizer instead."""
        return self.weight_bits is None


# The encoder runs once per batch over every source token (many rows): int8 keeps it on the GEMM kernel in
# both int8 precisions. int4 writes it for MatMulNBits too: its 4-bit blocks are what halves the files.
QUANTIZED_PRECISIONS = {
    "int8": QuantizedPrecision("gemm", "gemm"),
    "int8_latency": QuantizedPrecision("gemm", "gemv"),
    "int4": QuantizedPrecision("gemv", "gemv", weight_bits=4),
}


def quantize_onnx(fp32_dir: Path, out_dir: Path, precision: str, scheme: str, preset: str,
                  int4_block: int = DEFAULT_INT4_BLOCK) -> dict:
    """The quantized ``precision`` (``QUANTIZED_PRECISIONS``) of every graph of ``fp32_dir`` into ``out_dir``
    (same file names); ``scheme`` is the int8 one (``--onnx-int8``), ``int4_block`` int4's values per scale."""
    if scheme not in INT8_SCHEMES:
        raise UserError(f"unknown ONNX int8 scheme {scheme!r}; choose from {', '.join(INT8_SCHEMES)}")
    how = QUANTIZED_PRECISIONS[precision]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = _quantize_dynamic(fp32_dir, out_dir, preset) if scheme == "dynamic" and how.follows_int8_scheme \
        else _quantize_rowwise(fp32_dir, out_dir, preset, how, int4_block)
    for name in ONNX_FILES:
        leftovers = float_matmuls_left(out_dir / name)
        if leftovers:
            raise RuntimeError(f"int8 quantization left {len(leftovers)} float MatMul(s) with constant weights "
                               f"in {name} (e.g. in graph {leftovers[0]}); subgraphs were not quantized")
    return options


def _quantize_rowwise(fp32_dir: Path, out_dir: Path, preset: str, how: QuantizedPrecision, int4_block: int) -> dict:
    from mtedge.convert.rowwise_int8 import quantize_rowwise, weight_bits_for_preset

    bits = how.weight_bits or weight_bits_for_preset(preset)
    kernels = {ENCODER_FILE: how.encoder_kernel, DECODER_FILE: how.decoder_kernel}
    rewritten = {name: quantize_rowwise(Path(fp32_dir) / name, out_dir / name, bits, kernels[name], int4_block)
                 for name in ONNX_FILES}
    block = {}
    if how.weight_bits:
        block = {"block_size": int4_block}
        weights = f"{bits}-bit, blocks of {int4_block} along K, one scale per block"
        embeddings = f"{bits}-bit, the same blocks (GatherBlockQuantized)"
    else:
        weights, embeddings = f"int8 ({bits}-bit values), one scale per output column", "int8, one scale per row"
    # each row is quantized on its own, but a graph on MatMulNBits rounds a row's sums by the rows in the call
    # (mtedge.engines.rowwise_int8): the server does not merge strangers' requests on it
    return {"quantization": "rowwise", "preset": preset, "kernels": kernels,
            "activations": "int8, one scale per row (token), computed at run time",
            "weights": weights, "weight_bits": bits, **block, "embeddings": embeddings,
            "batch_invariant": how.batch_invariant, "subgraphs": True, "rewritten": rewritten}


def _quantize_dynamic(fp32_dir: Path, out_dir: Path, preset: str) -> dict:
    """onnxruntime's dynamic int8 of every graph, ``If`` subgraphs of the merged decoder included (mtedge/DESIGN.md §4.3)."""
    from optimum.onnxruntime import ORTQuantizer

    config = quantization_config(preset)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".quant-") as scratch:
        for name in ONNX_FILES:
            # ORTQuantizer turns on extra_options["EnableSubgraph"] itself when the graph has If nodes.
            with quiet_libraries():
                quantizer = ORTQuantizer.from_pretrained(str(fp32_dir), file_name=name)
                quantizer.quantize(quantization_config=config, save_dir=scratch)
            quantized = Path(scratch) / name.replace(".onnx", "_quantized.onnx")
            shutil.move(str(quantized), out_dir / name)  # same names in every precision dir
    return {"quantization": "dynamic", "preset": preset, "per_channel": True, "batch_invariant": False,
            "weights_dtype": str(config.weights_dtype.name), "activations_dtype": str(config.activations_dtype.name),
            "subgraphs": True}


def float_matmuls_left(path: Path, through_transpose: bool = False) -> list[str]:
    """Names of (sub)graphs that still hold a float MatMul against a constant weight; with
    ``through_transpose``, also one against ``Transpose(constant)`` (how a tied ``lm_head`` reads the shared
    embedding, which onnxruntime's dynamic quantization leaves float)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    found: list[str] = []

    def walk(graph, constants: set[str]) -> None:
        # an initializer that is also an input is a default the caller may replace, not a weight
        constants = constants | ({init.name for init in graph.initializer} - {value.name for value in graph.input})
        weights = set(constants)
        if through_transpose:
            weights |= {node.output[0] for node in graph.node
                        if node.op_type == "Transpose" and node.input[0] in constants}
        for node in graph.node:
            if node.op_type == "MatMul" and any(i in weights for i in node.input):
                found.append(graph.name)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g, constants)
                for sub in attribute.graphs:
                    walk(sub, constants)

    walk(model.graph, set())
    return found
