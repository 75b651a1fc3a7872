"""Row-wise int8 (mtedge/convert/rowwise_int8.py) on small real ONNX graphs run by onnxruntime: each row's
result depends on that row alone, the tied lm_head (MatMul against Transpose(embedding)) and Gather tables
are quantized, and the error stays within int8 rounding."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mtedge.convert.rowwise_int8 import (DEFAULT_INT4_BLOCK as INT4_BLOCK, quantize_rowwise,  # noqa: E402
                                         quantize_weight_blocks, quantize_weight_columns, quantize_weight_rows)
from mtedge.engines.onnx_portability import (PORTABLE_NBITS_BLOCKS, nbits_block_refused,  # noqa: E402
                                             portable_nbits_block)

K, N, V = 16, 12, 20


def _model(tmp_path, opset: int, k: int = K):
    """ids -> Gather(embedding [V, k]) -> MatMul(W [k, N]) -> y;  and x -> MatMul(Transpose(embedding)) -> logits."""
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(V, k)).astype(np.float32)
    weight = rng.normal(size=(k, N)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["embedding", "ids"], ["rows"], axis=0),
        helper.make_node("MatMul", ["rows", "weight"], ["y"]),
        helper.make_node("Transpose", ["embedding"], ["embedding_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "embedding_t"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "t"]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t", N]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "t", V])],
        [numpy_helper.from_array(embedding, "embedding"), numpy_helper.from_array(weight, "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    src = tmp_path / f"fp32-{opset}-{k}.onnx"
    onnx.save(model, str(src))
    return src, embedding, weight


def _run(path, ids, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": ids, "x": x})


@pytest.mark.parametrize("opset, bits", [(14, 7), (18, 7), (18, 8)])  # ReduceMax's axes: an input from opset 18
def test_rowwise_int8_rows_are_independent_and_close_to_fp32(tmp_path, opset, bits):
    src, embedding, weight = _model(tmp_path, opset)
    dst = tmp_path / f"int8-{opset}-{bits}.onnx"
    counts = quantize_rowwise(src, dst, weight_bits=bits)
    assert counts == {"matmul": 1, "transposed_matmul": 1, "gather": 1, "shortlist_matmul": 0}
    written = onnx.load(str(dst))
    ops = [node.op_type for node in written.graph.node]
    assert "MatMulIntegerToFloat" in ops and "MatMul" not in ops
    assert {i.name for i in written.graph.initializer}.isdisjoint({"embedding", "weight"})  # float gone
    tables = [i for i in written.graph.initializer if sorted(i.dims) == sorted([V, K])]
    if bits == 8:
        # the tied lm_head reads the lookup table's int8 rows through a Transpose: the table is stored once
        assert len(tables) == 1 and ops.count("Transpose") == 1
    else:
        assert len(tables) == 2 and "Transpose" not in ops   # 7-bit columns differ from the 8-bit rows

    rng = np.random.default_rng(1)
    ids = rng.integers(0, V, size=(3, 5)).astype(np.int64)
    x = rng.normal(size=(3, 5, K)).astype(np.float32)
    x[1] *= 1000.0  # a loud neighbour: with one scale per tensor it would crush rows 0 and 2
    x[2, 4] = 0.0   # an all-zero (padding) row must give zeros, not NaN
    y, logits = _run(dst, ids, x)
    alone_y, alone_logits = _run(dst, ids[:1], x[:1])
    assert np.array_equal(y[:1], alone_y) and np.array_equal(logits[:1], alone_logits)
    assert np.all(logits[2, 4] == 0.0) and np.isfinite(logits).all()
    fp32_y, fp32_logits = _run(src, ids, x)
    for got, want in ((y, fp32_y), (logits, fp32_logits)):
        scale = np.abs(want).max(axis=-1, keepdims=True) + 1e-9
        assert np.abs(got - want).max() / scale.max() < 0.03  # int8 rounding of both operands


def test_weight_columns_quantize_symmetrically():
    weight = np.array([[1.0, -0.5], [-2.0, 0.25]], np.float32)
    q, scale = quantize_weight_columns(weight)
    # 7 bits: u8 x s8 pair sums stay inside int16 on CPUs without VNNI (VPMADDUBSW saturates)
    assert q.dtype == np.int8 and q[1, 0] == -63 and q[0, 1] == -63 and q[1, 1] in (31, 32) and np.abs(q).max() <= 63
    assert np.allclose(q * scale, weight, atol=scale.max() / 2)
    q8, scale8 = quantize_weight_columns(weight, 8)
    assert q8[1, 0] == -127 and q8[0, 1] == -127 and q8[1, 1] in (63, 64)
    assert np.allclose(q8 * scale8, weight, atol=scale8.max() / 2)


def _biased_matmul(tmp_path):
    """x -> MatMul(W) -> Add(bias): every projection of a transformer has this shape."""
    rng = np.random.default_rng(2)
    weight = (rng.normal(size=(K, N)) * 0.05).astype(np.float32)
    bias = rng.normal(size=N).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["xw"]), helper.make_node("Add", ["xw", "bias"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t", N])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "biased.onnx"
    onnx.save(model, str(src))
    return src


@pytest.mark.parametrize("bits", [7, 8])
def test_the_bias_after_an_int8_matmul_is_added_once_and_unscaled(tmp_path, bits):
    # onnxruntime 1.32 fuses MatMulInteger -> Cast -> Mul(per-row scale) -> Add(bias) into one op whose
    # kernel scales the bias with the rows: with activation scales ~1e-3 the bias vanished from every
    # projection of the reference model. Small activations, a bias of order 1: its loss would show at once.
    src = _biased_matmul(tmp_path)
    dst = tmp_path / f"biased-int8-{bits}.onnx"
    quantize_rowwise(src, dst, weight_bits=bits)
    x = np.random.default_rng(3).normal(size=(2, 3, K)).astype(np.float32) * 0.01
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        (got,) = ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})
        (want,) = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()


@pytest.mark.parametrize("bits", [7, 8])
def test_the_one_row_kernel_computes_what_the_gemm_graph_computes(tmp_path, bits):
    # int8_latency's decoder: the same int8 weights and per-row activation scales, for MatMulNBits
    src, _, _ = _model(tmp_path, 18)
    gemm, gemv = tmp_path / "gemm.onnx", tmp_path / "gemv.onnx"
    quantize_rowwise(src, gemm, weight_bits=bits)
    assert quantize_rowwise(src, gemv, weight_bits=bits, kernel="gemv") == {
        "matmul": 1, "transposed_matmul": 1, "gather": 1, "shortlist_matmul": 0}
    written = onnx.load(str(gemv))
    ops = [node.op_type for node in written.graph.node]
    assert ops.count("MatMulNBits") == 2 and not {"MatMul", "MatMulIntegerToFloat", "Transpose"} & set(ops)
    blocks = [i for i in written.graph.initializer if i.data_type == TensorProto.UINT8]
    # 8-bit: the tied lm_head's blocks are the lookup table itself, stored once
    assert sorted(tuple(i.dims) for i in blocks) == (
        [(N, 1, K), (V, 1, K)] if bits == 8 else [(N, 1, K), (V, 1, K), (V, 1, K)])
    assert json.loads({p.key: p.value for p in written.metadata_props}["mtedge_rowwise_int8"])["kernel"] == "gemv"
    from mtedge.engines.rowwise_int8 import int8_matmul_op   # what the bench records as having run

    ops_run = {path.name: int8_matmul_op(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                                         .get_modelmeta().custom_metadata_map) for path in (gemm, gemv, src)}
    assert ops_run == {"gemm.onnx": "MatMulIntegerToFloat", "gemv.onnx": "MatMulNBits", src.name: None}

    rng = np.random.default_rng(2)
    ids = rng.integers(0, V, size=(3, 5)).astype(np.int64)
    x = rng.normal(size=(3, 5, K)).astype(np.float32)
    x[1] *= 1000.0
    x[2, 4] = 0.0
    for got, want in zip(_run(gemv, ids, x), _run(gemm, ids, x)):
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    alone = _run(gemv, ids[:1], x[:1])
    assert all(np.array_equal(batched[:1], one) for batched, one in zip(_run(gemv, ids, x), alone))
    with pytest.raises(ValueError, match="gemm, gemv"):
        quantize_rowwise(src, tmp_path / "x.onnx", kernel="gemx")


def _int8_compute(a: np.ndarray, w_q: np.ndarray, w_scale: np.ndarray, block: int) -> np.ndarray:
    """What MatMulNBits' int8 compute does with ``a [..., k]`` and int8 ``w_q [k, n]`` (column scales): each row's
    activations quantized to int8 per block of ``block`` columns (symmetric: times 127 / max in float32, rounded
    half to even), the int8 products summed per block and scaled, the blocks summed (onnxruntime 1.32, found by
    matching it to 1e-7)."""
    k = w_q.shape[0]
    blocks = -(-k // block)
    padded = np.zeros((*a.shape[:-1], blocks * block), np.float32)
    padded[..., :k] = a
    pieces = padded.reshape(*a.shape[:-1], blocks, block)
    top = np.abs(pieces).max(axis=-1, keepdims=True)
    inverse = np.divide(np.float32(127.0), top, out=np.zeros_like(top), where=top > 0)
    a_q = np.rint(pieces * inverse).astype(np.float64)
    scale = top.astype(np.float64) / 127.0
    w_pieces = np.zeros((blocks * block, w_q.shape[1]))
    w_pieces[:k] = w_q
    sums = np.einsum("...bc,bcn->...bn", a_q, w_pieces.reshape(blocks, block, -1)) * scale
    return sums.sum(axis=-2) * w_scale


def test_the_one_row_kernels_blocks_are_ones_every_onnxruntime_takes():
    # onnxruntime 1.31 takes blocks of 16-256 values only, 1.32 powers of two from 16: the largest that divides K,
    # else one that holds min(K, 256) values with the last block padded
    assert PORTABLE_NBITS_BLOCKS == (256, 128, 64, 32, 16)
    assert [portable_nbits_block(k) for k in (16, 64, 128, 256, 384, 512, 768, 1024, 2048, 3072, 96, 40, 300)] == \
        [16, 64, 128, 256, 128, 256, 256, 256, 256, 256, 32, 64, 256]
    assert nbits_block_refused("matmul_nbits.cc:146 ... Only block sizes 16, 32, 64, 128, and 256 are supported for "
                               "MatMulNBits op, got: 1024") == (1024, "block sizes 16, 32, 64, 128, and 256")
    assert nbits_block_refused("Only power-of-two block sizes >= 16 are supported for MatMulNBits op, got: 768") == \
        (768, "power-of-two block sizes >= 16")
    assert nbits_block_refused("Unsupported model IR version: 14, max supported IR version: 13") is None


# 4 whole blocks of 256; 2 blocks of 256, the last padded; one block of 64, padded
@pytest.mark.parametrize("width", [1024, 300, 40])
def test_wide_layers_in_the_one_row_kernel_compute_what_its_int8_arithmetic_says(tmp_path, width):
    # the reference model's FFN (K = 1024) as one block spanning K was refused by onnxruntime 1.31, and a K that is
    # not a power of two by 1.32: the weights are written in blocks both take, each column's one scale repeated
    src, embedding, weight = _model(tmp_path, 18, width)
    dst = tmp_path / "gemv.onnx"
    quantize_rowwise(src, dst, weight_bits=8, kernel="gemv")
    written = onnx.load(str(dst))
    block = portable_nbits_block(width)
    blocks = -(-width // block)
    assert {helper.get_attribute_value(a) for node in written.graph.node if node.op_type == "MatMulNBits"
            for a in node.attribute if a.name == "block_size"} == {block}
    # the tied lm_head's blocks are the lookup table itself, stored once
    assert sorted(tuple(i.dims) for i in written.graph.initializer if i.data_type == TensorProto.UINT8) == \
        [(N, blocks, block), (V, blocks, block)]

    rng = np.random.default_rng(8)
    ids = rng.integers(0, V, size=(3, 5)).astype(np.int64)
    x = rng.normal(size=(3, 5, width)).astype(np.float32)
    x[1] *= 1000.0
    x[2, 4] = 0.0
    x[0, 1, : width // 2] *= 1e-3   # one block of a row far smaller than the next: the scales are per block
    y, logits = _run(dst, ids, x)
    table_q, table_scale = quantize_weight_rows(embedding)
    w_q, w_scale = quantize_weight_columns(weight, 8)
    rows = table_q[ids].astype(np.float32) * table_scale[ids]       # the Gather: the stored rows, dequantized
    for got, want in ((y, _int8_compute(rows, w_q, w_scale, block)),
                      (logits, _int8_compute(x, table_q.T, table_scale[:, 0], block))):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    # each row is quantized on its own, but MatMulNBits sums the odd row out of a call in another order than a
    # pair's rows (~1 ulp): close in any batch, not always equal, so the export records it as not batch-invariant
    for part in (np.s_[:1, :1], np.s_[:1, :2], np.s_[:1, :5]):
        for batched, alone in zip((y, logits), _run(dst, ids[part], x[part])):
            np.testing.assert_allclose(alone, batched[part], rtol=0, atol=1e-5 * np.abs(batched).max())


def test_the_weight_width_is_recorded_and_checked_against_the_cpu(tmp_path):
    from mtedge.convert.rowwise_int8 import weight_bits_for_preset
    from mtedge.engines.rowwise_int8 import Int8SaturationWarning, StaleInt8Warning, check_graph, weight_bits_of

    assert weight_bits_for_preset("avx512_vnni") == 8
    assert {weight_bits_for_preset(p) for p in ("avx512", "avx2", "arm64")} == {7}
    src = _biased_matmul(tmp_path)
    for bits in (7, 8):
        record = {"quantization": "rowwise", "weight_bits": bits}   # the manifest's record of the export
        quantize_rowwise(src, tmp_path / f"{bits}.onnx", weight_bits=bits)
        metadata = ort.InferenceSession(str(tmp_path / f"{bits}.onnx"),
                                        providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        assert weight_bits_of(metadata) == bits
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_graph(record, metadata, {"sse2", "avx2", "avx512bw", "avx512_vnni"})   # VNNI never saturates
            if bits == 7:
                check_graph(record, metadata, {"sse2", "avx2"})   # 7 bits are safe everywhere
        if bits == 8:
            with pytest.warns(Int8SaturationWarning, match="--onnx-quant-preset avx2"):
                check_graph(record, metadata, {"sse2", "avx2"})
    assert weight_bits_of({}) is None
    # a row-wise graph without the record predates the bias fix; other graphs carry no record at all
    with pytest.warns(StaleInt8Warning, match="re-export"):
        check_graph({"quantization": "rowwise"}, {"mtedge_search_head": "log_softmax_after_bans"}, {"avx512_vnni"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_graph({}, {}, {"sse2", "avx2"})
        check_graph({"quantization": "dynamic"}, {}, {"sse2", "avx2"})
    with pytest.raises(ValueError, match="4, 7 or 8 bits"):
        quantize_rowwise(src, tmp_path / "x.onnx", weight_bits=5)
    with pytest.raises(ValueError, match="4-bit weights are written for MatMulNBits only"):
        quantize_rowwise(src, tmp_path / "x.onnx", weight_bits=4)   # the GEMM kernel takes no 4-bit blocks


def test_matmuls_reading_one_activation_quantize_it_once(tmp_path):
    # q, k and v projections read the same hidden states: one per-row quantization serves all three
    rng = np.random.default_rng(4)
    weights = [rng.normal(size=(K, N)).astype(np.float32) for _ in range(3)]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"]) for i in range(3)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", K])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["b", "t", N]) for i in range(3)],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src, dst = tmp_path / "qkv.onnx", tmp_path / "qkv-int8.onnx"
    onnx.save(model, str(src))
    quantize_rowwise(src, dst)
    ops = [node.op_type for node in onnx.load(str(dst)).graph.node]
    assert ops.count("MatMulIntegerToFloat") == 3 and ops.count("Abs") == 1 and ops.count("QuantizeLinear") == 1
    x = rng.normal(size=(2, 3, K)).astype(np.float32)
    got = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    # what the graph must compute, step by step: per-row scale, round half to even, + 128, exact int GEMM
    scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-12) / 127
    x_q = np.round(x / scale).astype(np.int64)
    for y, w in zip(got, weights):
        assert np.abs(y - x @ w).max() < 0.03 * np.abs(x @ w).max()
        w_q, w_scale = quantize_weight_columns(w)     # quantize_rowwise's default width
        exact = (x_q @ w_q.astype(np.int64)).astype(np.float64) * scale * w_scale.reshape(-1)
        np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-6 * np.abs(exact).max())


def _unpack_blocks(blocks: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """``MatMulNBits``' 4-bit blocks back to the float ``[K, N]`` weight they stand for."""
    low, high = (blocks & 15).astype(np.int16) - 8, (blocks >> 4).astype(np.int16) - 8
    values = np.stack([low, high], axis=-1).reshape(blocks.shape[0], blocks.shape[1], -1)
    return (values * scales[..., None]).reshape(blocks.shape[0], -1)[:, :k].T


