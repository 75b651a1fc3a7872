"""The bench's pure parts: percentiles, targets, config names, the synthetic model's shape."""

from __future__ import annotations

import json
import math
from pathlib import Path

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
    from mtedge import metrics

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


def test_a_missed_target_says_by_how_much():
    rows = [_row("hf-torch-fp32", 100, 1000, 30), _row("onnx-int8", 150, 400, 25, -0.7)]
    got = {t["target"]: t for t in evaluate_targets(rows)}
    tput = got["onnx-int8 throughput >= 2x hf-torch fp32 (batch 32, beam 4)"]
    assert tput["gap"] == "75.0% of the target: needs 1.33x more"
    assert got["onnx-int8 BLEU delta vs hf-torch fp32 >= -0.5"]["gap"] == "0.20 BLEU short"
    rows = [_row("hf-torch-fp32", 100, 1000, 30), _row("ct2-int8", 450, 450, 10)]
    mem = {t["target"]: t for t in evaluate_targets(rows)}["ct2-int8 peak memory <= 30% of hf-torch fp32"]
    assert mem["status"] == "MISS" and mem["gap"] == "1.5x the bound: needs 1.5x less"


def _rounds(name, tok_s_per_round, p50=10.0, rss=100.0):
    return {"name": name, "error": None, "throughput_tok_s": metrics.median(tok_s_per_round),
            "latency_ms": {"p50": p50}, "peak_rss_mb": rss, "bleu_delta": None,
            "rounds": [{"throughput_tok_s": v, "latency_p50": p50, "peak_rss_mb": rss, "error": None}
                       for v in tok_s_per_round]}


def test_a_target_over_rounds_is_the_median_of_per_round_ratios_and_settled_only_when_all_agree():
    label = "ct2-int8 throughput >= 4x hf-torch fp32 (batch 32, beam 4)"
    torch = _rounds("hf-torch-fp32", [100.0, 50.0, 100.0])   # round 2 ran on a busier machine
    # ct2 slowed down in round 2 as well: its per-round ratios are 4.5, 4.4, 4.2 (all pass), although
    # the ratio of the two medians (450 / 100) would hide that round 2 ran at half speed for both
    steady = {t["target"]: t for t in evaluate_targets([torch, _rounds("ct2-int8", [450.0, 220.0, 420.0])])}
    assert steady[label]["status"] == "PASS" and steady[label]["value"] == pytest.approx(4.4)
    assert steady[label]["spread"] == pytest.approx([4.2, 4.5]) and steady[label]["rounds"] == 3
    crossing = {t["target"]: t for t in evaluate_targets([torch, _rounds("ct2-int8", [450.0, 190.0, 380.0])])}
    assert crossing[label]["status"] == "UNSETTLED" and crossing[label]["value"] == pytest.approx(3.8)
    assert "3.8 to 4.5 crosses the bound" in crossing[label]["note"]
    missed = {t["target"]: t for t in evaluate_targets([torch, _rounds("ct2-int8", [390.0, 190.0, 380.0])])}
    assert missed[label]["status"] == "MISS" and missed[label]["gap"] == "95.0% of the target: needs 1.05x more"


def test_a_round_that_failed_drops_out_of_the_ratios():
    torch = _rounds("hf-torch-fp32", [100.0, 100.0])
    ct2 = _rounds("ct2-int8", [450.0, 300.0])
    ct2["rounds"][1].update(throughput_tok_s=None, error="worker failed")
    got = {t["target"]: t for t in evaluate_targets([torch, ct2])}
    tput = got["ct2-int8 throughput >= 4x hf-torch fp32 (batch 32, beam 4)"]
    assert tput["value"] == 4.5 and tput["rounds"] == 1 and tput["status"] == "PASS"


def _round_row(tok_s, greedy_ms, rss, error=None):
    if error:
        return {"name": "onnx-int8", "throughput_tok_s": None, "latency_ms": None, "latency_beam4_ms": None,
                "peak_rss_mb": None, "error": error}
    row = {"name": "onnx-int8", "throughput_tok_s": tok_s, "latency_ms": metrics.latency_summary(greedy_ms),
           "latency_beam4_ms": metrics.latency_summary([2 * ms for ms in greedy_ms]), "peak_rss_mb": rss,
           "load_s": 1.0, "first_translation_ms": 5.0, "error": error,
           "raw": {"latency_ms": {"greedy": greedy_ms, "beam4": [2 * ms for ms in greedy_ms]},
                   "throughput_pass_s": [1.0], "worker_wall_s": 4.0, "worker_own_peak_rss_mb": rss - 1}}
    return row


