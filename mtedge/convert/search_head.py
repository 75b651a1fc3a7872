"""The search head: bans, top-k and log-softmax appended to the merged decoder, so a step's [rows, vocab]
logits never leave ONNX Runtime (the contract with the engine: ``mtedge/engines/search_head.py``).

Measured before this head on opus-mt's shape (58k ids, batch 32, beam 4, 2 threads): numpy's log-softmax
and top-k over the fp32 logits that ORT copied out took ~27% of a beam step. In the graph they run in
ORT's threaded kernels on a tensor that is never copied, and only ``[rows, k]`` values and ids come back.

Added to the main graph of ``decoder_model_merged.onnx`` (after the ``If`` that yields ``logits``)::

    inputs   search_bias   float32 [bias_rows, vocab]  0 or -inf: the bans (bad words, EOS before the
                                                       minimum length); bias_rows is 1 (the same bans
                                                       for every row) or rows
             search_k      int64 [1]                   candidates per row (2 * beam, 1 for greedy)
    outputs  top_ids       int64 [rows, k]             TopK(logits + bias): best first, ties to the lower id
             top_log_probs float32 [rows, k]           (value - row max) - log(sum(exp(x - row max)))

with ``x`` the raw logits, or the banned ones for a checkpoint with ``renormalize_logits`` (HF then takes
the log-softmax again after the bans; opus-mt's generation config sets it). The same steps, in the same
order and float32, as the numpy path (``mtedge.decoding.logits``): the top k are taken on the banned *raw*
logits (HF greedy takes its argmax there; a log-softmax first could round two neighbouring logits into a
tie). Which normalisation the graph computes is fixed at export and written to its metadata; the engine
uses the head only when it matches the bundle's generation settings. The ``logits`` output stays, so the
graph still serves a runtime that asks for logits.
"""

from __future__ import annotations

from pathlib import Path

from mtedge.engines.search_head import (BIAS_INPUT, IDS_OUTPUT, K_INPUT, LOG_PROBS_OUTPUT, MODE_METADATA, MODES,
                                        head_mode)

LOGITS = "logits"


def append_search_head(path: Path, renormalize: bool) -> bool:
    """Adds the head to the merged decoder at ``path`` in place; False if it already has one.
    ``renormalize``: the checkpoint's ``renormalize_logits`` (which log-softmax the head computes)."""
    import onnx
    from onnx import TensorProto, helper

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    if head_mode((o.name for o in graph.output), {p.key: p.value for p in model.metadata_props}):
        return False
    logits = next((o for o in graph.output if o.name == LOGITS), None)
    if logits is None:
        raise RuntimeError(f"{path.name} has no 'logits' output to put the search head on")
    logits_type = logits.type.tensor_type.elem_type
    vocab_dim = logits.type.tensor_type.shape.dim[2]
    vocab = vocab_dim.dim_value if vocab_dim.HasField("dim_value") else "vocab"

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes = [
        helper.make_node("Constant", [], ["search_head/last"],
                         value=helper.make_tensor("last", TensorProto.INT64, [], [-1])),
        # [rows, t, vocab] -> [rows, vocab]: the first call feeds the decoder start and the forced prefix
        helper.make_node("Gather", [LOGITS, "search_head/last"], ["search_head/last_logits"], axis=1),
    ]
    last = "search_head/last_logits"
    if logits_type != TensorProto.FLOAT:    # fp16 graphs: the search compares fp32 scores
        nodes.append(helper.make_node("Cast", [last], ["search_head/last_fp32"], to=TensorProto.FLOAT))
        last = "search_head/last_fp32"
    normalized = "search_head/banned" if renormalize else last
    nodes += [
        helper.make_node("Add", [last, BIAS_INPUT], ["search_head/banned"]),
        _reduce(helper, "ReduceMax", normalized, "search_head/row_max", opset),
        helper.make_node("Sub", [normalized, "search_head/row_max"], ["search_head/shifted"]),
        helper.make_node("Exp", ["search_head/shifted"], ["search_head/exp"]),
        _reduce(helper, "ReduceSum", "search_head/exp", "search_head/sum", opset),
        helper.make_node("Log", ["search_head/sum"], ["search_head/log_sum"]),
        helper.make_node("TopK", ["search_head/banned", K_INPUT], ["search_head/top_values", IDS_OUTPUT],
                         axis=-1, largest=1, sorted=1),
        helper.make_node("Sub", ["search_head/top_values", "search_head/row_max"], ["search_head/top_shifted"]),
        helper.make_node("Sub", ["search_head/top_shifted", "search_head/log_sum"], [LOG_PROBS_OUTPUT]),
    ]
    if opset >= 13:   # the axes input of ReduceSum (opset 13+) and ReduceMax (18+)
        nodes.insert(0, helper.make_node("Constant", [], ["search_head/axes"],
                                         value=helper.make_tensor("axes", TensorProto.INT64, [1], [-1])))
    graph.node.extend(nodes)
    graph.input.extend([
        helper.make_tensor_value_info(BIAS_INPUT, TensorProto.FLOAT, ["bias_rows", vocab]),
        helper.make_tensor_value_info(K_INPUT, TensorProto.INT64, [1]),
    ])
    # Defaults (an initializer named like an input makes it optional): a caller that knows nothing of the
    # head — optimum's ORTModelForSeq2SeqLM on the same files, a runtime that asks for logits — need not
    # feed these.
    if isinstance(vocab, int):
        graph.initializer.extend([
            helper.make_tensor(BIAS_INPUT, TensorProto.FLOAT, [1, vocab], [0.0] * vocab),
            helper.make_tensor(K_INPUT, TensorProto.INT64, [1], [1]),
        ])
    graph.output.extend([
        helper.make_tensor_value_info(LOG_PROBS_OUTPUT, TensorProto.FLOAT, ["batch_size", "k"]),
        helper.make_tensor_value_info(IDS_OUTPUT, TensorProto.INT64, ["batch_size", "k"]),
    ])
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                   MODE_METADATA: MODES[bool(renormalize)]})
    onnx.save(model, str(path))
    return True


def _reduce(helper, op: str, source: str, output: str, opset: int):
    """``op`` over the last axis, keeping it ([rows, 1]); axes as an input from opset 18, an attribute before."""
    if opset >= 18 or (op == "ReduceSum" and opset >= 13):
        return helper.make_node(op, [source, "search_head/axes"], [output], keepdims=1)
    return helper.make_node(op, [source], [output], axes=[-1], keepdims=1)
