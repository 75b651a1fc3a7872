"""Exports of the tiny Marian / T5 / M2M100 models: bundle layout, tokenizer files, int8 graphs,
and the validation records (parity with PyTorch) the export wrote into the manifest."""

from __future__ import annotations

import json

import pytest

from mtedge.bundle import Bundle

FP32 = [("onnx", "fp32"), ("ct2", "float32"), ("torch", "fp32")]
INT8 = [("onnx", "int8"), ("ct2", "int8")]
# int8 tolerances on the 40 dev pairs (mtedge/DESIGN.md §4.4: exact int8 matches are fragile, so rates):
MIN_INT8_AGREEMENT = 0.7   # share of sentences identical to PyTorch's output
MAX_INT8_BLEU_LOSS = 5.0   # BLEU vs references lost against PyTorch's own BLEU


def test_layout_and_manifest(tiny_unvalidated_bundle):
    family, path = tiny_unvalidated_bundle
    bundle = Bundle.open(path)
    m = bundle.manifest
    assert m["format"] == "mtedge-bundle" and m["format_version"] == 1
    assert bundle.family == family
    # the unvalidated fixtures also export int8_latency and int4 (tests/fixtures/bundles.py)
    assert bundle.engines() == {"onnx": ["fp32", "int8", "int8_latency", "int4"], "ct2": ["float32", "int8"],
                                "torch": ["fp32"]}
    # mBART names languages by its own codes (de_DE); the others by ISO 639-1; T5 records none
    assert (bundle.source_lang, bundle.target_lang) == {"t5": (None, None), "mbart": ("en_XX", "de_DE")}.get(
        family, ("en", "de"))
    source_config = json.loads((path / "torch" / "fp32" / "config.json").read_text())
    assert m["source_model"]["vocab_size"] == source_config["vocab_size"]
    assert len(m["source_model"]["sha256"]) == 64
    for precision in ("fp32", "int8", "int8_latency", "int4"):
        names = sorted(p.name for p in bundle.engine_dir("onnx", precision).iterdir())
        # only the encoder and the merged decoder, each with its weights in a side file; the non-merged
        # decoders are dropped
        assert names == ["decoder_model_merged.onnx", "decoder_model_merged.onnx_data", "encoder_model.onnx",
                         "encoder_model.onnx_data"]
        for graph in ("encoder_model.onnx", "decoder_model_merged.onnx"):
            graph_file = bundle.engine_dir("onnx", precision) / graph
            assert _weights_inline(graph_file) == []
            side_file = graph_file.with_name(graph + "_data")
            assert side_file.stat().st_mode & 0o777 == graph_file.stat().st_mode & 0o777   # as readable
    for precision in ("float32", "int8"):
        assert (bundle.engine_dir("ct2", precision) / "model.bin").is_file()
    assert (bundle.engine_dir("torch", "fp32") / "model.safetensors").is_file()
    assert bundle.verify(deep=True) == []
    gen = bundle.generation.record
    source_gen = json.loads((path / "torch" / "fp32" / "generation_config.json").read_text())
    assert gen["max_length"] == source_gen["max_length"] and gen["max_new_tokens"] == source_gen["max_length"] - 1
    assert gen["decoder_start_token_id"] == source_gen["decoder_start_token_id"]
    assert not list(path.parent.glob(f".{path.name}.*")), "staging directories left behind"
    assert all(rec["validation"] is None for precs in m["engines"].values() for rec in precs.values())


def test_tokenizer_files_match_the_hf_tokenizer(tiny_unvalidated_bundle):
    from transformers import AutoConfig, AutoTokenizer

    family, path = tiny_unvalidated_bundle
    tok_dir = Bundle.open(path).tokenizer_dir()
    spec = json.loads((tok_dir / "mtedge_tokenizer.json").read_text())
    vocab = json.loads((tok_dir / "vocab.json").read_text())
    hf = AutoTokenizer.from_pretrained(path / "torch" / "fp32", use_fast=False)
    config = AutoConfig.from_pretrained(path / "torch" / "fp32")
    assert spec["kind"] == family
    assert (tok_dir / spec["source_spm"]).is_file() and (tok_dir / spec["target_spm"]).is_file()
    # complete: one piece per model id, and the tokenizer's own ids wherever it names one
    assert sorted(vocab.values()) == list(range(config.vocab_size)) == list(range(spec["vocab_size"]))
    for piece, index in hf.get_vocab().items():
        assert vocab[piece] == index
    ids = hf("the red cat sees the dog").input_ids
    prefix = [vocab[p] for p in spec["source_prefix"]]
    suffix = [vocab[p] for p in spec["source_suffix"]]
    assert ids[:len(prefix)] == prefix and ids[len(ids) - len(suffix):] == suffix
    assert spec["eos_id"] == hf.eos_token_id and spec["unk_id"] == hf.unk_token_id
    assert spec["decoder_start_id"] == config.decoder_start_token_id
    assert set(hf.all_special_ids) <= set(spec["special_ids"])
    expected = {"marian": ([], ["</s>"], [], [[config.pad_token_id]]),
                "t5": ([], ["</s>"], [], []),
                "m2m100": (["__en__"], ["</s>"], ["__de__"], []),
                "mbart": (["en_XX"], ["</s>"], ["de_DE"], [])}[family]
    assert (spec["source_prefix"], spec["source_suffix"], spec["target_prefix"], spec["bad_words_ids"]) == expected
    if family == "t5":
        assert spec["legacy"] is False