def test_rounds_combine_into_one_row_medians_pooled_percentiles_and_the_highest_peak():
    from mtedge.bench.rows import combine_rounds

    rounds = [_round_row(300.0, [10.0, 12.0], 500.0), _round_row(200.0, [30.0, 31.0], 520.0),
              _round_row(310.0, [11.0, 13.0], 510.0)]
    row = combine_rounds(rounds, [["a"], ["a"], ["a"]])
    assert row["throughput_tok_s"] == 300.0 and row["peak_rss_mb"] == 520.0
    pooled = [10.0, 12.0, 30.0, 31.0, 11.0, 13.0]
    assert row["latency_ms"] == metrics.latency_summary(pooled) and row["raw"]["latency_ms"]["greedy"] == pooled
    assert [r["throughput_tok_s"] for r in row["rounds"]] == [300.0, 200.0, 310.0]
    assert "warning" not in row and rounds[0]["throughput_tok_s"] == 300.0   # the rounds are not rewritten


def test_a_throughput_only_round_adds_to_the_throughput_median_but_not_to_the_latency_pool():
    from mtedge.bench.rows import combine_rounds

    extra = _round_row(150.0, [], 530.0)
    extra.update(latency_ms=None, latency_beam4_ms=None, first_translation_ms=None, throughput_only=True)
    extra["raw"]["latency_ms"] = None
    rounds = [_round_row(300.0, [10.0, 12.0], 500.0), _round_row(200.0, [30.0, 31.0], 520.0), extra]
    row = combine_rounds(rounds, [["a"], ["a"], ["a"]])
    assert row["throughput_tok_s"] == 200.0 and row["peak_rss_mb"] == 530.0
    assert row["raw"]["latency_ms"]["greedy"] == [10.0, 12.0, 30.0, 31.0] and row["first_translation_ms"] == 5.0
    assert [r["latency_p50"] for r in row["rounds"]][2] is None
    assert [r["throughput_only"] for r in row["rounds"]] == [False, False, True]


@pytest.mark.parametrize("n, rank, coverage", [(1, 1, 0.0), (3, 1, 0.75), (4, 1, 0.875), (5, 1, 0.9375),
                                               (8, 2, 0.9296875), (9, 2, 0.9609375), (13, 4, 0.90771484375)])
def test_the_median_interval_is_the_sign_tests_order_statistics(n, rank, coverage):
    # coverage = 1 - 2 P(Binomial(n, 1/2) < rank), the largest rank that keeps it >= 90% (min-max below 5)
    values = [float(v) for v in range(n, 0, -1)]     # unsorted on purpose
    low, high, got = metrics.median_interval(values)
    assert (low, high) == (rank, n + 1 - rank) and got == pytest.approx(coverage)
    below = sum(math.comb(n, j) for j in range(rank)) / 2 ** n
    assert got == pytest.approx(1 - 2 * below)
    with pytest.raises(ValueError):
        metrics.median_interval([])


def test_one_slow_round_of_nine_does_not_unsettle_a_target_that_min_max_would():
    label = "onnx-int8 throughput >= 0.9x raw CTranslate2 int8 (batch 32, beam 4)"
    ct2 = _rounds("ct2-raw-int8", [500.0] * 9)
    # per-round ratios 0.68 (the VM's slow minute), then 1.0 .. 1.35
    onnx = _rounds("onnx-int8", [340.0, 500.0, 530.0, 550.0, 560.0, 570.0, 600.0, 640.0, 675.0])
    got = {t["target"]: t for t in evaluate_targets([ct2, onnx])}[label]
    assert got["rounds"] == 9 and got["coverage"] == pytest.approx(0.9609375)
    assert got["spread"] == pytest.approx([1.0, 1.28]) and got["value"] == pytest.approx(1.12)
    assert got["status"] == "PASS"      # min-max (0.68-1.35) would have called it UNSETTLED


