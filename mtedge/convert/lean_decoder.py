"""A lean merged decoder for Marian, M2M100/NLLB and mBART checkpoints, written op by op instead of traced.

optimum traces a decoder into ~1,400 nodes a step: shape arithmetic (Shape/Gather/Unsqueeze/Concat/Reshape)
around every attention and the heads split and merged by hand, and onnxruntime's transformer optimizer fuses
none of optimum's attention patterns (1.32: only SkipLayerNormalization matched). This module writes the same
decoder with onnxruntime's fused contrib ops: ``MultiHeadAttention`` (the KV cache concatenation, the heads,
the causal mask and the softmax in one node) and ``SkipLayerNormalization`` (residual + bias + LayerNorm, and
for pre-LN layouts the sum the next residual needs), ~25 nodes a layer. T5 (relative position buckets) keeps
optimum's graph (``supports``).

The graph keeps optimum's merged-decoder contract (input/output names, the ``use_cache_branch`` ``If``), so
the search head and the row-wise int8 rewrite treat both the same, with one addition the runtime reads from
the graph's metadata (``CROSS_METADATA``): the cross-attention keys/values and the encoder mask may come with
one row per *source sentence* instead of one per decoder row, when the rows are that many equal blocks (the
beams of each sentence, in order). At b32 beam 4 the cross keys/values were the largest read of a step
(128 rows x 6 layers x 2 x [8, source, 64] floats, ~21 MB a layer at 40 source tokens: 1.1 ms a layer on a
2-vCPU AMD EPYC, memory-bound), four times what one copy per sentence reads.

A later step's self-attention has a second form, chosen per call by the ``cache_in_place`` input (default: off,
optimum's contract): ``DecoderMaskedMultiHeadAttention`` writing the new position into the past buffers, bound
as the present outputs too, and reading beams through an indirection table, so a beam step copies neither the
cache rows the beams continue nor past + new into present (mtedge/engines/in_place_cache.py).

Each family's layout (``LAYOUTS``) is read off its ``transformers`` modeling file (4.57): embeddings scaled by
sqrt(d_model) when ``scale_embedding``; positions ``past .. past + len`` (Marian: a non-interleaved sin|cos
table; mBART: a learned table offset by 2; M2M100: fairseq's sin|cos table indexed pad-aware from
``padding_idx + 1``); Marian ``LayerNorm(x + sublayer(x))``, the others ``x + sublayer(LayerNorm(x))`` with a
final LayerNorm (mBART also one after the embeddings); logits ``h · Eᵀ`` (+ ``final_logits_bias`` where the
checkpoint has one). Weights come from the checkpoint's safetensors (no torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtedge.engines.in_place_cache import (BEAM_WIDTH_INPUT, IN_PLACE, IN_PLACE_INPUT, INDIRECTION_INPUT,
                                           PAST_LENGTH_INPUT)
from mtedge.engines.in_place_cache import METADATA as CACHE_METADATA
from mtedge.engines.onnx_engine import CROSS_METADATA, CROSS_PER_SOURCE
from mtedge.engines.onnx_portability import portable_ir_version
from mtedge.engines.search_head import IDS_OUTPUT, LOG_PROBS_OUTPUT, MODE_METADATA, MODES
from mtedge.engines.shortlist import HEAD_INPUT, HEAD_OUTPUT, MASK_INPUT, MODE_INPUT, ROWS_INPUT

CONTRIB = "com.microsoft"
OPSET = 17
ACTIVATIONS = ("swish", "silu", "gelu", "relu")


@dataclass(frozen=True)
class Layout:
    """What differs between the decoders written here, read off each family's HF modeling file (4.57)."""

    norm_first: bool            # pre-LayerNorm (mBART, M2M100) or post (Marian)
    positions: str              # "marian": sin|cos table; "m2m100": fairseq's, pad-aware; "learned": table + 2
    embedding_norm: str | None = None   # a LayerNorm right after embeddings + positions (mBART)
    final_norm: str | None = None       # a LayerNorm after the last layer (pre-LN families)


