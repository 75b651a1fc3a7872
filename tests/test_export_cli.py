"""``mtedge export`` / ``mtedge info`` end to end: quality gate, atomic output, --force, bad input."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from mtedge.bundle import Bundle
from mtedge.cli import main

FAST = ["--engines", "ct2", "--ct2-precisions", "float32", "--no-torch", "--threads", "1"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.fixture
def dev_tsv(tmp_path, tiny_dev_pairs) -> Path:
    path = tmp_path / "dev.tsv"
    path.write_text("".join(f"{s}\t{r}\n" for s, r in tiny_dev_pairs[:10]), encoding="utf-8")
    return path


def copy_model(src: Path, dst: Path, skip=()) -> Path:
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n in skip])
    return dst


# -- quality gate --------------------------------------------------------------------------------
def test_gate_failure_names_the_export_and_writes_nothing(tiny_marian, dev_tsv, tmp_path, capsys):
    out = tmp_path / "out" / "bundle"
    code, _, err = run_cli(capsys, "export", tiny_marian, "-o", out, *FAST, "--validation-file", dev_tsv,
                           "--max-bleu-drop", "-1")
    assert code == 2
    assert "error: quality gate failed (--max-bleu-drop -1.0): ct2 float32 loses 0.00 BLEU vs PyTorch" in err
    assert "BLEU vs references" in err and "not written" in err
    assert not out.exists() and leftovers(out.parent) == []


def test_gate_passes_without_references_and_records_its_basis(tiny_marian, tiny_dev_pairs, tmp_path, capsys):
    sources = tmp_path / "sources.txt"  # one column: no references
    sources.write_text("".join(f"{s}\n" for s, _ in tiny_dev_pairs[:8]), encoding="utf-8")
    out = tmp_path / "bundle"
    code, stdout, err = run_cli(capsys, "export", tiny_marian, "-o", out, *FAST, "--validation-file", sources,
                                "--max-bleu-drop", "0")
    assert code == 0, err
    assert "[export] validation: ct2 float32" in err  # progress on stderr
    assert stdout.strip() == str(out)
    record = Bundle.open(out).manifest["engines"]["ct2"]["float32"]["validation"]
    assert record["n"] == 8 and record["source"] == str(sources)
    assert record["gate_basis"] == "100_minus_bleu_vs_torch"
    for mode in ("greedy", "beam4"):
        assert record[mode]["bleu_ref"] is None and record[mode]["bleu_delta"] is None
        assert record[mode]["bleu_drop"] == 0.0 and record[mode]["agreement"] == 1.0


def test_builtin_validation_sample():
    from mtedge.convert.validation import load_validation_set

    vset = load_validation_set(None, 200)
    assert len(vset.sources) == 200 and len(set(vset.sources)) == 200
    assert vset.references is None and vset.origin.startswith("built-in English sample")
    assert len(load_validation_set(None, 5).sources) == 5


def test_validation_file_formats(tmp_path):
    from mtedge.convert.validation import load_validation_set
    from mtedge.errors import DataError

    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text('{"source": "a cat", "target": "eine Katze"}\n\n{"translation": {"en": "a dog", "de": "ein Hund"}}\n')
    vset = load_validation_set(jsonl, 10)
    assert vset.sources == ["a cat", "a dog"] and vset.references == ["eine Katze", "ein Hund"]
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("a cat\teine Katze\na dog\n")
    assert load_validation_set(tsv, 10).references is None  # one reference missing: compare with PyTorch only
    with pytest.raises(DataError, match="validation file not found"):
        load_validation_set(tmp_path / "missing.tsv", 10)
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: not valid JSON"):
        load_validation_set(tmp_path / "bad.jsonl", 10)


# -- atomic output and --force -------------------------------------------------------------------
@pytest.mark.parametrize("failure", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failure_mid_export_leaves_no_bundle(tiny_marian, tmp_path, monkeypatch, failure):
    from mtedge.convert import ct2_export, export_bundle

    reached = []

    def explode(*args, **kwargs):
        reached.append(True)  # the ONNX exports and the tokenizer are already written by now
        raise failure

    monkeypatch.setattr(ct2_export, "export_ct2", explode)
    out = tmp_path / "bundle"
    with pytest.raises(type(failure)):
        export_bundle(tiny_marian, out, validate=False, log=lambda m: None)
    assert reached
    assert not out.exists() and leftovers(tmp_path) == []


def test_existing_bundle_needs_force(tiny_marian, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert run_cli(capsys, "export", tiny_marian, "-o", out, *FAST, "--no-validate")[0] == 0
    (out / "marker").write_text("old")
    code, _, err = run_cli(capsys, "export", tiny_marian, "-o", out, *FAST, "--no-validate")
    assert code == 2 and f"error: {out} already exists; pass --force to replace it" in err
    assert (out / "marker").exists()
    code, _, err = run_cli(capsys, "export", tiny_marian, "-o", out, "--engines", "onnx", "--onnx-precisions",
                           "int8", "--no-torch", "--no-validate", "--force")
    assert code == 0, err
    assert not (out / "marker").exists()
    assert Bundle.open(out).engines() == {"onnx": ["int8"]}
    assert not (out / "onnx" / ".fp32-for-int8").exists()
    assert leftovers(tmp_path) == []


def test_refuses_to_replace_a_directory_that_is_not_a_bundle(tiny_marian, tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "export", tiny_marian, "-o", out, *FAST, "--no-validate", "--force")
    assert code == 2 and "exists and is not an mtedge bundle" in err
    assert (out / "notes.txt").read_text() == "keep me"


# -- bad input -----------------------------------------------------------------------------------
def test_unsupported_architecture(tmp_path, capsys):
    model = tmp_path / "gpt"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    code, _, err = run_cli(capsys, "export", model, "-o", tmp_path / "out")
    assert code == 2
    assert "not an encoder-decoder model; supported: Marian (opus-mt), T5/mT5, M2M100/NLLB, mBART" in err
    (model / "config.json").write_text(json.dumps({"model_type": "bart", "is_encoder_decoder": True}))
    code, _, err = run_cli(capsys, "export", model, "-o", tmp_path / "out")
    assert code == 2 and "model type 'bart' is not a supported" in err and "M2M100/NLLB" in err
    assert not (tmp_path / "out").exists()


def test_peft_adapter_directory(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8,
                                                             "base_model_name_or_path": "base"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    code, _, err = run_cli(capsys, "export", adapter, "-o", tmp_path / "out")
    assert code == 2 and "is a PEFT adapter" in err and "mtedge merge" in err
    code, out, _ = run_cli(capsys, "info", adapter)
    assert code == 0 and "PEFT adapter" in out and "mtedge merge" in out


def test_checkpoint_still_holding_lora_tensors(tiny_marian, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model = copy_model(tiny_marian, tmp_path / "wrapped")
    weights = load_file(model / "model.safetensors")
    weights["model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight"] = weights[
        "model.encoder.layers.0.self_attn.q_proj.weight"][:4].clone()
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    code, _, err = run_cli(capsys, "export", model, "-o", tmp_path / "out")
    assert code == 2 and "still holds PEFT/LoRA tensors" in err and "mtedge merge" in err
    code, out, _ = run_cli(capsys, "info", model)
    assert code == 0 and "LoRA tensors" in out


def test_missing_tokenizer_files(tiny_marian, tiny_m2m100, tmp_path, capsys):
    model = copy_model(tiny_marian, tmp_path / "marian", skip={"vocab.json"})
    code, _, err = run_cli(capsys, "export", model, "-o", tmp_path / "out")
    assert code == 2 and "lacks the tokenizer file(s) vocab.json" in err
    model = copy_model(tiny_m2m100, tmp_path / "m2m", skip={"sentencepiece.bpe.model"})
    code, _, err = run_cli(capsys, "export", model, "-o", tmp_path / "out")
    assert code == 2 and "sentencepiece.bpe.model" in err
    assert not (tmp_path / "out").exists()


def test_missing_model_and_weights(tiny_t5, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", tmp_path / "nowhere", "-o", tmp_path / "out")
    assert code == 2 and "model not found" in err
    model = copy_model(tiny_t5, tmp_path / "t5", skip={"model.safetensors"})
    code, _, err = run_cli(capsys, "export", model, "-o", tmp_path / "out")
    assert code == 2 and "has no model weights" in err


@pytest.mark.parametrize("args, message", [
    (["--onnx-precisions", "int3"], "unknown onnx precision(s) int3; choose from fp32, int8, int8_latency, int4, fp16"),
    (["--ct2-precisions", "float8"], "unknown ct2 precision(s) float8"),
    (["--engines", "tflite"], "unknown engine(s) tflite; choose from onnx, ct2"),
    (["--no-validate", "--max-bleu-drop", "1"], "--max-bleu-drop needs validation"),
    (["--onnx-precisions", "int8_latency", "--onnx-int8", "dynamic"], "onnx int8_latency is a row-wise int8"),
])
def test_bad_options(tiny_marian, tmp_path, capsys, args, message):
    code, _, err = run_cli(capsys, "export", tiny_marian, "-o", tmp_path / "out", *args)
    assert code == 2 and message in err


def test_onnx_fp16_needs_a_gpu(tiny_marian, tmp_path, capsys):
    from mtedge.engines import cuda_available

    if cuda_available("torch"):
        pytest.skip("a GPU is present")
    code, _, err = run_cli(capsys, "export", tiny_marian, "-o", tmp_path / "out", "--onnx-precisions", "fp16")
    assert code == 2 and "onnx fp16 is exported on a CUDA GPU and none was found" in err


@pytest.mark.gpu("torch", "onnx")
def test_onnx_fp16_exports_on_a_gpu(tiny_marian, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", tiny_marian, "-o", tmp_path / "out", "--engines", "onnx",
                           "--onnx-precisions", "fp16")
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert list(manifest["engines"]["onnx"]) == ["fp16"]


def _marian_with_nonzero_pad(tiny_marian: Path, dst: Path) -> Path:
    from safetensors.torch import load_file, save_file

    model = copy_model(tiny_marian, dst)
    weights = load_file(model / "model.safetensors")
    pad = json.loads((model / "config.json").read_text())["pad_token_id"]
    for name, tensor in weights.items():
        if name.endswith(("shared.weight", "embed_tokens.weight", "lm_head.weight")):
            tensor[pad] = 0.05
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    return model


def test_marian_pad_row(tiny_marian, tmp_path, capsys):
    """mtedge/DESIGN.md §4.1: a nonzero <pad> row is refused under --strict-pad, else zeroed for CT2 and recorded."""
    model = _marian_with_nonzero_pad(tiny_marian, tmp_path / "moved-pad")
    code, _, err = run_cli(capsys, "export", model, "-o", tmp_path / "strict", *FAST, "--no-validate",
                           "--strict-pad")
    assert code == 2 and "<pad> embedding row (id" in err and "is not zero" in err
    assert not (tmp_path / "strict").exists()
    code, _, err = run_cli(capsys, "export", model, "-o", tmp_path / "lenient", *FAST, "--no-validate")
    assert code == 0, err
    manifest = Bundle.open(tmp_path / "lenient").manifest
    assert manifest["export"]["ct2_marian_pad"]["pad_row_zeroed"] is True
    assert manifest["export"]["ct2_marian_pad"]["pad_row_norm"] > 0
    assert manifest["engines"]["ct2"]["float32"]["options"]["pad_row_zeroed"] is True
    # the source checkpoint itself is untouched
    from mtedge.convert.marian_pad import marian_pad_row_norm

    assert marian_pad_row_norm(model, manifest["generation"]["pad_token_id"]) > 0
    assert marian_pad_row_norm(tiny_marian, manifest["generation"]["pad_token_id"]) == 0


# -- mtedge info ---------------------------------------------------------------------------------
def test_info_on_a_bundle(tiny_marian_bundle, capsys):
    code, out, err = run_cli(capsys, "info", tiny_marian_bundle, "--deep")
    assert code == 0, err
    assert "family        marian (MarianMTModel)" in out and "languages     en → de" in out
    for engine, precision in [("onnx", "fp32"), ("onnx", "int8"), ("ct2", "float32"), ("ct2", "int8"),
                              ("torch", "fp32")]:
        line = next(l for l in out.splitlines() if l.strip().startswith(f"{engine}") and f" {precision} " in l)
        assert " MB" in line and "agree" in line
    assert "signatures    nrefs:1|" in out and "sha256 checked" in out
    # the fixture keeps HF's default early_stopping=False: info says where ct2's beam search differs
    assert "early_stopping False" in out and "ct2 beam search stops like HF early_stopping=True" in out
    assert re.search(r"row-wise int8, [78]-bit weights \(preset \w+\)", out)
    assert out.count("decoder: lean") == 2   # Marian: the lean decoder in fp32 and the int8 made from it


def test_info_says_which_int8_is_written_for_one_sentence_at_a_time(tiny_unvalidated_bundles, capsys):
    code, out, err = run_cli(capsys, "info", tiny_unvalidated_bundles("marian"))
    assert code == 0, err
    lines = [line for line in out.splitlines() if "row-wise int8" in line]
    assert len(lines) == 2 and sum("decoder for one sentence at a time (MatMulNBits)" in line for line in lines) == 1
    from mtedge.convert.rowwise_int8 import DEFAULT_INT4_BLOCK

    assert f"int8 activations per row, 4-bit, blocks of {DEFAULT_INT4_BLOCK} along K, one scale per block; for one " \
           f"sentence at a time (MatMulNBits)" in out
    manifest = Bundle.open(tiny_unvalidated_bundles("marian")).manifest["engines"]["onnx"]
    assert manifest["int8"]["options"]["kernels"] == {"encoder_model.onnx": "gemm", "decoder_model_merged.onnx": "gemm"}
    assert manifest["int8_latency"]["options"]["kernels"] == {"encoder_model.onnx": "gemm",
                                                              "decoder_model_merged.onnx": "gemv"}
    assert manifest["int4"]["options"]["kernels"] == {"encoder_model.onnx": "gemv", "decoder_model_merged.onnx": "gemv"}
    # MatMulNBits rounds a row's sums by the rows in the call (mtedge/engines/rowwise_int8.py)
    assert {p: manifest[p]["options"]["batch_invariant"] for p in ("int8", "int8_latency", "int4")} == {
        "int8": True, "int8_latency": False, "int4": False}


def test_the_bench_reuses_a_cached_bundle_only_if_this_exporter_wrote_its_graphs(tiny_marian_bundle):
    from mtedge.bench.synthetic import exported_by_this_version
    from mtedge.bundle import Bundle
    from mtedge.convert.onnx_export import GRAPH_REVISION

    manifest = Bundle.open(tiny_marian_bundle).manifest
    records = manifest["engines"]["onnx"]
    assert {p: r["options"]["graph_revision"] for p, r in records.items()} == {"fp32": GRAPH_REVISION,
                                                                                "int8": GRAPH_REVISION}
    assert not exported_by_this_version(manifest)             # the bench also exports int8_latency and int4
    records["int8_latency"] = copy.deepcopy(records["int8"])
    assert not exported_by_this_version(manifest)
    records["int4"] = copy.deepcopy(records["int8"])
    assert exported_by_this_version(manifest)
    records["int8"]["options"]["graph_revision"] = GRAPH_REVISION - 1
    assert not exported_by_this_version(manifest)
    del records["int8"]["options"]["graph_revision"]          # exported before the revision was recorded
    assert not exported_by_this_version(manifest)


def test_info_flags_a_row_wise_int8_from_before_the_bias_fix(tiny_marian_bundle, tmp_path, capsys):
    bundle = shutil.copytree(tiny_marian_bundle, tmp_path / "old")
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["engines"]["onnx"]["int8"]["options"]["weight_bits"]   # what such a bundle's record lacks
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    code, out, _ = run_cli(capsys, "info", bundle)
    assert code == 0 and "exported before 2026-12-02" in out and "re-export" in out
    from mtedge import Translator
    from mtedge.engines.rowwise_int8 import StaleInt8Warning

    with pytest.warns(StaleInt8Warning, match="re-export"):
        Translator(str(bundle), engine="onnx", precision="int8")


def test_info_names_a_broken_file(tiny_marian_bundle, tmp_path, capsys):
    bundle = shutil.copytree(tiny_marian_bundle, tmp_path / "copy")
    (bundle / "onnx" / "int8" / "decoder_model_merged.onnx").unlink()
    model_bin = bundle / "ct2" / "int8" / "model.bin"
    model_bin.write_bytes(model_bin.read_bytes()[:100])
    code, out, err = run_cli(capsys, "info", bundle)
    assert code == 2
    assert "missing file" in err and "onnx/int8/decoder_model_merged.onnx" in err
    assert "wrong size for" in err and "ct2/int8/model.bin" in err
    assert "error: bundle" in err and "2 problem(s)" in err


def test_info_refuses_an_unknown_format_version(tiny_marian_bundle, tmp_path, capsys):
    bundle = shutil.copytree(tiny_marian_bundle, tmp_path / "copy")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 7
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, "info", bundle)
    assert code == 2 and "format version 7; this mtedge reads version(s) 1" in err


def test_info_on_a_checkpoint(tiny_m2m100, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "info", tiny_m2m100)
    assert code == 0
    assert "family        m2m100 (M2M100ForConditionalGeneration" in out
    assert "parameters" in out and "(from safetensors headers)" in out and "peft adapter  no" in out
    code, _, err = run_cli(capsys, "info", tmp_path)
    assert code == 2 and "neither an mtedge bundle" in err


def test_more_ct2_precisions_come_from_one_conversion(tiny_t5, tmp_path, capsys):
    """CPU and GPU CT2 types are all quantized from one float32 load (GPU types convert on CPU too)."""
    out = tmp_path / "bundle"
    code, _, err = run_cli(capsys, "export", tiny_t5, "-o", out, "--engines", "ct2", "--ct2-precisions",
                           "int8_float32,int16,float16,float32", "--no-torch", "--no-validate")
    assert code == 0, err
    bundle = Bundle.open(out)
    assert bundle.engines() == {"ct2": ["float32", "int8_float32", "int16", "float16"]}
    sizes = {p: bundle.size_bytes("ct2", p) for p in bundle.engines()["ct2"]}
    assert sizes["int8_float32"] < sizes["int16"] < sizes["float32"]
    assert sizes["float16"] < sizes["float32"]
