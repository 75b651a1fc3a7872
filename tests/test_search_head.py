"""The search head's two-stage top-k (mtedge/convert/search_head.py) against one TopK, in real onnxruntime
sessions: the same ids in the same order, equal scores going to the lower id, whatever k."""

from __future__ import annotations

import numpy as np
import pytest

from mtedge.convert.search_head import BLOCKED_TOP_K_MIN_VOCAB, top_k_block, top_k_nodes
from mtedge.engines.onnx_portability import portable_ir_version
from mtedge.engines.search_head import K_INPUT


def top_k_session(vocab: int, block: int | None, opset: int):
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        top_k_nodes("scores", vocab, opset, "values", "ids", block=block), "top_k",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["rows", "t", vocab]),
         helper.make_tensor_value_info(K_INPUT, TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["rows", "t", "k"]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["rows", "t", "k"])])
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=portable_ir_version(opsets))
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def sorted_ids(scores: np.ndarray, k: int) -> np.ndarray:
    """The k best ids per row, best first, equal scores by ascending id (numpy's stable sort)."""
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]


@pytest.mark.parametrize("opset", [17, 18])
def test_blocked_top_k_gives_one_topks_ids_and_order(opset):
    vocab, block = 600, 20                      # 30 blocks of 20 ids
    blocked, single = top_k_session(vocab, block, opset), top_k_session(vocab, None, opset)
    assert "ReduceMax" in _op_types(vocab, block, opset)
    rng = np.random.default_rng(0)
    for trial in range(10):
        # few distinct scores: exact ties inside a block and across blocks, and banned (-inf) ids
        scores = rng.integers(-4, 4, size=(6, 2, vocab)).astype(np.float32)
        scores[scores == -4] = -np.inf
        if trial == 0:
            scores[0, 0, :] = 1.0               # a row that is one tie
            scores[1, 0, :] = -np.inf           # a row with every id banned
        # k below, at and above the number of blocks (above: every block is taken), up to the whole vocabulary
        for k in (1, 2, 8, 29, 30, 31, 64, vocab):
            feed = {"scores": scores, K_INPUT: np.array([k], dtype=np.int64)}
            values, ids = blocked.run(None, feed)
            one_values, one_ids = single.run(None, feed)
            expected = sorted_ids(scores, k)
            np.testing.assert_array_equal(ids, expected)
            np.testing.assert_array_equal(one_ids, expected)       # onnxruntime's TopK: ties to the lower id
            np.testing.assert_array_equal(values, np.take_along_axis(scores, expected, axis=-1))
            np.testing.assert_array_equal(values, one_values)


def test_a_real_vocabulary_keeps_its_best_ids():
    vocab = 58101                               # opus-mt-en-de: 543 blocks of 107
    block = top_k_block(vocab)
    assert block == 107
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((4, 1, vocab)).astype(np.float32) * 4
    scores[:, :, 7] = -np.inf
    feed = {"scores": scores, K_INPUT: np.array([8], dtype=np.int64)}
    values, ids = top_k_session(vocab, block, 17).run(None, feed)
    np.testing.assert_array_equal(ids, sorted_ids(scores, 8))
    np.testing.assert_array_equal(values, np.take_along_axis(scores, ids, axis=-1))


def test_the_block_size_divides_the_vocabulary_or_there_are_no_blocks():
    assert top_k_block(58101) == 107            # 3 x 107 x 181: 107 x 107 x 8 = 91,592; 181 x 181 x 8 = 262,088
    assert top_k_block(8000) == 32              # 32 x 32 x 8 = 8,192
    assert top_k_block(65536) == 64             # 64 x 64 x 8 = 32,768; 128 x 128 x 8 = 131,072
    assert top_k_block(4099) is None            # prime: one TopK
    assert top_k_block(BLOCKED_TOP_K_MIN_VOCAB - 1) is None   # small: the extra nodes would cost more
    assert top_k_block("vocab") is None         # a symbolic dimension
    assert top_k_nodes("s", 4099, 17, "v", "i")[0].op_type == "TopK"


def _op_types(vocab: int, block: int, opset: int) -> list[str]:
    return [node.op_type for node in top_k_nodes("scores", vocab, opset, "values", "ids", block=block)]