LAYOUTS = {
    "marian": Layout(norm_first=False, positions="marian"),
    "m2m_100": Layout(norm_first=True, positions="m2m100", final_norm="model.decoder.layer_norm"),
    "mbart": Layout(norm_first=True, positions="learned", embedding_norm="model.decoder.layernorm_embedding",
                    final_norm="model.decoder.layer_norm"),
}
MASK_FILTER = -1e9   # added for padded source positions; finfo.min in HF, the same softmax
HIDDEN = "decoder_hidden"   # the last layer's output, which the step's If hands to the output layer


def unsupported_reason(model_dir: Path) -> str | None:
    """``None`` when the checkpoint in ``model_dir`` can be written here, else why not (optimum's graph is
    used then)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return supports(config) or (None if any(model_dir.glob("*.safetensors")) else "no safetensors weights")


def supports(config: dict) -> str | None:
    """``None`` when a checkpoint with this ``config.json`` can be written here, else why not."""
    if config.get("model_type") not in LAYOUTS:
        return f"model type {config.get('model_type')!r} (written by hand: {', '.join(LAYOUTS)})"
    if config.get("activation_function") not in ACTIVATIONS:
        return f"activation {config.get('activation_function')!r}"
    if config.get("d_model", 0) % config.get("decoder_attention_heads", 1):
        return "d_model not divisible by the heads"
    return None


def sinusoidal_positions(n_positions: int, dim: int) -> np.ndarray:
    """MarianSinusoidalPositionalEmbedding's table: sin of the even features, then cos of the odd ones."""
    position = np.arange(n_positions, dtype=np.float64)[:, None]
    angle = position / np.power(10000, 2 * (np.arange(dim) // 2) / dim)
    sentinel = (dim + 1) // 2
    table = np.empty((n_positions, dim), dtype=np.float64)
    table[:, :sentinel] = np.sin(angle[:, 0::2])
    table[:, sentinel:] = np.cos(angle[:, 1::2])
    return table.astype(np.float32)


def fairseq_positions(n_positions: int, dim: int, padding_idx: int) -> np.ndarray:
    """M2M100SinusoidalPositionalEmbedding's table: sin then cos of tensor2tensor's frequencies, the pad row 0."""
    half = dim // 2
    frequencies = np.exp(np.arange(half, dtype=np.float32) * -(np.log(10000) / (half - 1)))
    angle = np.arange(n_positions, dtype=np.float32)[:, None] * frequencies[None, :]
    table = np.concatenate([np.sin(angle), np.cos(angle)], axis=1)
    if dim % 2:
        table = np.concatenate([table, np.zeros((n_positions, 1), np.float32)], axis=1)
    table[padding_idx] = 0
    return table.astype(np.float32)


def _load_weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    weights = {}
    for path in files:
        weights.update({name: array.astype(np.float32) for name, array in load_file(str(path)).items()})
    return weights


class _Builder:
    def __init__(self, weights: dict, config: dict):
        from onnx import TensorProto, helper, numpy_helper

        self.h, self.tp, self.nh = helper, TensorProto, numpy_helper
        self.w, self.config = weights, config
        self.initializers: list = []
        self.names: set[str] = set()
        self.d = config["d_model"]
        self.heads = config["decoder_attention_heads"]
        self.head_dim = self.d // self.heads
        self.layers = config["decoder_layers"]
        self.layout = LAYOUTS[config["model_type"]]

    # -- constants --------------------------------------------------------------------------------
    def const(self, name: str, array: np.ndarray) -> str:
        if name not in self.names:
            self.initializers.append(self.nh.from_array(np.ascontiguousarray(array), name))
            self.names.add(name)
        return name

    def linear(self, prefix: str) -> tuple[str, str]:
        """``(W [in, out], b [out])`` of the HF Linear ``prefix`` (stored [out, in])."""
        return (self.const(f"{prefix}.weight_t", self.w[f"{prefix}.weight"].T),
                self.const(f"{prefix}.bias", self.w[f"{prefix}.bias"]))

    def embedding_key(self) -> str:
        return "model.decoder.embed_tokens.weight" if "model.decoder.embed_tokens.weight" in self.w \
            else "model.shared.weight"

    def embedding_name(self) -> str:
        return self.const(self.embedding_key(), self.w[self.embedding_key()])

    # -- one branch -------------------------------------------------------------------------------
    def branch(self, first_step: bool):
        """The ``If`` branch for the first step (cross K/V computed from the encoder states) or a later one
        (cross K/V read from the inputs; the self-attention over past + new, or on the in-place cache). Both read
        the outer graph's inputs and weights."""
        h, nodes = self.h, []
        counter = iter(range(10_000))
        mode = "first" if first_step else "next"

        def op(op_type, inputs, n_out=1, domain="", names=None, **attrs):
            i = next(counter)
            outputs = names or [f"{mode}/{op_type}_{i}_{k}" for k in range(n_out)]
            nodes.append(h.make_node(op_type, inputs, outputs, domain=domain or None, **attrs))
            return outputs[0] if n_out == 1 else outputs

        config, d, layout = self.config, self.d, self.layout
        embedding = self.embedding_name()
        x = op("Gather", [embedding, "input_ids"])
        if config.get("scale_embedding"):
            x = op("Mul", [x, self.const("lean/embed_scale", np.array(np.sqrt(d), np.float32))])
        x = op("Add", [x, self.positions(op, first_step)])
        if layout.embedding_norm:
            x = op("LayerNormalization", [x, *self.norm_weights(layout.embedding_norm)], axis=-1, epsilon=1e-5)
        mask = op("Cast", ["encoder_attention_mask"], to=self.tp.INT32)
        heads_shape = self.const("lean/heads_shape", np.array([0, 0, self.heads, self.head_dim], np.int64))
        # cross-attention per source sentence: the rows of one source (its beams) come in one block, so their
        # queries attend as one [sources, beams * len, d] batch to ONE copy of its keys/values (module docstring)
        source_of = "encoder_hidden_states" if first_step else "past_key_values.0.encoder.key"
        rows_shape = op("Shape", [x])
        grouped_shape = op("Concat", [op("Shape", [source_of], start=0, end=1),
                                      self.const("lean/grouped_tail", np.array([-1, d], np.int64))], axis=0)
        outputs = [HIDDEN]
        present = {}
        # x: the residual stream; inp: what the next sublayer reads (x itself post-LN, its LayerNorm pre-LN)
        inp = op("LayerNormalization", [x, *self.norm_weights("model.decoder.layers.0.self_attn_layer_norm")],
                 axis=-1, epsilon=1e-5) if layout.norm_first else x

        def after(sublayer_out, bias, layer, norm):
            """Residual + bias + the LayerNorm that follows the sublayer (post-LN: its own; pre-LN: the next
            one's), in one node; returns (the next sublayer's input, the residual stream)."""
            if not layout.norm_first:
                x = self.skip_norm(op, sublayer_out, residual_of[0], bias, f"model.decoder.layers.{layer}.{norm}")
                return x, x
            following = {"self_attn_layer_norm": "encoder_attn_layer_norm", "encoder_attn_layer_norm": "final_layer_norm"}
            nxt = (f"model.decoder.layers.{layer}.{following[norm]}" if norm in following else
                   f"model.decoder.layers.{layer + 1}.self_attn_layer_norm" if layer + 1 < self.layers else
                   layout.final_norm)
            normed, _, _, summed = op("SkipLayerNormalization", [sublayer_out, residual_of[0],
                                                                 *self.norm_weights(nxt), bias],
                                      n_out=4, domain=CONTRIB, epsilon=1e-5)
            return normed, summed

        residual_of = [x]
        for layer in range(self.layers):
            p = f"model.decoder.layers.{layer}"
            x = inp
            # self-attention: q, k, v projections, the biases in the op, the cache concatenated inside
            (wq, bq), (wk, bk), (wv, bv) = (self.linear(f"{p}.self_attn.{n}_proj") for n in "qkv")
            qkv_bias = self.const(f"{p}.self_attn.qkv_bias", np.concatenate(
                [self.w[f"{p}.self_attn.{n}_proj.bias"] for n in "qkv"]))
            q, k, v = op("MatMul", [x, wq]), op("MatMul", [x, wk]), op("MatMul", [x, wv])
            past = [f"past_key_values.{layer}.decoder.key", f"past_key_values.{layer}.decoder.value"]
            if first_step:
                attn, key, value = op("MultiHeadAttention", [q, k, v, qkv_bias, "", "", *past], n_out=3,
                                      domain=CONTRIB, num_heads=self.heads, unidirectional=1)
            else:
                attn, key, value = self.self_attention(op, layer, q, k, v, qkv_bias, past)
            present[f"present.{layer}.decoder.key"], present[f"present.{layer}.decoder.value"] = key, value
            wo, bo = self.linear(f"{p}.self_attn.out_proj")
            x, residual_of[0] = after(op("MatMul", [attn, wo]), bo, layer, "self_attn_layer_norm")
            # cross-attention over the encoder states, K/V [batch, heads, source, head_dim]
            if first_step:
                (wk, bk), (wv, bv) = self.linear(f"{p}.encoder_attn.k_proj"), self.linear(f"{p}.encoder_attn.v_proj")
                cross_k, cross_v = (op("Transpose", [op("Reshape", [op("Add", [op("MatMul", ["encoder_hidden_states", w]), b]),
                                                                    heads_shape])], perm=[0, 2, 1, 3])
                                    for w, b in ((wk, bk), (wv, bv)))
            else:
                cross_k, cross_v = (f"past_key_values.{layer}.encoder.key", f"past_key_values.{layer}.encoder.value")
            if first_step:
                present[f"present.{layer}.encoder.key"], present[f"present.{layer}.encoder.value"] = cross_k, cross_v
            else:   # the runtime keeps the first step's; an empty stand-in, as optimum's graph does (no copy)
                unused = self.const("lean/unused_cross", np.zeros((0, self.heads, 1, self.head_dim), np.float32))
                present[f"present.{layer}.encoder.key"] = present[f"present.{layer}.encoder.value"] = unused
            wq, bq = self.linear(f"{p}.encoder_attn.q_proj")
            q = op("Reshape", [op("Add", [op("MatMul", [x, wq]), bq]), grouped_shape])
            attn = op("Reshape", [op("MultiHeadAttention", [q, cross_k, cross_v, "", mask], domain=CONTRIB,
                                     num_heads=self.heads, mask_filter_value=MASK_FILTER), rows_shape])
            wo, bo = self.linear(f"{p}.encoder_attn.out_proj")
            x, residual_of[0] = after(op("MatMul", [attn, wo]), bo, layer, "encoder_attn_layer_norm")
            # feed-forward
            w1, b1 = self.linear(f"{p}.fc1")
            w2, b2 = self.linear(f"{p}.fc2")
            hidden = self.activation(op, op("Add", [op("MatMul", [x, w1]), b1]))
            inp, residual_of[0] = after(op("MatMul", [hidden, w2]), b2, layer, "final_layer_norm")
        nodes.append(h.make_node("Identity", [inp], [HIDDEN]))
        for name, value in present.items():
            if value != name:
                nodes.append(h.make_node("Identity", [value], [name]))
            outputs.append(name)
        return nodes, outputs

    def head(self, renormalize: bool, vocab: int, outputs: list[str]) -> list:
        """The output layer and the search head (mtedge/convert/search_head.py) on the step's ``HIDDEN``, writing
        ``outputs`` (logits, top log-probs, top ids, and for a tied output layer the shortlist's rows). With a
        tied layer they are a top-level ``If`` on the shortlist's mode (mtedge/engines/shortlist.py): every id's
        logit, or only the batch's candidates', from the rows of the table that the first step gathers (int8
        rows in the 8-bit GEMM graph, dequantized ones in the other quantized graphs) and every later step reads
        back. The full layer's weight is one graph down either way, where onnxruntime still pre-packs it (see
        :meth:`self_attention`); the candidates' rows are an input, with nothing to pre-pack, so they may sit two
        graphs down."""
        from mtedge.convert.search_head import search_head_nodes

        h = self.h
        embedding = self.embedding_name()
        bias = self.w.get("final_logits_bias")
        # Marian and mBART carry a final_logits_bias, M2M100 none. HF registers it as a buffer of zeros that
        # training leaves alone (models converted from Marian may fill it); an Add of zeros over [rows, vocab]
        # cost 3.2 ms of a 72 ms step at opus-mt's b32 beam 4, so only a bias that is not all zero is added
        bias = self.const("final_logits_bias", bias[0]) if bias is not None and np.any(bias) else None

        def layer(prefix: str, names: list[str], extra: list) -> list:
            nodes = []
            if self._tied():
                weight = f"{prefix}/lm_head"
                nodes.append(h.make_node("Transpose", [embedding], [weight], perm=[1, 0]))
            else:
                weight = self.const("lm_head.weight_t", self.w["lm_head.weight"].T)
            logits = names[0]
            nodes.append(h.make_node("MatMul", [HIDDEN, weight], [f"{prefix}/unbiased" if bias else logits]))
            if bias:
                nodes.append(h.make_node("Add", [f"{prefix}/unbiased", bias], [logits]))
            return nodes + search_head_nodes(logits, vocab, OPSET, renormalize, prefix=f"{prefix}/search_head",
                                             ids=names[2], log_probs=names[1]) + extra

        if not self._tied():   # an untied layer would need its rows stored a second time: no shortlist
            return layer("head", outputs, [])
        # Every value that carries the candidates' rows is named ``…present.shortlist_head``: the int8 rewrite
        # keeps them int8 and retypes them by that name (mtedge/convert/rowwise_int8.py). Branches that have no
        # rows to return slice none off the input, so their output has its type, whatever the graph's.
        none = self.const("shortlist/none", np.array([0], np.int64))
        columns = self.const("shortlist/columns_axis", np.array([1], np.int64))

        def no_rows(out: str):
            return h.make_node("Slice", [HEAD_INPUT, none, none, columns], [out])

        full_names = [f"full/{name}" for name in outputs]
        full = layer("full", full_names, [no_rows(full_names[3])])

        # the candidates: the first step gathers their rows (Gather on the table: the int8 rewrite makes it
        # an int8 gather, or the dequantizing gather of the embedding lookup), a later step reads them back
        later_rows, first_rows = (f"shortlist/{branch}/{HEAD_OUTPUT}" for branch in ("later", "first"))
        later = h.make_graph([no_rows(later_rows),
                              h.make_node("MatMul", [HIDDEN, HEAD_INPUT], ["shortlist/later/logits"])],
                             "shortlist_later", [], self._values(["shortlist/later/logits", later_rows]))
        first = h.make_graph([
            h.make_node("Gather", [embedding, ROWS_INPUT], ["shortlist/first/table_rows"], axis=0),
            h.make_node("Transpose", ["shortlist/first/table_rows"], [first_rows], perm=[1, 0]),
            h.make_node("MatMul", [HIDDEN, first_rows], ["shortlist/first/logits"]),
        ], "shortlist_first", [], self._values(["shortlist/first/logits", first_rows]))
        names = [f"shortlist/{name}" for name in outputs]
        nodes = [h.make_node("If", ["use_cache_branch"], ["shortlist/unbiased", names[3]], then_branch=later,
                             else_branch=first)]
        unmasked = "shortlist/unbiased"
        if bias:
            nodes += [h.make_node("Gather", [bias, ROWS_INPUT], ["shortlist/bias"], axis=0),
                      h.make_node("Add", ["shortlist/unbiased", "shortlist/bias"], ["shortlist/unmasked"])]
            unmasked = "shortlist/unmasked"
        # each row's own candidates: the mask joins the logits before any log-softmax (batch-invariant scores)
        time_axis = self.const("shortlist/time_axis", np.array([1], np.int64))
        nodes += [h.make_node("Unsqueeze", [MASK_INPUT, time_axis], ["shortlist/row_mask"]),
                  h.make_node("Add", [unmasked, "shortlist/row_mask"], [names[0]])]
        nodes += search_head_nodes(names[0], "shortlist_columns", OPSET, renormalize, prefix="shortlist/search_head",
                                   ids=names[2], log_probs=names[1])
        shortlist = h.make_graph(nodes, "shortlist_head", [], self._values(names))
        every_id = h.make_graph(full, "full_head", [], self._values(full_names))
        return [h.make_node("If", [MODE_INPUT], outputs, then_branch=shortlist, else_branch=every_id)]

    def _values(self, names: list[str]) -> list:
        """Branch outputs of unstated shape: int64 for top-k ids, float otherwise."""
        return [self.h.make_tensor_value_info(name, self.tp.INT64 if name.endswith(IDS_OUTPUT) else self.tp.FLOAT,
                                              None) for name in names]

    def _tied(self) -> bool:
        if "lm_head.weight" not in self.w:
            return True
        embedding = self.w[self.embedding_key()]
        return embedding.shape == self.w["lm_head.weight"].shape and np.array_equal(embedding, self.w["lm_head.weight"])

    def norm_weights(self, norm: str) -> tuple[str, str]:
        return self.const(f"{norm}.weight", self.w[f"{norm}.weight"]), self.const(f"{norm}.bias", self.w[f"{norm}.bias"])

    def skip_norm(self, op, sublayer: str, residual: str, bias: str, norm: str) -> str:
        """``LayerNorm(residual + sublayer + bias)`` in one node."""
        return op("SkipLayerNormalization", [sublayer, residual, *self.norm_weights(norm), bias], domain=CONTRIB,
                  epsilon=1e-5)

    def self_attention(self, op, layer: int, q: str, k: str, v: str, qkv_bias: str, past: list[str]):
        """A later step's self-attention: ``MultiHeadAttention`` over past + new (optimum's contract), or, when
        :data:`IN_PLACE_INPUT` says so, ``DecoderMaskedMultiHeadAttention`` on the in-place cache (one new
        position a row, written into the past buffers themselves, earlier positions read through the beams'
        indirection table: mtedge/engines/in_place_cache.py). The choice is a small ``If`` per layer that holds
        only the attention node: one ``If`` around two whole later-step bodies put the bodies' weights two
        graphs down, where onnxruntime 1.32 does not pre-pack them (opus-mt int8_latency: 120 ms a batch-1
        step instead of 3)."""
        h, present = self.h, [name.replace("past_key_values", "present") for name in past]
        scope = f"next/self_attention_{layer}"
        in_place = h.make_node("DecoderMaskedMultiHeadAttention",
                               [q, k, v, "", "", *past, PAST_LENGTH_INPUT, BEAM_WIDTH_INPUT, INDIRECTION_INPUT,
                                qkv_bias], [f"{scope}/in_place_{n}" for n in ("out", "key", "value")],
                               domain=CONTRIB, num_heads=self.heads, past_present_share_buffer=1)
        concatenated = h.make_node("MultiHeadAttention", [q, k, v, qkv_bias, "", "", *past],
                                   [f"{scope}/past_present_{n}" for n in ("out", "key", "value")], domain=CONTRIB,
                                   num_heads=self.heads, unidirectional=1)

        def body(node, name):
            return h.make_graph([node], name, [], [h.make_tensor_value_info(o, self.tp.FLOAT, None)
                                                   for o in node.output])

        # the present outputs keep their graph names (no Identity between the kernel and the bound buffer)
        return op("If", [IN_PLACE_INPUT], n_out=3, names=[f"{scope}/out", *present],
                  then_branch=body(in_place, f"{scope}/in_place"), else_branch=body(concatenated, f"{scope}/past_present"))

    def positions(self, op, first_step: bool) -> str:
        """The position embeddings of the new tokens, which follow the ``past`` cached ones (in a later step
        on the in-place cache the buffer's length is its capacity: the positions it holds are an input)."""
        config, d, kind = self.config, self.d, self.layout.positions
        past_len = op("Shape", ["past_key_values.0.decoder.key"], start=2, end=3)
        if not first_step:
            past_len = op("Where", [IN_PLACE_INPUT, op("Cast", [PAST_LENGTH_INPUT], to=self.tp.INT64), past_len])
        if kind == "m2m100":   # fairseq: pads keep position padding_idx, tokens count on from padding_idx + 1
            pad = config["pad_token_id"]
            not_pad = op("Cast", [op("Not", [op("Equal", ["input_ids", self.const("lean/pad", np.array(pad, np.int64))])])],
                         to=self.tp.INT64)
            counted = op("Add", [op("CumSum", [not_pad, self.const("lean/axis1", np.array(1, np.int64))]), past_len])
            ids = op("Add", [op("Mul", [counted, not_pad]), self.const("lean/pad", np.array(pad, np.int64))])
            table = fairseq_positions(config["max_position_embeddings"] + pad + 2, d, pad)
            return op("Gather", [self.const("lean/positions", table), ids])
        # rows past .. past + len of the table: one Slice (a Gather of a Range with a constant step is what
        # onnxruntime 1.32's extended optimizer turns into a Slice itself, wrongly with scalar bounds)
        start = past_len
        if kind == "learned":   # MBartLearnedPositionalEmbedding: rows 0 and 1 are never used
            start = op("Add", [past_len, self.const("lean/two", np.array([2], np.int64))])
            table = self.const("model.decoder.embed_positions.weight", self.w["model.decoder.embed_positions.weight"])
        else:
            table = self.const("lean/positions", sinusoidal_positions(config["max_position_embeddings"], d))
        end = op("Add", [start, op("Shape", ["input_ids"], start=1, end=2)])
        return op("Slice", [table, start, end, self.const("lean/axis0", np.array([0], np.int64))])

    def activation(self, op, x: str) -> str:
        name = self.config["activation_function"]
        if name in ("swish", "silu"):
            return op("Mul", [x, op("Sigmoid", [x])])
        if name == "relu":
            return op("Relu", [x])
        return op("Gelu", [x], domain=CONTRIB)   # HF "gelu" is the exact erf form, as is com.microsoft.Gelu


def build_decoder(model_dir: Path, out_path: Path, renormalize: bool = False) -> dict:
    """Write ``out_path`` (a merged decoder with optimum's contract, the search head and, for a tied output
    layer, the shortlist's) for the checkpoint ``model_dir``; ``renormalize``: its ``renormalize_logits``."""
    import onnx
    from onnx import TensorProto, helper

    from mtedge.convert.search_head import head_interface

    config = json.loads((Path(model_dir) / "config.json").read_text())
    reason = supports(config)
    if reason:
        raise ValueError(f"cannot write a lean decoder for this checkpoint: {reason}")
    builder = _Builder(_load_weights(model_dir), config)
    first_nodes, output_names = builder.branch(first_step=True)
    next_nodes, _ = builder.branch(first_step=False)
    heads, head_dim, d = builder.heads, builder.head_dim, builder.d
    vocab = builder.w.get("lm_head.weight", builder.w[builder.embedding_key()]).shape[0]
    shortlist = builder._tied()

    def value(name, elem, shape):
        return helper.make_tensor_value_info(name, elem, shape)

    def kv(name, length):
        return value(name, TensorProto.FLOAT, ["batch_size", heads, length, head_dim])

    presents = []
    for name in output_names[1:]:
        length = "encoder_sequence_length" if ".encoder." in name else "past_decoder_sequence_length + 1"
        presents.append(kv(name, length))
    step_outputs = [HIDDEN] + [o.name for o in presents]
    branch_outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in step_outputs]
    first = helper.make_graph(first_nodes, "first_step", [], branch_outputs)
    later = helper.make_graph(next_nodes, "with_past", [], branch_outputs)
    inputs = [value("encoder_attention_mask", TensorProto.INT64, ["batch_size", "encoder_sequence_length"]),
              value("input_ids", TensorProto.INT64, ["batch_size", "decoder_sequence_length"]),
              value("encoder_hidden_states", TensorProto.FLOAT, ["batch_size", "encoder_sequence_length", d])]
    for layer in range(builder.layers):
        inputs += [kv(f"past_key_values.{layer}.decoder.key", "past_decoder_sequence_length"),
                   kv(f"past_key_values.{layer}.decoder.value", "past_decoder_sequence_length"),
                   kv(f"past_key_values.{layer}.encoder.key", "encoder_sequence_length"),
                   kv(f"past_key_values.{layer}.encoder.value", "encoder_sequence_length")]
    inputs.append(value("use_cache_branch", TensorProto.BOOL, [1]))
    # the in-place cache's inputs, with defaults that select MultiHeadAttention (mtedge/engines/in_place_cache.py),
    # and the shortlist's, with defaults that select every id (mtedge/engines/shortlist.py)
    defaults = {IN_PLACE_INPUT: np.array([False]), PAST_LENGTH_INPUT: np.array([0], np.int32),
                BEAM_WIDTH_INPUT: np.array([1], np.int32), INDIRECTION_INPUT: np.zeros((1, 1, 1), np.int32)}
    shapes = {INDIRECTION_INPUT: ["cache_blocks", "beam_width", "cache_capacity"]}
    if shortlist:
        defaults.update({MODE_INPUT: np.array([False]), ROWS_INPUT: np.zeros(0, np.int64),
                         HEAD_INPUT: np.zeros((d, 0), np.float32), MASK_INPUT: np.zeros((1, 1), np.float32)})
        shapes.update({ROWS_INPUT: ["shortlist_columns"], HEAD_INPUT: [d, "shortlist_columns"],
                       MASK_INPUT: ["mask_rows", "mask_columns"]})
    for name, default in defaults.items():
        inputs.append(value(name, helper.np_dtype_to_tensor_dtype(default.dtype), shapes.get(name, [1])))
        builder.const(name, default)
    # the search head's inputs: its bias has one column per candidate under the shortlist
    head_inputs, head_defaults, head_outputs = head_interface(vocab, "bias_columns" if shortlist else None)
    inputs += head_inputs
    logits = value("logits", TensorProto.FLOAT, ["batch_size", "decoder_sequence_length",
                                                 "logits_columns" if shortlist else vocab])
    outputs = [logits, *presents, *head_outputs]
    head_names = ["logits", LOG_PROBS_OUTPUT, IDS_OUTPUT]
    if shortlist:
        outputs.append(value(HEAD_OUTPUT, TensorProto.FLOAT, [d, "shortlist_columns"]))
        head_names.append(HEAD_OUTPUT)
    step = helper.make_node("If", ["use_cache_branch"], step_outputs, then_branch=later, else_branch=first)
    nodes = [step, *builder.head(renormalize, vocab, head_names)]
    graph = helper.make_graph(nodes, "lean_decoder", inputs, outputs, builder.initializers + head_defaults)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(CONTRIB, 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="mtedge",
                              ir_version=portable_ir_version(opsets))
    helper.set_model_props(model, {CROSS_METADATA: CROSS_PER_SOURCE, CACHE_METADATA: IN_PLACE,
                                   MODE_METADATA: MODES[bool(renormalize)]})
    # one protobuf holds at most 2 GB; beyond that the weights go to a side file, as optimum does
    big = sum(init.ByteSize() for init in builder.initializers) > 1_500_000_000
    onnx.save(model, str(out_path), save_as_external_data=big, location=Path(out_path).name + "_data")
    return {"decoder": "lean (mtedge/convert/lean_decoder.py): MultiHeadAttention + SkipLayerNormalization, "
                       "in-place self-attention cache (DecoderMaskedMultiHeadAttention)",
            "nodes_per_step": len(next_nodes),
            "shortlist_head": shortlist}
