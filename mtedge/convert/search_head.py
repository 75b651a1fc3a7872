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
graph still serves a runtime that asks for logits. Over a vocabulary of 4096 ids or more the top k are taken
in two stages, best blocks first (``top_k_nodes``), with one TopK's results.
"""

from __future__ import annotations

from pathlib import Path

from mtedge.engines.search_head import (BIAS_INPUT, IDS_OUTPUT, K_INPUT, LOG_PROBS_OUTPUT, MODE_METADATA, MODES,
                                        head_mode)

LOGITS = "logits"
# The two-stage top-k (``top_k_nodes``) for vocabularies of at least this many ids, with blocks of a size that
# divides the vocabulary within BLOCK_SIZES; one TopK otherwise (below it, the extra nodes cost what they save)
BLOCKED_TOP_K_MIN_VOCAB = 4096
BLOCK_SIZES = range(16, 1025)
# The k the block size is chosen for: beam 4's 2 x 4 candidates per row (the default beam)
BLOCK_SIZE_FOR_K = 8


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
    nodes = []
    raw = LOGITS
    if logits_type != TensorProto.FLOAT:    # fp16 graphs: the search compares fp32 scores
        nodes.append(helper.make_node("Cast", [raw], ["search_head/logits_fp32"], to=TensorProto.FLOAT))
        raw = "search_head/logits_fp32"
    nodes += search_head_nodes(raw, vocab, opset, renormalize)
    inputs, defaults, outputs = head_interface(vocab)
    graph.node.extend(nodes)
    graph.input.extend(inputs)
    graph.initializer.extend(defaults)
    graph.output.extend(outputs)
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                   MODE_METADATA: MODES[bool(renormalize)]})
    onnx.save(model, str(path))
    return True


def head_interface(vocab, bias_columns=None) -> tuple[list, list, list]:
    """The head's graph ``(inputs, their defaults, outputs)``. ``bias_columns``: the bias input's declared width
    when it is not always ``vocab`` (the lean decoder's shortlist feeds one column per candidate)."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(BIAS_INPUT, TensorProto.FLOAT, ["bias_rows", bias_columns or vocab]),
              helper.make_tensor_value_info(K_INPUT, TensorProto.INT64, [1])]
    # Defaults (an initializer named like an input makes it optional): a caller that knows nothing of the
    # head — optimum's ORTModelForSeq2SeqLM on the same files, a runtime that asks for logits — need not
    # feed these.
    defaults = [helper.make_tensor(BIAS_INPUT, TensorProto.FLOAT, [1, vocab], [0.0] * vocab),
                helper.make_tensor(K_INPUT, TensorProto.INT64, [1], [1])] if isinstance(vocab, int) else []
    outputs = [helper.make_tensor_value_info(LOG_PROBS_OUTPUT, TensorProto.FLOAT, ["batch_size", "k"]),
               helper.make_tensor_value_info(IDS_OUTPUT, TensorProto.INT64, ["batch_size", "k"])]
    return inputs, defaults, outputs


def search_head_nodes(raw: str, vocab, opset: int, renormalize: bool, *, prefix: str = "search_head",
                      bias: str = BIAS_INPUT, ids: str = IDS_OUTPUT, log_probs: str = LOG_PROBS_OUTPUT) -> list:
    """The head's nodes on the float logits ``raw`` [rows, t, vocab]: ``bias`` [bias_rows, vocab] added, the top
    ``search_k`` ids and their log-softmax scores of the last position as ``ids`` and ``log_probs`` [rows, k]
    (the module docstring). ``prefix`` names the intermediate values (unique per graph)."""
    from onnx import TensorProto, helper

    def name(short: str) -> str:
        return f"{prefix}/{short}"

    nodes = [
        helper.make_node("Constant", [], [name("last")], value=helper.make_tensor("last", TensorProto.INT64, [], [-1])),
        helper.make_node("Constant", [], [name("time_axis")],
                         value=helper.make_tensor("time_axis", TensorProto.INT64, [1], [1])),
        # [bias_rows, vocab] -> [bias_rows, 1, vocab]: the head works on [rows, t, vocab] and takes the last
        # position of its [rows, t, k] results, not of the logits (a Gather there copied all of them: 1.8 ms
        # a step at opus-mt's b32 beam 4); t is 1 on every call but the first
        helper.make_node("Unsqueeze", [bias, name("time_axis")], [name("bias")]),
    ]
    banned = name("banned")
    nodes += [
        helper.make_node("Add", [raw, name("bias")], [banned]),
        *top_k_nodes(banned, vocab, opset, name("top_values"), name("top_ids"), prefix=name("blocked_top_k/")),
        # onnxruntime's fused LogSoftmax: one kernel instead of ReduceMax, Sub, Exp, ReduceSum (12.9 -> 8.9 ms
        # for the whole head on [128, 58k], 2 threads); then only the k chosen entries are read
        helper.make_node("LogSoftmax", [banned if renormalize else raw], [name("log_softmax")], axis=-1),
        helper.make_node("GatherElements", [name("log_softmax"), name("top_ids")], [name("top_log_softmax")], axis=-1),
    ]
    chosen = name("top_log_softmax")
    if not renormalize:   # HF adds the bans after the log-softmax: + (banned - raw), i.e. + 0 or + -inf
        nodes += [
            helper.make_node("GatherElements", [raw, name("top_ids")], [name("top_raw")], axis=-1),
            helper.make_node("Sub", [name("top_values"), name("top_raw")], [name("top_bias")]),
            helper.make_node("Add", [chosen, name("top_bias")], [name("top_banned_log_softmax")]),
        ]
        chosen = name("top_banned_log_softmax")
    return nodes + [
        helper.make_node("Gather", [chosen, name("last")], [log_probs], axis=1),
        helper.make_node("Gather", [name("top_ids"), name("last")], [ids], axis=1),
    ]


