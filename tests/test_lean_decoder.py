"""The lean decoders (mtedge/convert/lean_decoder.py) against optimum's traced ones, on the tiny trained
Marian, M2M100 and mBART fixtures: the same logits and caches step by step (one token a call, and several: the
causal mask inside MultiHeadAttention), per-source cross-attention for blocks of beams, a fraction of the
nodes, and optimum's graph kept for T5."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from mtedge.convert import lean_decoder, onnx_export  # noqa: E402
from mtedge.engines.onnx_engine import source_blocks  # noqa: E402

ATOL = 1e-4


LEAN_FAMILIES = ("marian", "m2m100", "mbart")   # post-LN; pre-LN with fairseq positions; pre-LN, learned


@pytest.fixture(scope="module", params=LEAN_FAMILIES)
def lean_case(request, tiny_models, tmp_path_factory):
    """``(model_dir, optimum_dir, lean_dir)``: fp32 ONNX exports of a tiny model, each with the search head."""
    model_dir = tiny_models(request.param)
    root = tmp_path_factory.mktemp(f"lean-{request.param}")
    traced = onnx_export.export_onnx(model_dir, root / "optimum", request.param, decoder="optimum")
    lean = onnx_export.export_onnx(model_dir, root / "lean", request.param)
    assert traced["decoder"].startswith("optimum") and lean["decoder"].startswith("lean")
    return model_dir, root / "optimum", root / "lean"


def _session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _Decoder:
    """Drives one merged decoder the way the runtime does (cross K/V kept from the first call)."""

    def __init__(self, directory, config, hidden, mask):
        self.session = _session(directory / "decoder_model_merged.onnx")
        self.hidden, self.mask = hidden, mask
        self.layers = config["decoder_layers"]
        heads = config["decoder_attention_heads"]
        empty = np.zeros((hidden.shape[0], heads, 0, config["d_model"] // heads), np.float32)
        self.past = {f"past_key_values.{i}.{part}.{kv}": empty for i in range(self.layers)
                     for part in ("decoder", "encoder") for kv in ("key", "value")}
        self.first = True
        self.outputs = ["logits"] + [f"present.{i}.{part}.{kv}" for i in range(self.layers)
                                     for part in ("decoder", "encoder") for kv in ("key", "value")]

    def step(self, tokens):
        feeds = {"encoder_attention_mask": self.mask, "input_ids": tokens, "use_cache_branch": np.array([not self.first]),
                 "encoder_hidden_states": self.hidden if self.first else self.hidden[:1, :1]}
        feeds.update(self.past)
        results = dict(zip(self.outputs, self.session.run(self.outputs, feeds)))
        for name, value in results.items():
            if name != "logits" and (self.first or ".decoder." in name):
                self.past[name.replace("present", "past_key_values")] = value
        self.first = False
        return results


def _encoded(model_dir, directory):
    """Encoder states of three sentences of different lengths (padding in the batch)."""
    config = json.loads((model_dir / "config.json").read_text())
    rng = np.random.default_rng(0)
    lengths = [7, 3, 5]
    ids = np.full((3, max(lengths)), config["pad_token_id"], np.int64)
    for row, length in enumerate(lengths):
        ids[row, :length - 1] = rng.integers(5, config["vocab_size"] - 1, length - 1)
        ids[row, length - 1] = config["eos_token_id"]
    mask = (np.arange(ids.shape[1])[None] < np.array(lengths)[:, None]).astype(np.int64)
    hidden = _session(directory / "encoder_model.onnx").run(
        ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]
    return config, hidden, mask


def test_lean_decoder_matches_optimum_step_by_step(lean_case):
    model_dir, *two_decoders = lean_case
    config, hidden, mask = _encoded(model_dir, two_decoders[0])
    traced, lean = (_Decoder(d, config, hidden, mask) for d in two_decoders)
    tokens = np.full((3, 1), config["decoder_start_token_id"], np.int64)
    for _ in range(8):   # greedy, one token a call, as the runtime decodes
        expected, got = traced.step(tokens), lean.step(tokens)
        for name in ["logits"] + [n for n in expected if ".decoder." in n]:
            np.testing.assert_allclose(got[name], expected[name], atol=ATOL, err_msg=name)
        tokens = expected["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)


def test_lean_decoder_matches_optimum_with_several_tokens_a_call(lean_case):
    model_dir, *two_decoders = lean_case
    config, hidden, mask = _encoded(model_dir, two_decoders[0])
    traced, lean = (_Decoder(d, config, hidden, mask) for d in two_decoders)
    prefix = np.array([[config["decoder_start_token_id"], 5, 9]] * 3, np.int64)
    for tokens in (prefix, np.array([[11, 6]] * 3, np.int64)):   # a 3-token first call, then 2 with the cache
        expected, got = traced.step(tokens), lean.step(tokens)
        np.testing.assert_allclose(got["logits"], expected["logits"], atol=ATOL)


def test_lean_decoder_attends_per_source_when_rows_come_in_blocks(lean_case):
    """Two beams a sentence: optimum's graph gets the cross cache expanded to one row per beam, the lean one
    a single row per sentence (what the engine feeds it, CROSS_METADATA); the logits must not differ."""
    model_dir, *two_decoders = lean_case
    config, hidden, mask = _encoded(model_dir, two_decoders[0])
    traced, lean = (_Decoder(d, config, hidden, mask) for d in two_decoders)
    start = np.full((3, 1), config["decoder_start_token_id"], np.int64)
    traced.step(start), lean.step(start)
    rows = np.repeat(np.arange(3), 2)                       # sentence 0, 0, 1, 1, 2, 2
    assert list(source_blocks(rows)) == [0, 1, 2]
    for name in list(traced.past):
        if ".decoder." in name:
            traced.past[name], lean.past[name] = traced.past[name][rows], lean.past[name][rows]
        else:
            traced.past[name] = traced.past[name][rows]     # the lean graph keeps one copy per sentence
    traced.mask = mask[rows]
    tokens = np.array([[5], [9], [5], [11], [6], [7]], np.int64)
    for _ in range(3):
        expected, got = traced.step(tokens), lean.step(tokens)
        np.testing.assert_allclose(got["logits"], expected["logits"], atol=ATOL)
        tokens = expected["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)


def test_source_blocks():
    assert list(source_blocks(np.array([0, 0, 1, 1, 3, 3]))) == [0, 1, 3]   # a finished sentence left
    assert list(source_blocks(np.array([4, 5, 6]))) == [4, 5, 6]
    assert source_blocks(np.array([0, 0, 1])) is None                      # unequal blocks
    assert source_blocks(np.array([0, 0, 1, 1, 0, 0])) is None             # a sentence in two blocks


def test_lean_decoder_has_a_fraction_of_the_nodes(lean_case):
    _, *two_decoders = lean_case

    def branch_sizes(directory):
        model = onnx.load(str(directory / "decoder_model_merged.onnx"))
        branch = next(n for n in model.graph.node if n.op_type == "If")
        return {a.name: len(a.g.node) for a in branch.attribute}

    traced, lean = (branch_sizes(d) for d in two_decoders)
    assert lean["then_branch"] * 4 < traced["then_branch"], (lean, traced)


def test_t5_keeps_optimums_graph(tiny_marian, tiny_t5):
    config = json.loads((tiny_marian / "config.json").read_text())
    assert lean_decoder.unsupported_reason(tiny_marian) is None
    assert "t5" in lean_decoder.unsupported_reason(tiny_t5)
    assert "activation" in lean_decoder.supports({**config, "activation_function": "gelu_new"})


def test_sinusoidal_positions_are_marians():
    table = lean_decoder.sinusoidal_positions(4, 6)
    # position 1, feature pairs (0, 1), (2, 3), (4, 5): sin of the even ones first, then cos of the odd ones
    angles = 1 / np.power(10000, np.array([0, 2, 4]) / 6)
    np.testing.assert_allclose(table[1], np.concatenate([np.sin(angles), np.cos(angles)]), rtol=1e-6)
    np.testing.assert_allclose(table[0], [0, 0, 0, 1, 1, 1])


def test_final_logits_bias_is_added_only_when_not_zero(tiny_marian, tmp_path):
    """HF's final_logits_bias is a zero buffer in a trained checkpoint (the lean graph skips the Add), but a
    model converted from Marian may fill it: then the lean logits must carry it, as optimum's do."""
    from safetensors.numpy import load_file, save_file

    def bias_adds(directory):
        """Nodes of any (sub)graph that read the bias."""
        def count(graph):
            return sum(sum(i == "final_logits_bias" for i in n.input) + sum(count(a.g) for a in n.attribute if a.g.node)
                       for n in graph.node)
        return count(onnx.load(str(directory / "decoder_model_merged.onnx")).graph)

    assert not load_file(str(tiny_marian / "model.safetensors"))["final_logits_bias"].any()
    onnx_export.export_onnx(tiny_marian, tmp_path / "zero", "marian")
    assert bias_adds(tmp_path / "zero") == 0

    biased = tmp_path / "biased-model"
    shutil.copytree(tiny_marian, biased)
    weights = load_file(str(biased / "model.safetensors"))
    weights["final_logits_bias"] = np.random.default_rng(1).normal(0, 2, weights["final_logits_bias"].shape
                                                                   ).astype(np.float32)
    save_file(weights, str(biased / "model.safetensors"), metadata={"format": "pt"})
    for decoder in ("optimum", "auto"):
        onnx_export.export_onnx(biased, tmp_path / decoder, "marian", decoder=decoder)
    assert bias_adds(tmp_path / "auto") == 2   # the full output layer's Add, the shortlist's Gather
    config, hidden, mask = _encoded(biased, tmp_path / "optimum")
    traced, lean = (_Decoder(tmp_path / d, config, hidden, mask) for d in ("optimum", "auto"))
    tokens = np.full((3, 1), config["decoder_start_token_id"], np.int64)
    for _ in range(3):
        expected, got = traced.step(tokens), lean.step(tokens)
        np.testing.assert_allclose(got["logits"], expected["logits"], atol=ATOL)
        tokens = expected["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
