"""The bench's pure parts: percentiles, targets, config names, the synthetic model's shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mtedge.bench import metrics
from mtedge.bench.configs import ALL_CONFIGS, resolve_configs
from mtedge.bench.harness import parse_memory_limits
from mtedge.bench.targets import evaluate_targets
from mtedge.errors import UserError


@pytest.mark.parametrize("samples", [[5.0], [3.0, 1.0], [4.0, 1.0, 9.0, 2.5, 7.0, 7.5, 0.5]])
def test_percentiles_match_numpy(samples):
    for q in (50, 90, 99):
        assert metrics.percentile(samples, q) == pytest.approx(float(np.percentile(samples, q)))


def test_quality_without_references_is_none_and_with_them_signed():
    assert metrics.quality(["a"], None)["bleu"] is None
    q = metrics.quality(["Das Haus ist groß ."], ["Das Haus ist groß ."])
    assert q["bleu"] == pytest.approx(100.0) and q["bleu_signature"].startswith("nrefs:1")


def test_agreement_is_the_exact_match_rate():
    assert metrics.agreement(["a", "b", "c", "d"], ["a", "x", "c", "y"]) == 0.5


def _row(name, tok_s, rss, p50, delta=None):
    return {"name": name, "throughput_tok_s": tok_s, "peak_rss_mb": rss, "latency_ms": {"p50": p50},
            "bleu_delta": delta, "error": None}


def test_targets_are_ratios_of_rows_of_the_same_run():
    rows = [_row("hf-torch-fp32", 100, 1000, 30), _row("ct2-int8", 450, 250, 10, -0.2),
            _row("ct2-raw-int8", 460, 240, 10), _row("onnx-int8", 150, 300, 25, -0.7),
            _row("optimum-ort-int8", 50, 900, 60)]
    got = {t["target"]: t for t in evaluate_targets(rows)}
    ct2 = got["ct2-int8 throughput >= 4x hf-torch fp32 (batch 32, beam 4)"]
    assert ct2["value"] == 4.5 and ct2["status"] == "PASS"
    assert got["ct2-int8 peak memory <= 30% of hf-torch fp32"]["status"] == "PASS"
    assert got["onnx-int8 throughput >= 2x hf-torch fp32 (batch 32, beam 4)"]["status"] == "MISS"
    assert got["onnx-int8 batch-1 greedy p50 latency >= 1.5x faster than hf-torch fp32"]["value"] == 1.2
    assert got["onnx-int8 BLEU delta vs hf-torch fp32 >= -0.5"]["status"] == "MISS"
    assert got["ct2-int8 BLEU delta vs hf-torch fp32 >= -0.5"]["status"] == "PASS"


def test_targets_without_the_rows_are_not_applicable():
    rows = [_row("ct2-int8", 450, 250, 10)]
    statuses = {t["status"] for t in evaluate_targets(rows)}
    assert statuses == {"n/a"}


def test_config_names():
    assert [c.name for c in resolve_configs("ct2-int8,hf-torch-fp32,ct2-int8", gpu=False)] == \
        ["ct2-int8", "hf-torch-fp32"]
    assert "onnx-fp16" not in [c.name for c in resolve_configs(None, gpu=False)]
    assert "ct2-int8_float16" in [c.name for c in resolve_configs(None, gpu=True)]
    with pytest.raises(UserError, match="unknown bench config nope"):
        resolve_configs("ct2-int8,nope", gpu=False)
    assert ALL_CONFIGS["optimum-ort-int8"].precision == "int8"


def test_memory_limit_option():
    assert parse_memory_limits(["4000", "ct2-int8=300"]) == {"*": 4000, "ct2-int8": 300}
    with pytest.raises(UserError):
        parse_memory_limits(["ct2-int8=lots"])


def test_synthetic_opus_mt_en_de_has_the_real_shape(tmp_path):
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    from mtedge.bench.synthetic import OPUS_MT_EN_DE, write_marian_tokenizer

    config = MarianConfig(**OPUS_MT_EN_DE)
    with torch.device("meta"):
        model = MarianMTModel(config)
    # opus-mt-en-de: 73.9M parameters + the 58101-entry final_logits_bias buffer-as-parameter
    n = sum(p.numel() for p in model.parameters())
    assert 74_000_000 < n < 75_000_000
    write_marian_tokenizer(tmp_path, OPUS_MT_EN_DE["vocab_size"], OPUS_MT_EN_DE["pad_token_id"])
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert sorted(vocab.values()) == list(range(58101))
    assert vocab["</s>"] == 0 and vocab["<unk>"] == 1 and vocab["<pad>"] == 58100
    tok = MarianTokenizer.from_pretrained(tmp_path)
    ids = tok("the people work").input_ids
    assert ids[-1] == 0 and 1 not in ids and len(tok) == 58101


def _cli(args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mtedge.cli", "bench", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_input_mistakes_are_one_line_errors(tmp_path):
    (tmp_path / "plain").mkdir()
    cases = [
        (["--no-progress"], "give a MODEL"),
        ([str(tmp_path / "plain")], "--test FILE is required"),
        ([str(tmp_path / "missing"), "--test", str(tmp_path / "t.txt")], "test file not found"),
        ([str(tmp_path / "plain"), "--synthetic", "opus-mt-en-de"], "not both"),
        (["--synthetic", "opus-mt-xx-yy", "--work-dir", str(tmp_path / "w")], "unknown synthetic model"),
    ]
    for args, message in cases:
        proc = _cli(args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_a_directory_that_is_no_model_is_rejected(tmp_path):
    from mtedge.bench.exporting import resolve_bundle

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither an mtedge bundle"):
        resolve_bundle(tmp_path / "empty", tmp_path / "work")
    with pytest.raises(UserError, match="model not found"):
        resolve_bundle(tmp_path / "nope", tmp_path / "work")


def test_test_files_with_and_without_references(tmp_path):
    from mtedge.bench.testset import load_test_set

    tsv = tmp_path / "t.tsv"
    tsv.write_text("a house\tein Haus\nthe man\tder Mann\n", encoding="utf-8")
    plain = tmp_path / "t.txt"
    plain.write_text("a house\n\nthe man\n", encoding="utf-8")
    with_refs, without = load_test_set(tsv), load_test_set(plain)
    assert with_refs.sources == ["a house", "the man"] and with_refs.references == ["ein Haus", "der Mann"]
    assert without.sources == ["a house", "the man"] and without.references is None