def test_weight_blocks_use_all_sixteen_levels_and_pad_the_last_block():
    rng = np.random.default_rng(5)
    weight = rng.normal(size=(40, 3)).astype(np.float32)   # 40 = a block of 32 and 8 padded ones
    weight[7, 1] = -3.5                                     # column 1, block 0: its extreme is negative
    weight[2, 2], weight[35, 2] = 4.0, 0.0                  # column 2, block 0: positive
    blocks, scales = quantize_weight_blocks(weight, 32)
    assert blocks.dtype == np.uint8 and blocks.shape == (3, 2, 16) and scales.shape == (3, 2)
    restored = _unpack_blocks(blocks, scales, 40)
    # the largest magnitude of a block is level -8 exactly, whatever its sign; the rest within half a step
    assert restored[7, 1] == pytest.approx(-3.5) and restored[2, 2] == pytest.approx(4.0)
    assert np.all(np.abs(restored - weight) <= np.abs(np.repeat(scales.T, 32, axis=0)[:40]) / 2 + 1e-6)
    # low nibble first: value 0 of column 1 is the low half of its first byte
    first = int(np.clip(np.round(weight[0, 1] / scales[1, 0]), -8, 7)) + 8
    assert blocks[1, 0, 0] & 15 == first
    zero = np.zeros((32, 1), np.float32)
    zero_blocks, zero_scales = quantize_weight_blocks(zero, 32)   # an all-zero block: zeros, not NaN
    assert np.isfinite(zero_scales).all() and not _unpack_blocks(zero_blocks, zero_scales, 32).any()


