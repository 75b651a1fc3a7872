"""Row-wise int8 for ONNX graphs: every weight MatMul runs int8 × int8 with one activation scale per row.

Why not onnxruntime's dynamic quantization: ``DynamicQuantizeLinear`` takes ONE scale for the whole
activation tensor, so the padded rows and the other sentences of a batch move the scale, and a sentence's
translation changed with its batch neighbours (5/20 webui lines differed greedy, 10/20 at beam 4). Here each
row — one token of one sentence — is quantized by its own absolute maximum, which nothing else in the batch
can touch: the output of a sentence is the same alone and in any batch (per-token scales are also finer).

What a MatMul against a constant weight ``W [K, N]`` (or ``Transpose(W)``: the tied ``lm_head`` reads the
shared embedding that way, and the ORT quantizer left it float) becomes::

    s_a   = max(|A|, over K) / 127                          # [..., 1], per row, never 0
    A_q   = QuantizeLinear(A as [rows, K], s_a as [rows], 128, axis=0)  # round(A / s_a) + 128: u8 x s8 kernels
    Y     = MatMulIntegerToFloat(A_q, W_q, s_a, s_w, 128)   # W_q int8, s_w [N] per column: (A_q - 128)·W_q·s_a·s_w

``MatMulIntegerToFloat`` is onnxruntime's contrib op (domain ``com.microsoft``): one GEMM that writes float.
The standard-op spelling (MatMulInteger → Cast → Mul by ``s_a·s_w``) is what onnxruntime fuses into it by
itself, but its fusion also swallows the bias ``Add`` that follows, and with a per-row ``s_a`` the fused
kernel then scales the bias too (onnxruntime 1.32: ``(A·W + b)·s`` instead of ``A·W·s + b``). Every
biased projection lost its bias that way — the reference model's encoder output was 14% off (rms) instead
of 2%, and greedy int8 translations agreed with fp32 on 9% of the Bible dev sentences instead of 61%.
Written out here without the bias, the op keeps the fast fused GEMM and the model's own ``Add`` stays.

Kernel ``gemv`` (the ``int8_latency`` precision's decoder) writes the same weights and scales for
onnxruntime's ``MatMulNBits`` instead (8-bit storage in blocks of at most 256 values along K, every block of
a column with that column's one scale, int8 compute). It takes the float activation and quantizes it inside
the kernel, each row on its own but with one scale per block, not per row (onnxruntime 1.32, measured: layers
wider than 256 get finer activation scales than the GEMM graph, so near-ties can resolve differently), and it
sums a call's odd row out in another order than its pairs (~1 ulp), so these graphs are not batch-invariant
(the export records it). One row at a time it streams the weights about twice as fast as
``MatMulIntegerToFloat``, whose GEMM is the faster one for many rows (mtedge/DESIGN.md §4.15). Its ``B`` is
``[N, K / block, block]`` uint8 (the int8 value + 128): a tied ``lm_head``'s columns are then the embedding's
rows with no transpose, so the table is stored that way once and the ``Gather`` reads it too. The blocks are
ones that onnxruntime 1.31 and 1.32 both run (mtedge/engines/onnx_portability.py).

Embedding tables read by ``Gather`` are stored int8 with one scale per row (weight-only; the gathered rows
are dequantized), which is what shrinks the files. ``If`` subgraphs (the merged decoder's two branches) are
rewritten too.

The vocabulary shortlist's output layer (the tied table's rows at a batch's candidate ids, gathered by the
first step and fed back by later ones, mtedge/engines/shortlist.py) stays int8 in the 8-bit GEMM graph: the
rows gathered as stored, and a ``MatMulIntegerToFloat`` against them with their row scales as column scales,
the full ``lm_head``'s arithmetic on fewer columns (a quarter of the float rows' bytes per step).

4-bit weights (``weight_bits=4``, the ``int4`` precision, ``gemv`` kernel only) are ``MatMulNBits``' own
format: blocks of 32, 64 or 128 values along K (``INT4_BLOCKS``), one scale per block, two values a byte (low
nibble first, offset by 8). The activations are quantized as for ``int8_latency`` (int8, per row, inside the
kernel), but onnxruntime 1.32's 4-bit kernel rounds a row's float sums differently with the number of rows in
the call (~1 ulp), so these graphs are not batch-invariant (the export records it). Embedding tables are
stored in the same blocks and read by onnxruntime's ``GatherBlockQuantized``, so a tied ``lm_head`` and the
embedding still share one table. A weight takes 0.53-0.63 of int8's bytes (mtedge/DESIGN.md §4.18).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtedge.engines.onnx_portability import portable_nbits_block
from mtedge.engines.rowwise_int8 import KERNEL_OPS, METADATA_KEY, SAFE_WEIGHT_BITS
from mtedge.engines.shortlist import HEAD_INPUT, HEAD_OUTPUT, ROWS_INPUT

QMAX = 127.0
# MatMul weights use 8 bits where the exporting CPU's int8 kernel has VNNI or AMX, and 7 bits elsewhere.
# On x86 CPUs without VNNI, MLAS's u8 x s8 kernel sums pairs of products with VPMADDUBSW, which saturates
# at int16 (mtedge.cpu): with 8-bit weights one logit of a test layer came out 4.8 off on an AVX2-only AMD
# EPYC. The 8th bit is worth having where it is safe: on the reference model, greedy int8 agreed with fp32 on
# 61% of 150 Bible dev sentences with 8-bit weights and on 50% with 7-bit ones (AMD EPYC Zen 4, 2026-12-02).
# The width is written into the graph (mtedge/engines/rowwise_int8.py) so that the engine can warn on a CPU
# that saturates.
FULL_WEIGHT_BITS = 8
CONTRIB_DOMAIN = "com.microsoft"
# which int8 MatMul kernel the graph is written for: many rows (MatMulIntegerToFloat) or one (MatMulNBits)
KERNELS = tuple(KERNEL_OPS)
NBITS_OFFSET = 128   # MatMulNBits stores unsigned values; 8-bit blocks without a zero-point input use 128
EPS = 1e-12  # scale floor: an all-zero row (a padding position) quantizes to zeros, not NaN
INT4_BITS = 4
# Values per scale of the 4-bit weights (``--onnx-int4-block``): smaller blocks lose less, larger ones read fewer
# bytes (a block's fp32 scale is a quarter of its 32 values' bytes again). On the reference model and at
# opus-mt's shape, 32 lost the least BLEU and 128 was the fastest at batch 1 (mtedge/DESIGN.md §4.18).
INT4_BLOCKS = (32, 64, 128)
DEFAULT_INT4_BLOCK = 32
INT4_OFFSET = 8      # 4-bit blocks without a zero-point input are unsigned with an implied zero point of 8


def weight_bits_for_preset(preset: str) -> int:
    """8-bit weights only for the preset whose kernel is known not to saturate (``--onnx-quant-preset``;
    its default is read from the exporting CPU). ARM kernels are unverified here: 7 bits."""
    return FULL_WEIGHT_BITS if preset == "avx512_vnni" else SAFE_WEIGHT_BITS


def quantize_weight_columns(weight: np.ndarray, bits: int = SAFE_WEIGHT_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric ``bits``-in-int8 per output column of ``weight [K, N]``: (int8 [K, N], fp32 scales [N])."""
    qmax = float(2 ** (bits - 1) - 1)
    scale = np.maximum(np.abs(weight).max(axis=0), EPS) / qmax
    return np.clip(np.round(weight / scale), -qmax, qmax).astype(np.int8), scale.astype(np.float32)


