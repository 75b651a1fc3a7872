"""Row-wise int8 (mtedge/convert/rowwise_int8.py) on small real ONNX graphs run by onnxruntime: each row's
result depends on that row alone, the tied lm_head (MatMul against Transpose(embedding)) and Gather tables
are quantized, and the error stays within int8 rounding."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mtedge.convert.rowwise_int8 import quantize_rowwise, quantize_weight_columns  # noqa: E402

K, N, V = 16, 12, 20


def _model(tmp_path, opset: int):
    """ids -> Gather(embedding [V, K]) -> MatMul(W [K, N]) -> y;  and x -> MatMul(Transpose(embedding)) -> logits."""
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(V, K)).astype(np.float32)
    weight = rng.normal(size=(K, N)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["embedding", "ids"], ["rows"], axis=0),
        helper.make_node("MatMul", ["rows", "weight"], ["y"]),
        helper.make_node("Transpose", ["embedding"], ["embedding_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "embedding_t"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "t"]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t", N]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "t", V])],
        [numpy_helper.from_array(embedding, "embedding"), numpy_helper.from_array(weight, "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    src = tmp_path / f"fp32-{opset}.onnx"
    onnx.save(model, str(src))
    return src, embedding, weight


def _run(path, ids, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": ids, "x": x})


@pytest.mark.parametrize("opset", [14, 18])  # ReduceMax's axes moved from attribute to input in opset 18
def test_rowwise_int8_rows_are_independent_and_close_to_fp32(tmp_path, opset):
    src, embedding, weight = _model(tmp_path, opset)
    dst = tmp_path / f"int8-{opset}.onnx"
    counts = quantize_rowwise(src, dst)
    assert counts == {"matmul": 1, "transposed_matmul": 1, "gather": 1}
    ops = {node.op_type for node in onnx.load(str(dst)).graph.node}
    assert "MatMulInteger" in ops and "Transpose" not in ops and "MatMul" not in ops
    assert {i.name for i in onnx.load(str(dst)).graph.initializer}.isdisjoint({"embedding", "weight"})  # float gone

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
