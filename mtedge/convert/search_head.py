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
             top_log_probs float32 [rows, k]           LogSoftmax(x) at those ids (+ their bias when x is raw)

with ``x`` the raw logits, or the banned ones for a checkpoint with ``renormalize_logits`` (HF then takes
the log-softmax again after the bans; opus-mt's generation config sets it). The top k are taken on the
banned *raw* logits, as the numpy path does (``mtedge.decoding.logits``; HF greedy takes its argmax there,
and a log-softmax first could round two neighbouring logits into a tie), so the ids are the numpy path's;
the scores come from onnxruntime's LogSoftmax and differ from numpy's in float32 ulps. Which normalisation
the graph computes is fixed at export and written to its metadata; the engine uses the head only when it
matches the bundle's generation settings. The ``logits`` output stays, so the
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
    if opset < 13:
        raise RuntimeError(f"{path.name}: the search head needs ONNX opset >= 13 (Unsqueeze's axes input); "
                           f"the graph has {opset}")
    nodes = [
        helper.make_node("Constant", [], ["search_head/last"],
                         value=helper.make_tensor("last", TensorProto.INT64, [], [-1])),
        helper.make_node("Constant", [], ["search_head/time_axis"],
                         value=helper.make_tensor("time_axis", TensorProto.INT64, [1], [1])),
        # [bias_rows, vocab] -> [bias_rows, 1, vocab]: the head works on [rows, t, vocab] and takes the last
        # position of its [rows, t, k] results, not of the logits (a Gather there copied all of them: 1.8 ms
        # a step at opus-mt's b32 beam 4); t is 1 on every call but the first
        helper.make_node("Unsqueeze", [BIAS_INPUT, "search_head/time_axis"], ["search_head/bias"]),
    ]
    raw = LOGITS
    if logits_type != TensorProto.FLOAT:    # fp16 graphs: the search compares fp32 scores
        nodes.append(helper.make_node("Cast", [raw], ["search_head/logits_fp32"], to=TensorProto.FLOAT))
        raw = "search_head/logits_fp32"
    banned = "search_head/banned"
    nodes += [
        helper.make_node("Add", [raw, "search_head/bias"], [banned]),
        helper.make_node("TopK", [banned, K_INPUT], ["search_head/top_values", "search_head/top_ids"],
                         axis=-1, largest=1, sorted=1),
        # onnxruntime's fused LogSoftmax: one kernel instead of ReduceMax, Sub, Exp, ReduceSum (12.9 -> 8.9 ms
        # for the whole head on [128, 58k], 2 threads); then only the k chosen entries are read
        helper.make_node("LogSoftmax", [banned if renormalize else raw], ["search_head/log_softmax"], axis=-1),
        helper.make_node("GatherElements", ["search_head/log_softmax", "search_head/top_ids"],
                         ["search_head/top_log_softmax"], axis=-1),
    ]
    chosen = "search_head/top_log_softmax"
    if not renormalize:   # HF adds the bans after the log-softmax: + (banned - raw), i.e. + 0 or + -inf
        nodes += [
            helper.make_node("GatherElements", [raw, "search_head/top_ids"], ["search_head/top_raw"], axis=-1),
            helper.make_node("Sub", ["search_head/top_values", "search_head/top_raw"], ["search_head/top_bias"]),
            helper.make_node("Add", [chosen, "search_head/top_bias"], ["search_head/top_banned_log_softmax"]),
        ]
        chosen = "search_head/top_banned_log_softmax"
    nodes += [
        helper.make_node("Gather", [chosen, "search_head/last"], [LOG_PROBS_OUTPUT], axis=1),
        helper.make_node("Gather", ["search_head/top_ids", "search_head/last"], [IDS_OUTPUT], axis=1),
    ]
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