def test_a_target_stated_on_the_median_of_rounds_is_judged_on_the_median():
    label = "mtedge ct2-int8 throughput >= 0.97x raw CTranslate2 int8 (median of rounds)"
    raw = _rounds("ct2-raw-int8", [100.0, 100.0, 100.0])
    got = {t["target"]: t for t in evaluate_targets([raw, _rounds("ct2-int8", [90.0, 99.0, 110.0])])}
    assert got[label]["status"] == "PASS" and got[label]["spread"] == pytest.approx([0.9, 1.1])
    assert "median decides" in got[label]["note"]
    # the interval rule on the same rounds (issue 6's 5% bound) cannot settle it
    assert got["mtedge ct2-int8 throughput within 5% of raw CTranslate2 int8"]["status"] == "UNSETTLED"
    low = {t["target"]: t for t in evaluate_targets([raw, _rounds("ct2-int8", [90.0, 96.0, 110.0])])}
    assert low[label]["status"] == "MISS"


def test_ms_per_token_needs_forced_lengths_and_divides_each_rounds_p50_by_them():
    label = "onnx-int8-latency batch-1 greedy p50 <= 3 ms per generated token"
    row = _rounds("onnx-int8-latency", [400.0, 400.0, 400.0], p50=80.0)
    row["rounds"][1]["latency_p50"] = 110.0
    free = {t["target"]: t for t in evaluate_targets([row], {"forced_length": False, "max_length": 32})}
    assert free[label]["status"] == "n/a" and "forced output lengths" in free[label]["note"]
    forced = {t["target"]: t for t in evaluate_targets([row], {"forced_length": True, "max_length": 32})}
    assert forced[label]["value"] == pytest.approx(2.5) and forced[label]["spread"] == pytest.approx([2.5, 3.4375])
    assert forced[label]["status"] == "UNSETTLED"
    assert forced["onnx-int8 batch-1 greedy p50 <= 3 ms per generated token"]["note"] == "not measured"


def test_a_failed_round_or_differing_outputs_leave_a_warning_and_all_failed_is_an_error():
    from mtedge.bench.rows import combine_rounds

    ok, failed = _round_row(300.0, [10.0], 500.0), _round_row(None, [], None, error="worker timed out")
    row = combine_rounds([ok, failed, _round_row(280.0, [12.0], 505.0)], [["a", "b"], None, ["a", "c"]])
    assert row["error"] is None and row["throughput_tok_s"] == 290.0
    assert "1 of 3 rounds failed (round 2: worker timed out)" in row["warning"]
    assert "outputs of round(s) 3 differ" in row["warning"]
    dead = combine_rounds([failed, failed], [None, None])
    assert dead["error"] == "worker timed out" and len(dead["rounds"]) == 2


def test_rounds_rotate_the_order_of_the_configurations():
    from mtedge.bench.harness import rotated

    configs = resolve_configs("onnx-fp32,onnx-int8,ct2-int8", gpu=False)
    orders = [[c.name for c in rotated(configs, r)] for r in range(4)]
    assert orders == [["onnx-fp32", "onnx-int8", "ct2-int8"], ["onnx-int8", "ct2-int8", "onnx-fp32"],
                      ["ct2-int8", "onnx-fp32", "onnx-int8"], ["onnx-fp32", "onnx-int8", "ct2-int8"]]


def test_the_int8_kernel_named_is_the_one_mlas_would_pick_for_these_flags():
    from mtedge.cpu import mlas_int8_kernel

    assert mlas_int8_kernel({"avx2"}).startswith("AVX2")
    assert mlas_int8_kernel({"avx2", "avx_vnni"}) == "AVX-VNNI"
    assert mlas_int8_kernel({"avx2", "avx_vnni", "avx512bw"}).startswith("AVX512 core")   # AVX512 core wins
    assert mlas_int8_kernel({"avx2", "avx512bw", "avx512_vnni", "amx_int8"}) == "AMX"


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
        (["--synthetic", "opus-mt-en-de", "--latency-sentences", "0", "--work-dir", str(tmp_path / "w")],
         "--latency-sentences must be >= 1"),
        (["--synthetic", "opus-mt-en-de", "--throughput-min-seconds", "-1", "--work-dir", str(tmp_path / "w")],
         "--throughput-min-seconds must be >= 0"),
        (["--synthetic", "opus-mt-en-de", "--throughput-rounds", "-1", "--work-dir", str(tmp_path / "w")],
         "--throughput-rounds must be >= 0"),
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