def _weights_inline(path) -> list[str]:
    """Weights of ``path`` over 1 KB that are not in its side file ``<graph>_data`` (an input's default, such as
    the search head's zero bias, is not a weight)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inputs = {i.name for i in model.graph.input}
    stored_apart = {init.name for init in model.graph.initializer
                    if init.data_location == onnx.TensorProto.EXTERNAL
                    and {e.key: e.value for e in init.external_data}["location"] == path.name + "_data"}
    return [init.name for init in model.graph.initializer
            if init.name not in stored_apart | inputs and init.ByteSize() > 1024]


def test_int8_onnx_quantizes_every_graph(tiny_unvalidated_bundle):
    """mtedge/DESIGN.md §4.3: the merged decoder's If branches must be quantized too."""
    import onnx

    from mtedge.convert.onnx_export import float_matmuls_left

    family, path = tiny_unvalidated_bundle
    int8 = Bundle.open(path).engine_dir("onnx", "int8")
    assert Bundle.open(path).engine_record("onnx", "int8")["options"]["quantization"] == "rowwise"
    for name in ("encoder_model.onnx", "decoder_model_merged.onnx"):
        # row-wise int8 also quantizes the tied lm_head (a MatMul against Transpose(shared embedding))
        assert float_matmuls_left(int8 / name, through_transpose=True) == []
    decoder = onnx.load(str(int8 / "decoder_model_merged.onnx"))
    # the step's If (the lean decoder's output layer has an If of its own, covered by float_matmuls_left)
    (step,) = [n for n in decoder.graph.node if n.op_type == "If" and n.input[0] == "use_cache_branch"]
    branches = [a.g for a in step.attribute]
    assert len(branches) == 2
    for branch in branches:
        assert any(n.op_type == "MatMulIntegerToFloat" for n in branch.node), branch.name
    fp32 = Bundle.open(path).engine_dir("onnx", "fp32")
    assert float_matmuls_left(fp32 / "decoder_model_merged.onnx")  # the check does see float weights
    if family == "marian":  # optimum exports Marian's tied lm_head as MatMul(x, Transpose(shared embedding))
        assert len(float_matmuls_left(fp32 / "decoder_model_merged.onnx", through_transpose=True)) > \
            len(float_matmuls_left(fp32 / "decoder_model_merged.onnx"))


@pytest.mark.parametrize("engine, precision", FP32)
def test_fp32_exports_match_pytorch_exactly(tiny_bundle, engine, precision):
    _, path = tiny_bundle
    manifest = Bundle.open(path).manifest
    assert manifest["validation_reference"]["n"] == 40
    record = manifest["engines"][engine][precision]["validation"]
    assert record["n"] == 40 and record["gate_basis"] == "bleu_vs_references"
    for mode in ("greedy", "beam4"):
        assert record[mode]["agreement"] == 1.0, (engine, precision, mode, record[mode])
        assert record[mode]["bleu_vs_torch"] == 100.0
        assert record[mode]["bleu_delta"] == 0.0
        assert record[mode]["signature"]["bleu"].startswith("nrefs:1|")


@pytest.mark.parametrize("engine, precision", INT8)
def test_int8_exports_stay_close_to_pytorch(tiny_bundle, engine, precision):
    _, path = tiny_bundle
    manifest = Bundle.open(path).manifest
    record = manifest["engines"][engine][precision]["validation"]
    torch_bleu = manifest["validation_reference"]["torch"]
    for mode in ("greedy", "beam4"):
        r = record[mode]
        assert r["agreement"] >= MIN_INT8_AGREEMENT, (engine, precision, mode, r)
        assert r["bleu_delta"] >= -MAX_INT8_BLEU_LOSS, (engine, precision, mode, r)
        assert r["bleu_delta"] == pytest.approx(r["bleu_ref"] - torch_bleu[mode]["bleu_ref"], abs=0.011)
        assert r["bleu_drop"] == pytest.approx(-r["bleu_delta"], abs=0.011)
    # the tiny models are trained well enough for BLEU to mean something
    assert torch_bleu["greedy"]["bleu_ref"] > 50