def quantize_weight_rows(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row of an embedding table ``[V, d]``: (int8 [V, d], fp32 scales [V, 1])."""
    scale = np.maximum(np.abs(weight).max(axis=1, keepdims=True), EPS) / QMAX
    return np.clip(np.round(weight / scale), -QMAX, QMAX).astype(np.int8), scale.astype(np.float32)


def quantize_weight_blocks(weight: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """``weight [K, N]`` as ``MatMulNBits`` 4-bit blocks: ``([N, blocks, block / 2] uint8, fp32 scales
    [N, blocks])``, K padded with zeros to whole blocks. Each block's scale maps its largest-magnitude value to
    -8 (the scale takes that value's sign), so all 16 levels are used: a step of max/8 instead of max/7."""
    k, n = weight.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), np.float32)
    padded[:k] = weight
    w = np.ascontiguousarray(padded.T).reshape(n, blocks, block)
    extreme = np.take_along_axis(w, np.abs(w).argmax(axis=2)[..., None], axis=2)[..., 0]
    scale = np.where(np.abs(extreme) < EPS, EPS, extreme / -8.0).astype(np.float32)
    q = (np.clip(np.round(w / scale[..., None]), -8, 7) + INT4_OFFSET).astype(np.uint8)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8), scale


class _Rewriter:
    """Rewrites one model's graphs in place; constants shared by several nodes are quantized once."""

    def __init__(self, model, weight_bits: int, kernel: str = "gemm", block: int = DEFAULT_INT4_BLOCK):
        import onnx

        self.onnx = onnx
        self.model = model
        self.weight_bits = weight_bits
        self.kernel = kernel
        self.block = block   # 4-bit weights only
        self.done: dict[tuple[str, str], list[str]] = {}
        self.quantized: dict[tuple[int, str], tuple[str, str]] = {}   # (graph, activation) -> (a_q, scale)
        self.prelude: dict[int, list] = {}   # graph -> nodes to put first (on constants that graph owns)
        # the graphs visited, held: both dicts above key on id(graph), and a subgraph's Python wrapper that is
        # let go may leave its id to the next one (the shortlist's two branches got one id, and the second
        # branch reused the first's quantized activation)
        self.visited: list = []
        self.counter = 0
        self.counts = {"matmul": 0, "transposed_matmul": 0, "gather": 0, "shortlist_matmul": 0}
        # the vocabulary shortlist's output layer (mtedge/convert/lean_decoder.py) keeps its gathered rows int8
        # where they are the tied lm_head's own 8-bit columns and the GEMM takes int8 B; elsewhere they are
        # dequantized by the embedding lookup's gather and multiplied in float
        self.int8_shortlist = weight_bits == FULL_WEIGHT_BITS and kernel == "gemm"
        self.opset = next((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), 0)
        if self.opset < 13:
            raise RuntimeError(f"row-wise int8 needs ONNX opset >= 13 (per-axis QuantizeLinear); the model has "
                               f"{self.opset}")

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"rowwise_int8/{stem}/{self.counter}"

    def run(self) -> dict:
        # the table the shortlist's rows come from, found first: a later step's branch may precede the gather
        self.shortlist_table = _shortlist_table(self.model.graph, self.onnx) if self.int8_shortlist else None
        self._graph(self.model.graph, {}, self.model.graph)
        if self.counts["shortlist_matmul"]:
            _retype_shortlist_rows(self.model, self.onnx)
        return self.counts

    # -- graphs ------------------------------------------------------------------------------------
    def _graph(self, graph, outer_constants: dict, top) -> None:
        """``outer_constants``: name -> (TensorProto, the graph that owns it), visible from subgraphs."""
        self.visited.append(graph)
        onnx = self.onnx
        constants = dict(outer_constants)
        # an initializer that is also a graph input is a default the caller may replace (the shortlist's rows
        # of the output layer, mtedge/engines/shortlist.py): not a weight
        inputs = {value.name for value in graph.input}
        constants.update({init.name: (init, graph) for init in graph.initializer if init.name not in inputs})
        transposed = {}  # Transpose output -> the constant it transposes (perm [1, 0])
        for node in graph.node:
            if (node.op_type == "Transpose" and node.input[0] in constants
                    and list(_attr(node, "perm", [1, 0])) == [1, 0]
                    and len(constants[node.input[0]][0].dims) == 2):
                transposed[node.output[0]] = node.input[0]
        new_nodes = []
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    self._graph(attribute.g, constants, top)
            if self.shortlist_table and node.op_type == "Gather" \
                    and list(node.input) == [self.shortlist_table, ROWS_INPUT]:
                new_nodes.append(self._shortlist_gather(node, constants[node.input[0]]))
            elif self.shortlist_table and node.op_type == "MatMul" and _carries_shortlist_rows(node.input[1]):
                new_nodes.extend(self._shortlist_matmul(graph, node, constants))
                self.counts["shortlist_matmul"] += 1
            elif node.op_type == "MatMul" and node.input[1] in constants \
                    and len(constants[node.input[1]][0].dims) == 2:
                new_nodes.extend(self._matmul(graph, node, constants[node.input[1]], transpose=False))
                self.counts["matmul"] += 1
            elif node.op_type == "MatMul" and node.input[1] in transposed:
                source = transposed[node.input[1]]
                new_nodes.extend(self._matmul(graph, node, constants[source], transpose=True))
                self.counts["transposed_matmul"] += 1
            elif node.op_type == "Gather" and node.input[0] in constants and _attr(node, "axis", 0) == 0 \
                    and len(constants[node.input[0]][0].dims) == 2 \
                    and constants[node.input[0]][0].data_type == onnx.TensorProto.FLOAT:
                new_nodes.extend(self._gather(node, constants[node.input[0]]))
                self.counts["gather"] += 1
            else:
                new_nodes.append(node)
        del graph.node[:]
        graph.node.extend(self.prelude.pop(id(graph), []) + new_nodes)
        # Transposes that fed only rewritten MatMuls are dead now; drop them (their float copy costs memory)
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        used |= _names_used_by_subgraphs(graph, onnx)
        keep = [n for n in graph.node if not (n.op_type == "Transpose" and n.output[0] in transposed
                                                and n.output[0] not in used)]
        del graph.node[:]
        graph.node.extend(keep)

    def _constant(self, key: tuple[str, str], make, owner) -> list[str]:
        """Add the initializers ``make()`` returns to ``owner`` once; returns their names."""
        if key not in self.done:
            names = []
            for stem, array in make():
                name = self.fresh(stem)
                owner.initializer.append(self.onnx.numpy_helper.from_array(array, name))
                names.append(name)
            self.done[key] = names
        return self.done[key]

    # -- ops ---------------------------------------------------------------------------------------
    def _matmul(self, graph, node, constant, transpose: bool) -> list:
        from onnx import helper, numpy_helper

        tensor, owner = constant
        if self.kernel == "gemv":
            return [self._matmul_nbits(node, tensor, owner, transpose)]
        if transpose and self.weight_bits == FULL_WEIGHT_BITS:
            w_q, w_scale = self._shared_table_transposed(tensor, owner)
        else:
            weight = numpy_helper.to_array(tensor).astype(np.float32)
            if transpose:
                weight = weight.T
            w_q, w_scale = self._constant((tensor.name, "T" if transpose else "N"),
                                          lambda: list(zip(("weight", "weight_scale"),
                                                           quantize_weight_columns(weight, self.weight_bits))),
                                          owner)
        k = int(tensor.dims[1] if transpose else tensor.dims[0])
        a_q, scale, quantize = self._quantized_rows(graph, node.input[0], k, node.name or "matmul")
        _, zero_point = self._shift_and_zero_point()
        return quantize + [
            # no bias input: see the module docstring
            helper.make_node("MatMulIntegerToFloat", [a_q, w_q, scale, w_scale, zero_point], [node.output[0]],
                             name=node.name, domain=CONTRIB_DOMAIN),
        ]

    def _matmul_nbits(self, node, tensor, owner, transpose: bool):
        """``MatMulNBits`` on the float activation: 8-bit weights ``[N, K / block, block]`` uint8 with one scale
        per column (repeated per block), or 4-bit ones in blocks of ``self.block`` with one scale per block."""
        from onnx import helper, numpy_helper

        four_bit = self.weight_bits == INT4_BITS
        k = int(tensor.dims[1] if transpose else tensor.dims[0])
        bits, block = (INT4_BITS, self.block) if four_bit else (FULL_WEIGHT_BITS, portable_nbits_block(k))
        if transpose and self.weight_bits in (FULL_WEIGHT_BITS, INT4_BITS):
            b_blocks, table_scale = self._table_rows(tensor, owner)
            scales = table_scale if four_bit else self._table_block_scales(tensor, owner)
            n = int(tensor.dims[0])
        else:
            weight = numpy_helper.to_array(tensor).astype(np.float32)
            weight = weight.T if transpose else weight
            n = weight.shape[1]
            blocks = (lambda: quantize_weight_blocks(weight, self.block)) if four_bit else \
                (lambda: _nbits_blocks(*quantize_weight_columns(weight, self.weight_bits), block))
            b_blocks, scales = self._constant((tensor.name, "nbits_T" if transpose else "nbits"),
                                              lambda: list(zip(("weight_blocks", "weight_scale"), blocks())), owner)
        return helper.make_node("MatMulNBits", [node.input[0], b_blocks, scales], [node.output[0]], name=node.name,
                                domain=CONTRIB_DOMAIN, K=k, N=n, bits=bits, block_size=block,
                                accuracy_level=4)   # 4: int8 compute (activations quantized per row and block)

    def _table_block_scales(self, tensor, owner) -> str:
        """The tied ``lm_head``'s ``MatMulNBits`` scales, [V, blocks]: each column's one scale (the embedding's
        row scale) in every block of it; the stored [V, 1] itself where one block spans the row."""
        from onnx import numpy_helper

        table_scale = self._table_rows(tensor, owner)[1]
        width = int(tensor.dims[1])
        blocks = -(-width // portable_nbits_block(width))
        if blocks == 1:
            return table_scale
        stored = next(i for i in owner.initializer if i.name == table_scale)
        (repeated,) = self._constant(
            (tensor.name, "row_scale_blocks"),
            lambda: [("table_scale_blocks", np.repeat(numpy_helper.to_array(stored), blocks, axis=1))], owner)
        return repeated

    def _table_scale_flat(self, tensor, owner) -> str:
        """The embedding's [V, 1] row scales as [V]: the tied ``lm_head``'s per-column scales."""
        from onnx import numpy_helper

        table_scale = self._table_rows(tensor, owner)[1]
        stored = next(i for i in owner.initializer if i.name == table_scale)
        (flat,) = self._constant((tensor.name, "row_scale_flat"),
                                 lambda: [("table_scale_flat", numpy_helper.to_array(stored).reshape(-1))], owner)
        return flat

    def _shortlist_gather(self, node, constant):
        """The shortlist's first step gathers the candidates' rows of the table as stored: int8 [k, d]."""
        from onnx import helper

        table_q, _ = self._table_rows(*constant)
        return helper.make_node("Gather", [table_q, ROWS_INPUT], [node.output[0]], name=node.name, axis=0)

    def _shortlist_matmul(self, graph, node, constants: dict) -> list:
        """Logits of the candidates from their int8 rows ``[d, k]`` (an input, or the first step's gather) and
        the table's row scales at those ids, gathered each step ([k] floats: cheaper than keeping them)."""
        from onnx import helper

        tensor, owner = constants[self.shortlist_table]
        scales = self._table_scale_flat(tensor, owner)
        a_q, scale, quantize = self._quantized_rows(graph, node.input[0], int(tensor.dims[1]), node.name or "matmul")
        _, zero_point = self._shift_and_zero_point()
        column_scales = self.fresh("shortlist/column_scales")
        return quantize + [
            helper.make_node("Gather", [scales, ROWS_INPUT], [column_scales], axis=0),
            helper.make_node("MatMulIntegerToFloat", [a_q, node.input[1], scale, column_scales, zero_point],
                             [node.output[0]], name=node.name, domain=CONTRIB_DOMAIN),
        ]

    def _shift_and_zero_point(self) -> list[str]:
        # uint8 with zero point 128: MLAS's fast x86 kernels are u8 x s8 (VNNI, AMX)
        return self._constant(("shift", ""), lambda: [("shift", np.array(128.0, np.float32)),
                                                       ("zero_point", np.array(128, np.uint8))], self.model.graph)

    def _quantized_rows(self, graph, a: str, k: int, stem: str) -> tuple[str, str, list]:
        """``(a_q, scale, nodes)``: ``a`` (last axis ``k``) as uint8 with one scale per row, and the nodes that
        compute them — none when an earlier MatMul of ``graph`` already quantized ``a`` (q, k and v read one
        input)."""
        from onnx import helper

        key = (id(graph), a)
        if key in self.quantized:
            return (*self.quantized[key], [])
        qmax, eps = self._constant(("qmax", ""), lambda: [("qmax", np.array(QMAX, np.float32)),
                                                           ("eps", np.array(EPS, np.float32))], self.model.graph)
        (rows_of_k,) = self._constant(("rows_of", str(k)), lambda: [("rows_of_k", np.array([-1, k], np.int64))],
                                      self.model.graph)
        (flat_shape,) = self._constant(("flat", ""), lambda: [("flat", np.array([-1], np.int64))], self.model.graph)
        t = lambda name: self.fresh(f"{stem}/{name}")  # noqa: E731
        absolute, row_max, floored, scale, rows, row_scales, n_rows, zero_points, rows_q, a_shape, a_q = (
            t(n) for n in ("abs", "rowmax", "floor", "scale", "rows", "row_scales", "n_rows", "zero_points",
                           "rows_q", "shape", "a_q"))
        nodes = [
            helper.make_node("Abs", [a], [absolute]),
            self._reduce_max_last_axis(absolute, row_max),
            helper.make_node("Max", [row_max, eps], [floored]),
            helper.make_node("Div", [floored, qmax], [scale]),
            # QuantizeLinear's per-axis form takes one scale per row of a 2-D tensor: its one kernel gives the
            # same bits as Div, Round, Add 128 and Cast (|a / scale| <= 127, so nothing saturates) in half the
            # time of those four passes over the activation ([128, 512] at b32 beam 4: 51 vs 106 us, 2 threads)
            helper.make_node("Reshape", [a, rows_of_k], [rows]),
            helper.make_node("Reshape", [scale, flat_shape], [row_scales]),
            helper.make_node("Shape", [row_scales], [n_rows]),
            helper.make_node("ConstantOfShape", [n_rows], [zero_points],
                             value=helper.make_tensor("zero_point", self.onnx.TensorProto.UINT8, [1], [128])),
            helper.make_node("QuantizeLinear", [rows, row_scales, zero_points], [rows_q], axis=0),
            helper.make_node("Shape", [a], [a_shape]),
            helper.make_node("Reshape", [rows_q, a_shape], [a_q]),
        ]
        self.quantized[key] = (a_q, scale)
        return a_q, scale, nodes

    def _reduce_max_last_axis(self, x: str, out: str):
        from onnx import helper

        if self.opset >= 18:  # axes became an input in opset 18
            (axes,) = self._constant(("axes", ""), lambda: [("axes", np.array([-1], np.int64))], self.model.graph)
            return helper.make_node("ReduceMax", [x, axes], [out], keepdims=1)
        return helper.make_node("ReduceMax", [x], [out], axes=[-1], keepdims=1)

    def _table_rows(self, tensor, owner) -> list[str]:
        """The int8 rows and [V, 1] scales of an embedding table, stored once per table; for the ``gemv``
        kernel the rows are stored as ``MatMulNBits`` blocks ([V, d / block, block] uint8) that a tied
        ``lm_head`` reads."""
        from onnx import numpy_helper

        def make():
            if self.weight_bits == INT4_BITS:   # the table's rows are the tied lm_head's columns
                return list(zip(("table", "table_scale"),
                                quantize_weight_blocks(numpy_helper.to_array(tensor).astype(np.float32).T, self.block)))
            rows, scales = quantize_weight_rows(numpy_helper.to_array(tensor).astype(np.float32))
            if self.kernel == "gemv":
                rows = _nbits_layout(rows.T, portable_nbits_block(rows.shape[1]))
            return [("table", rows), ("table_scale", scales)]

        return self._constant((tensor.name, "rows"), make, owner)

    def _shared_table_transposed(self, tensor, owner) -> tuple[str, str]:
        """A tied ``lm_head``'s int8 weight read from the embedding's int8 rows (8-bit columns of the
        transposed table are exactly its 8-bit rows): a Transpose that onnxruntime folds at load, so the
        file holds the table once (30 MB less at opus-mt's 58k x 512)."""
        from onnx import helper

        table_q = self._table_rows(tensor, owner)[0]
        key = (tensor.name, "rows_transposed")
        if key not in self.done:
            transposed = self.fresh("table_transposed")
            self.prelude.setdefault(id(owner), []).append(
                helper.make_node("Transpose", [table_q], [transposed], perm=[1, 0]))
            self.done[key] = [transposed, self._table_scale_flat(tensor, owner)]
        transposed, flat = self.done[key]
        return transposed, flat

    def _gather(self, node, constant) -> list:
        from onnx import helper

        tensor, owner = constant
        if self.weight_bits == INT4_BITS:
            return self._gather_blocks(node, tensor, owner)
        table_q, table_scale = self._table_rows(tensor, owner)
        t = lambda stem: self.fresh(f"{node.name or 'gather'}/{stem}")  # noqa: E731
        rows_q, rows_f, row_scales = t("rows_q"), t("rows_f"), t("row_scales")
        nodes = [
            helper.make_node("Gather", [table_q, node.input[1]], [rows_q], axis=0),
            helper.make_node("Cast", [rows_q], [rows_f], to=self.onnx.TensorProto.FLOAT),
            helper.make_node("Gather", [table_scale, node.input[1]], [row_scales], axis=0),
        ]
        if self.kernel == "gemv":   # [..., blocks, block] unsigned: back to signed [..., d]
            shift, _ = self._shift_and_zero_point()
            unshifted, signed, width = t("unshifted"), t("rows_signed"), int(tensor.dims[1])
            nodes += [helper.make_node("Sub", [rows_f, shift], [unshifted]),
                      *self._join_blocks(node.input[1], unshifted, signed, t, width, portable_nbits_block(width))]
            rows_f = signed
        return nodes + [helper.make_node("Mul", [rows_f, row_scales], [node.output[0]], name=node.name)]

    def _gather_blocks(self, node, tensor, owner) -> list:
        """Rows of a 4-bit table through ``GatherBlockQuantized``: ``[..., blocks, block]`` floats, reshaped to
        ``[..., d]``. It wants scales of the data's rank, so it reads the [V, blocks] scales that ``MatMulNBits``
        reads through a Reshape to [V, blocks, 1] (no copy in the file)."""
        from onnx import helper

        table_q, table_scale = self._table_rows(tensor, owner)
        vocab, dim = (int(d) for d in tensor.dims)
        key = (tensor.name, "scale_3d")
        if key not in self.done:
            (shape_3d,) = self._constant(("scale_3d_shape", str(vocab)),
                                         lambda: [("scale_3d_shape", np.array([vocab, -1, 1], np.int64))], owner)
            scale_3d = self.fresh("table_scale_3d")
            self.prelude.setdefault(id(owner), []).append(
                helper.make_node("Reshape", [table_scale, shape_3d], [scale_3d]))
            self.done[key] = [scale_3d]
        (scale_3d,) = self.done[key]
        t = lambda stem: self.fresh(f"{node.name or 'gather'}/{stem}")  # noqa: E731
        blocks = t("blocks")
        return [
            helper.make_node("GatherBlockQuantized", [table_q, node.input[1], scale_3d], [blocks],
                             domain=CONTRIB_DOMAIN, bits=INT4_BITS, block_size=self.block, gather_axis=0,
                             quantize_axis=2),
            *self._join_blocks(node.input[1], blocks, node.output[0], t, dim, self.block, name=node.name),
        ]

    def _join_blocks(self, ids: str, blocks: str, out: str, t, width: int, block: int, name: str = "") -> list:
        """Rows gathered by ``ids`` as ``[..., blocks, block]`` joined to ``[..., width]``: where ``block`` does
        not divide the width the last block holds zeros past it, sliced off (a copy of the rows each call, so
        only there)."""
        from onnx import helper

        (last_axis,) = self._constant(("minus_one", ""), lambda: [("minus_one", np.array([-1], np.int64))],
                                      self.model.graph)
        padded = width % block != 0
        ids_shape, flat_shape = t("ids_shape"), t("rows_shape")
        flat = t("rows_padded") if padded else out
        nodes = [helper.make_node("Shape", [ids], [ids_shape]),
                 helper.make_node("Concat", [ids_shape, last_axis], [flat_shape], axis=0),
                 helper.make_node("Reshape", [blocks, flat_shape], [flat], **({"name": name} if name else {}))]
        if padded:
            (start, end) = self._constant(("unpad", str(width)), lambda: [("zero", np.array([0], np.int64)),
                                                                          ("width", np.array([width], np.int64))],
                                          self.model.graph)
            nodes.append(helper.make_node("Slice", [flat, start, end, last_axis], [out], name=f"{name or out}/unpad"))
        return nodes


def _as_nbits(values: np.ndarray) -> np.ndarray:
    """int8 values as ``MatMulNBits`` stores 8-bit ones: unsigned, offset by its implied zero point."""
    return (values.astype(np.int16) + NBITS_OFFSET).astype(np.uint8)


def _nbits_layout(w_q: np.ndarray, block: int) -> np.ndarray:
    """Column-quantized ``w_q [K, N]`` int8 as ``MatMulNBits`` stores it: ``[N, blocks, block]`` uint8, K padded
    with zeros to whole blocks."""
    k, n = w_q.shape
    blocks = -(-k // block)
    padded = np.zeros((blocks * block, n), np.int8)
    padded[:k] = w_q
    return np.ascontiguousarray(_as_nbits(padded).T).reshape(n, blocks, block)


def _nbits_blocks(w_q: np.ndarray, scale: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """``w_q`` in ``MatMulNBits``' layout and its [N, blocks] scales (each column's one scale in every block)."""
    layout = _nbits_layout(w_q, block)
    return layout, np.repeat(scale[:, None], layout.shape[1], axis=1)


def _attr(node, name, default):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _carries_shortlist_rows(name: str) -> bool:
    """The lean decoder names every value that holds the shortlist's rows of the output layer after them."""
    return name == HEAD_INPUT or name.endswith(HEAD_OUTPUT)


def _subgraphs(graph, onnx):
    """Every graph nested in ``graph``'s nodes (``If`` branches and their own), depth first."""
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield attribute.g
                yield from _subgraphs(attribute.g, onnx)


def _shortlist_table(graph, onnx) -> str | None:
    """The table that a ``Gather`` by the shortlist's ids reads, in ``graph`` or any subgraph."""
    return next((node.input[0] for g in (graph, *_subgraphs(graph, onnx)) for node in g.node
                 if node.op_type == "Gather" and list(node.input[1:2]) == [ROWS_INPUT]), None)


def _retype_shortlist_rows(model, onnx) -> None:
    """The shortlist's rows are int8 now: its input (and the input's empty default), its output and every
    branch output that carries them."""
    for graph in (model.graph, *_subgraphs(model.graph, onnx)):
        for value in [*graph.input, *graph.output, *graph.value_info]:
            if _carries_shortlist_rows(value.name):
                value.type.tensor_type.elem_type = onnx.TensorProto.INT8
    for index, init in enumerate(model.graph.initializer):
        if init.name == HEAD_INPUT:
            empty = np.zeros(tuple(init.dims), np.int8)
            model.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(empty, HEAD_INPUT))


def _names_used_by_subgraphs(graph, onnx) -> set[str]:
    return {name for sub in _subgraphs(graph, onnx) for node in sub.node for name in node.input}


def _drop_unused_initializers(graph, onnx, used: set[str] | None = None) -> None:
    """Float weights that every reader now takes in int8 are removed (they are most of the file)."""
    used = set(used or ())
    used |= {name for node in graph.node for name in node.input} | _names_used_by_subgraphs(graph, onnx)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _drop_unused_initializers(attribute.g, onnx, used)
    keep = [init for init in graph.initializer if init.name in used or init.name in {o.name for o in graph.output}]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def quantize_rowwise(src: Path, dst: Path, weight_bits: int = SAFE_WEIGHT_BITS, kernel: str = "gemm",
                     block_size: int = DEFAULT_INT4_BLOCK) -> dict:
    """Write the row-wise int8 version of the ONNX model ``src`` to ``dst``; returns what was rewritten.
    ``kernel``: ``gemm`` (MatMulIntegerToFloat, fastest for many rows) or ``gemv`` (MatMulNBits, for one);
    ``block_size``: values per scale of 4-bit weights."""
    import json

    import onnx

    if weight_bits not in (SAFE_WEIGHT_BITS, FULL_WEIGHT_BITS, INT4_BITS):
        raise ValueError(f"row-wise weights use {INT4_BITS}, {SAFE_WEIGHT_BITS} or {FULL_WEIGHT_BITS} bits, "
                         f"not {weight_bits}")
    if kernel not in KERNELS:
        raise ValueError(f"row-wise int8 kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
    if weight_bits == INT4_BITS and kernel != "gemv":
        raise ValueError("4-bit weights are written for MatMulNBits only (kernel 'gemv')")
    if weight_bits == INT4_BITS and block_size not in INT4_BLOCKS:
        raise ValueError(f"4-bit blocks hold {', '.join(map(str, INT4_BLOCKS))} values, not {block_size}")
    model = onnx.load(str(src))
    counts = _Rewriter(model, weight_bits, kernel, block_size).run()
    _drop_unused_initializers(model.graph, onnx)
    if counts["matmul"] or counts["transposed_matmul"]:
        if not any(opset.domain == CONTRIB_DOMAIN for opset in model.opset_import):
            model.opset_import.append(onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        METADATA_KEY: json.dumps({"weight_bits": weight_bits, "activation_bits": 8,
                                                                  "kernel": kernel,
                                                                  **({"block_size": block_size}
                                                                     if weight_bits == INT4_BITS else {})})})
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return counts