def top_k_block(vocab) -> int | None:
    """The block size of the two-stage top-k over ``vocab`` ids, or None (one TopK) for a small, symbolic or
    prime-ish vocabulary: the divisor of ``vocab`` in BLOCK_SIZES whose block x block x k is nearest ``vocab``,
    which balances the first TopK's vocab / block blocks against the second's k x block candidates. Stand-alone
    timings of block sizes on [128, vocab] scores swung more between runs than the sizes differed; end to end
    (opus-mt int8, b32 beam 4) blocks of 107 and of 321 were both ~2-3% faster than one TopK
    (mtedge/DESIGN.md §4.14)."""
    if not isinstance(vocab, int) or vocab < BLOCKED_TOP_K_MIN_VOCAB:
        return None
    divisors = [size for size in BLOCK_SIZES if vocab % size == 0 and vocab // size > 1]
    return min(divisors, key=lambda size: abs(size * size * BLOCK_SIZE_FOR_K - vocab), default=None)


def top_k_nodes(scores: str, vocab, opset: int, values: str, ids: str, block: int | None = None,
                prefix: str = "search_head/blocked_top_k/") -> list:
    """Nodes writing ``values`` and ``ids``, the ``search_k`` best of ``scores`` [rows, t, vocab] along the
    last axis, as ONE TopK gives them: best first, equal scores to the lower id.

    onnxruntime's TopK over opus-mt's 58k ids took 2.7-4.3 ms of a ~57 ms b32 beam 4 step (128 rows, 2 threads,
    its profile); the two stages ~1.3 ms. When a block size divides the vocabulary (``top_k_block``), the ids are seen as
    [blocks, block]: one vectorised ReduceMax pass gives each block's best score, the k best blocks hold
    the k best ids (a block outside them has k blocks before it, each with its own better-or-equal, lower-id
    score), and the second TopK runs over those k blocks only (k x block candidates). The chosen blocks are
    put in id order first, so that the candidates' positions follow their ids and the ties still go to the
    lower id. With k above the number of blocks every block is taken, which is the one TopK again."""
    from onnx import TensorProto, helper

    block = top_k_block(vocab) if block is None else block
    if block is None:
        return [helper.make_node("TopK", [scores, K_INPUT], [values, ids], axis=-1, largest=1, sorted=1)]
    def name(short: str) -> str:
        return prefix + short

    def constant(short: str, data: list, dims: list | None = None):
        return helper.make_node("Constant", [], [name(short)], value=helper.make_tensor(
            name(short), TensorProto.INT64, [len(data)] if dims is None else dims, data))

    blocks = vocab // block
    if opset >= 18:    # ReduceMax's axes became an input in opset 18
        block_max = helper.make_node("ReduceMax", [name("blocked"), name("block_axis")], [name("block_max")],
                                     keepdims=0)
    else:
        block_max = helper.make_node("ReduceMax", [name("blocked")], [name("block_max")], axes=[3], keepdims=0)
    return [
        constant("blocked_shape", [0, 0, blocks, block]),
        constant("block_axis", [3]),
        constant("blocks", [blocks]),
        constant("block_dims", [block]),
        constant("block", [block], []),
        constant("flat_shape", [0, 0, -1]),
        # [rows, t, vocab] -> [rows, t, blocks, block]: a view, no copy
        helper.make_node("Reshape", [scores, name("blocked_shape")], [name("blocked")]),
        block_max,
        helper.make_node("Min", [K_INPUT, name("blocks")], [name("block_k")]),
        helper.make_node("TopK", [name("block_max"), name("block_k")], [name("best_block_max"), name("best_blocks")],
                         axis=-1, largest=1, sorted=1),
        helper.make_node("TopK", [name("best_blocks"), name("block_k")], [name("chosen"), name("chosen_order")],
                         axis=-1, largest=0, sorted=1),
        # gather the chosen blocks: [rows, t, k, 1] block ids, broadcast over the block's ids
        helper.make_node("Unsqueeze", [name("chosen"), name("block_axis")], [name("chosen_column")]),
        helper.make_node("Shape", [name("chosen")], [name("chosen_shape")]),
        helper.make_node("Concat", [name("chosen_shape"), name("block_dims")], [name("gather_shape")], axis=0),
        helper.make_node("Expand", [name("chosen_column"), name("gather_shape")], [name("gather_index")]),
        helper.make_node("GatherElements", [name("blocked"), name("gather_index")], [name("candidates_blocked")],
                         axis=2),
        helper.make_node("Reshape", [name("candidates_blocked"), name("flat_shape")], [name("candidates")]),
        helper.make_node("TopK", [name("candidates"), K_INPUT], [values, name("positions")],
                         axis=-1, largest=1, sorted=1),
        # candidate position -> id: its block's id x block + its offset in the block
        helper.make_node("Div", [name("positions"), name("block")], [name("slot")]),
        helper.make_node("Mod", [name("positions"), name("block")], [name("offset")]),
        helper.make_node("GatherElements", [name("chosen"), name("slot")], [name("id_block")], axis=-1),
        helper.make_node("Mul", [name("id_block"), name("block")], [name("block_start")]),
        helper.make_node("Add", [name("block_start"), name("offset")], [ids]),
    ]