def test_four_bit_graphs_share_the_table_and_keep_rows_independent(tmp_path):
    # int4: both MatMuls and the Gather read 4-bit blocks; K (16) is narrower than a block, so it is padded
    src, embedding, weight = _model(tmp_path, 18)
    dst = tmp_path / "int4.onnx"
    assert quantize_rowwise(src, dst, weight_bits=4, kernel="gemv") == {
        "matmul": 1, "transposed_matmul": 1, "gather": 1, "shortlist_matmul": 0}
    written = onnx.load(str(dst))
    ops = [node.op_type for node in written.graph.node]
    assert ops.count("MatMulNBits") == 2 and ops.count("GatherBlockQuantized") == 1
    assert not {"MatMul", "MatMulIntegerToFloat", "Gather"} & set(ops)
    tables = [i for i in written.graph.initializer if i.data_type == TensorProto.UINT8 and i.dims[0] == V]
    assert [tuple(i.dims) for i in tables] == [(V, 1, INT4_BLOCK // 2)]   # the lm_head and the Gather share it
    record = json.loads({p.key: p.value for p in written.metadata_props}["mtedge_rowwise_int8"])
    assert record == {"weight_bits": 4, "activation_bits": 8, "kernel": "gemv", "block_size": INT4_BLOCK}

    rng = np.random.default_rng(6)
    ids = rng.integers(0, V, size=(3, 5)).astype(np.int64)
    x = rng.normal(size=(3, 5, K)).astype(np.float32)
    x[1] *= 1000.0
    x[2, 4] = 0.0
    y, logits = _run(dst, ids, x)
    alone = _run(dst, ids[:1], x[:1])
    # each row is quantized on its own, but onnxruntime 1.32's 4-bit kernel rounds a row's float sums
    # differently with the number of rows (~1 ulp), so the export records int4 as not batch-invariant
    for batched, one in zip((y, logits), alone):
        np.testing.assert_allclose(batched[:1], one, rtol=0, atol=1e-5 * np.abs(one).max())
    assert np.all(logits[2, 4] == 0.0) and np.isfinite(logits).all()
    # what the 4-bit weights stand for, times the activations (which the kernel quantizes to int8)
    table = _unpack_blocks(*quantize_weight_blocks(embedding.T, INT4_BLOCK), K).T      # [V, K]
    w4 = _unpack_blocks(*quantize_weight_blocks(weight, INT4_BLOCK), K)
    for got, want in ((y, table[ids] @ w4), (logits, x @ table.T)):
        scale = np.abs(want).max(axis=-1, keepdims=True) + 1e-9
        assert np.abs(got - want).max() / scale.max() < 0.02
    fp32_y, fp32_logits = _run(src, ids, x)
    for got, want in ((y, fp32_y), (logits, fp32_logits)):
        assert np.abs(got - want).max() / (np.abs(want).max() + 1e-9) < 0.25   # 4-bit rounding of the weights