# ---------------------------------------------------------------- report rendering

def _full_row(name, group, tok_s, rss, p50, bleu=None, error=None):
    row = {"name": name, "engine": "ct2", "precision": "int8", "runner": "x", "group": group,
           "throughput_tok_s": tok_s, "peak_rss_mb": rss, "disk_mb": 12.5, "load_s": 0.5, "first_translation_ms": 9.0,
           "latency_ms": {"p50": p50, "p90": p50 * 1.5, "p99": p50 * 2}, "bleu": bleu, "chrf": bleu,
           "bleu_delta": None if bleu is None else bleu - 30.0, "chrf_delta": None, "agreement": None,
           "error": error}
    if error:
        row.update(throughput_tok_s=None, peak_rss_mb=None, latency_ms=None, load_s=None)
    row["latency_beam4_ms"] = row["latency_ms"]
    return row


def _report(rows, synthetic=None):
    from mtedge.bench.targets import evaluate_targets

    return {"machine": {"cpu_model": "Test CPU", "usable_cores": 2, "cpu_count": 2, "simd": {"AVX2": True},
                        "packages": {"mtedge": "0"}, "gpu": None, "load_average": [3.0, 2.0, 1.0]},
            "settings": {"threads": 2, "batch_size": 32, "beam_size": 4, "length_penalty": 0.0,
                         "throughput_repeats": 2, "latency_sentences": 4, "repeats": 2, "warmup": 1,
                         "max_length": 24, "forced_length": bool(synthetic), "token_count_method": "forced"},
            "model": {"name": "m", "bundle": "b", "family": "marian", "synthetic": synthetic},
            "test_set": {"origin": "t", "n_sentences": 8, "has_references": not synthetic},
            "quality_note": "skipped: synthetic" if synthetic else "refs", "results": rows,
            "targets": evaluate_targets(rows), "plots": []}


def test_a_report_is_derived_from_the_rows_without_changing_them():
    from mtedge.bench.report import Report

    rows = [_full_row("hf-torch-fp32", "peer", 100.0, 800.0, 40.0, bleu=30.0),
            _full_row("ct2-int8", "ours", 450.0, 200.0, 10.0, bleu=29.0)]
    before = json.dumps(rows)
    outputs = {"hf-torch-fp32": ["a", "b"], "ct2-int8": ["a", "c"]}
    report = Report({"quality_note": "refs"}, True, rows=rows, outputs=outputs).build()
    assert json.dumps(rows) == before    # a save never rewrites what was measured
    ct2 = report["results"][1]
    assert ct2["agreement"] == 0.5 and ct2["bleu_delta"] == -1.0 and ct2["vs_reference"]["throughput"] == 4.5
    assert "reference_note" not in report
    alone = Report({"quality_note": "refs"}, True, rows=rows[1:], outputs=outputs).build()
    assert alone["reference_note"] == "hf-torch-fp32 was not measured in this run: no deltas or agreement"


def test_markdown_shows_every_config_with_ratios_vs_torch():
    from mtedge.bench.report import markdown_table, reference_ratios, render_markdown

    rows = [_full_row("hf-torch-fp32", "peer", 100.0, 800.0, 40.0, bleu=30.0),
            _full_row("ct2-int8", "ours", 450.0, 200.0, 10.0, bleu=29.8),
            _full_row("ct2-int16", "ours", None, None, 1.0, error="unsupported here: CTranslate2 cannot run int16")]
    for row in rows:
        row["vs_reference"] = reference_ratios(row, rows[0])
    assert rows[1]["vs_reference"] == {"throughput": 4.5, "latency_p50_speedup": 4.0, "peak_rss": 0.25}
    assert "spread" not in rows[1]["vs_reference"]     # one round: no spread to show
    assert rows[2]["vs_reference"] == {"throughput": None, "latency_p50_speedup": None, "peak_rss": None}
    table = markdown_table(rows)
    speed = next(line for line in table.splitlines() if line.startswith("| ct2-int8 | ours | 450.0 |"))
    assert "| 4.50x |" in speed and "| 4.00x |" in speed and "| 0.25x |" in speed
    assert "| 10.0 / 15.0 / 20.0 |" in speed and "| 200.0 |" in speed and "| 12.5 |" in speed and "| ok |" in speed
    assert "| ct2-int8 | 29.80 | 29.80 | -0.20 |" in table     # the quality table
    assert "| ct2-int16 | ours | n/a |" in table and "| unsupported here |" in table
    assert "- **ct2-int16**: unsupported here: CTranslate2 cannot run int16" in table
    md = render_markdown(_report(rows))
    assert "| ct2-int8 throughput >= 4x hf-torch fp32 (batch 32, beam 4) | 4.5 |  | >= 4 | PASS |" in md
    assert "- **rounds**: 1 (ratios from one worker per configuration; no spread)" in md
    assert "load average at start 3.0" in md


def test_a_throughput_bar_shows_the_tables_ratio():
    """The bar's "x torch" is the report table's median of per-round ratios, not the ratio of two medians."""
    from mtedge.bench.plots import throughput_label

    row = {"throughput_tok_s": 721.2, "vs_reference": {"throughput": 4.5613}}
    assert throughput_label(row, 153.5) == "721  (4.56x torch)"              # 721.2 / 153.5 would say 4.70x
    assert throughput_label({"throughput_tok_s": 300.0}, 150.0) == "300  (2.00x torch)"   # a single-round row
    assert throughput_label({"throughput_tok_s": 300.0}, None) == "300"


def test_plots_are_written_and_the_scatter_needs_bleu_deltas(tmp_path):
    from mtedge.bench.plots import write_plots

    rows = [_full_row("hf-torch-fp32", "peer", 100.0, 800.0, 40.0, bleu=30.0),
            _full_row("onnx-int8", "ours", 300.0, 150.0, 12.0, bleu=29.9),
            _full_row("ct2-int8", "ours", 45000.0, 90.0, 0.5, bleu=29.8)]
    made = write_plots(_report(rows), tmp_path)
    assert sorted(Path(p).name for p in made) == ["latency_percentiles.png", "memory_and_disk.png",
                                                  "throughput.png", "throughput_vs_bleu_delta.png"]
    for path in made:
        assert Path(path).read_bytes()[:4] == b"\x89PNG"
    for row in rows:
        row["bleu_delta"] = None
    # a synthetic run has no deltas: no scatter, and no stale one from an earlier run in the same dir
    made = write_plots(_report(rows, synthetic="opus-mt-en-de"), tmp_path)
    assert "throughput_vs_bleu_delta.png" not in [Path(p).name for p in made]
    assert not (tmp_path / "throughput_vs_bleu_delta.png").exists()


def test_run_time_estimate_prices_each_call_kind_from_the_quick_run():
    from benchmarks.suites.estimate import estimate_row

    quick = {"sentences": 32, "latency_sentences": 4, "repeats": 2, "warmup": 1, "throughput_repeats": 1,
             "batch_size": 32}
    row = {"name": "x", "error": None, "raw": {"latency_ms": {"greedy": [100.0] * 8, "beam4": [200.0] * 8},
                                               "throughput_pass_s": [3.2], "worker_wall_s": 10.0}}
    # quick: 9 greedy (0.9 s) + 9 beam (1.8 s) + 64 batched sentences (6.4 s) -> 0.9 s fixed cost;
    # full: 18 calls of each kind (5.4 s) + 32 + 2 x 64 batched sentences (16 s)
    target = {"sentences": 64, "latency_sentences": 8, "repeats": 2, "warmup": 2, "throughput_repeats": 2}
    assert estimate_row(row, quick, target, 1.0) == pytest.approx(0.9 + 5.4 + 16.0)
    assert estimate_row(row, quick, target, 2.0) == pytest.approx(0.9 + 2 * (5.4 + 16.0))
    assert estimate_row({"name": "y", "error": "not in bundle: ..."}, quick, target, 1.0) is None
    # a 10 s minimum window: the 6.4 s pass is timed twice anyway; a 20 s window takes 4 passes (25.6 s)
    assert estimate_row(row, quick, dict(target, throughput_min_s=10.0), 1.0) == pytest.approx(0.9 + 5.4 + 16.0)
    assert estimate_row(row, quick, dict(target, throughput_min_s=20.0), 1.0) == pytest.approx(
        0.9 + 5.4 + 3.2 + 4 * 6.4)
    # a throughput-only round: fixed cost, the warm-up batch and the timed passes, no batch-1 calls
    assert estimate_row(row, quick, target, 1.0, throughput_only=True) == pytest.approx(0.9 + 16.0)
