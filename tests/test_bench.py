"""``mtedge bench`` end to end on the tiny fixture bundle: real workers, real engines, real sacrebleu.

Speed targets are never asserted (timings here swing 10x); what is asserted is that every
number in the report is computed from the run it describes.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sacrebleu

from mtedge.bench.worker import MAX_THROUGHPUT_PASSES

MTEDGE = [sys.executable, "-m", "mtedge.cli"]
# a subset that covers every runner kind and keeps the test near a minute
MAIN_CONFIGS = ["hf-torch-fp32", "onnx-fp32", "onnx-int8", "ct2-int8", "ct2-raw-int8", "optimum-ort-int8"]


def run_cli(args, timeout=300, env_extra=None, **kwargs):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run(MTEDGE + args, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def bench_args(bundle, test_file, out, work, configs, *extra, max_length=48):
    length = ["--max-length", str(max_length)] if max_length else []
    return ["bench", str(bundle), "--test", str(test_file), "--out", str(out), "--work-dir", str(work),
            "--configs", ",".join(configs), "--threads", "1", "--quick", *length, "--no-progress", *extra]


@pytest.fixture(scope="module")
def bench_bundle(tiny_marian_bundle):
    return Path(tiny_marian_bundle)


@pytest.fixture(scope="module")
def parallel_test_file(tmp_path_factory, tiny_dev_pairs):
    path = tmp_path_factory.mktemp("bench-data") / "test.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in tiny_dev_pairs[:32]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def main_run(bench_bundle, parallel_test_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    work = tmp_path_factory.mktemp("bench-work")
    started = time.perf_counter()
    proc = run_cli(bench_args(bench_bundle, parallel_test_file, out, work, MAIN_CONFIGS,
                              "--throughput-min-seconds", "0.2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {"out": out, "report": report, "rows": {r["name"]: r for r in report["results"]},
            "stdout": proc.stdout, "seconds": time.perf_counter() - started}


def outputs_of(run, name):
    return (run["out"] / "outputs" / f"{name}.txt").read_text(encoding="utf-8").splitlines()


def references_of(path):
    return [line.split("\t")[1] for line in path.read_text(encoding="utf-8").splitlines()]


def test_report_has_every_config_and_the_required_fields(main_run):
    report = main_run["report"]
    assert [r["name"] for r in report["results"]] == MAIN_CONFIGS
    for key in ("cpu_model", "usable_cores", "simd", "packages"):
        assert key in report["machine"]
    assert set(report["machine"]["simd"]) >= {"AVX2", "AVX512", "AVX512-VNNI"}
    assert report["settings"]["threads"] == 1 and report["settings"]["max_length"] == 48
    for row in report["results"]:
        assert row["error"] is None, row
        for key in ("engine", "precision", "beam_size", "batch_size", "throughput_tok_s", "latency_ms",
                    "peak_rss_mb", "disk_mb", "load_s", "bleu", "chrf", "bleu_delta", "agreement"):
            assert key in row
        assert (row["beam_size"], row["batch_size"]) == (4, 32)
        assert row["throughput_tok_s"] > 0 and row["load_s"] > 0
        lat = row["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    md = (main_run["out"] / "report.md").read_text(encoding="utf-8")
    assert "| hf-torch-fp32 |" in md and "## Targets" in md and "nrefs:1|case:mixed" in md
    for target in ("ct2-int8 throughput >= 4x hf-torch", "within 5% of raw CTranslate2"):
        assert target in md
    for png in ("throughput.png", "throughput_vs_bleu_delta.png", "latency_percentiles.png", "memory_and_disk.png"):
        assert (main_run["out"] / png).read_bytes()[:4] == b"\x89PNG"
        assert f"]({png})" in md
    assert "| ct2-raw-int8 |" in main_run["stdout"]   # the table is printed at the end


def test_quality_numbers_come_from_the_outputs(main_run, parallel_test_file):
    rows, refs = main_run["rows"], references_of(parallel_test_file)
    reference = outputs_of(main_run, "hf-torch-fp32")
    assert rows["hf-torch-fp32"]["bleu_delta"] == 0.0 and rows["hf-torch-fp32"]["agreement"] == 1.0
    for name in MAIN_CONFIGS:
        hyps, row = outputs_of(main_run, name), rows[name]
        bleu = sacrebleu.corpus_bleu(hyps, [refs])
        assert row["bleu"] == pytest.approx(bleu.score, abs=1e-9)
        assert row["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9)
        assert row["bleu_delta"] == pytest.approx(row["bleu"] - rows["hf-torch-fp32"]["bleu"], abs=1e-9)
        agree = sum(h == r for h, r in zip(hyps, reference)) / len(reference)
        assert row["agreement"] == agree
        if hyps == reference:
            assert row["bleu_delta"] == 0.0
    # fp32 ONNX through our decoder reproduces PyTorch exactly (mtedge/DESIGN.md §4.4: exact for fp32), so its
    # deltas are exactly 0 and its agreement 1 — computed from its outputs, not assumed
    assert outputs_of(main_run, "onnx-fp32") == reference
    assert rows["onnx-fp32"]["bleu_delta"] == 0.0 and rows["onnx-fp32"]["chrf_delta"] == 0.0
    assert rows["onnx-fp32"]["agreement"] == 1.0


def test_ratios_vs_torch_are_of_this_runs_rows(main_run):
    rows, md = main_run["rows"], (main_run["out"] / "report.md").read_text(encoding="utf-8")
    torch = rows["hf-torch-fp32"]
    for name, row in rows.items():
        ratios = row["vs_reference"]
        assert ratios["throughput"] == pytest.approx(row["throughput_tok_s"] / torch["throughput_tok_s"])
        assert ratios["peak_rss"] == pytest.approx(row["peak_rss_mb"] / torch["peak_rss_mb"])
        assert ratios["latency_p50_speedup"] == pytest.approx(torch["latency_ms"]["p50"] / row["latency_ms"]["p50"])
        line = next(line for line in md.splitlines() if line.startswith(f"| {name} | "))
        assert f"| {ratios['throughput']:.2f}x |" in line and f"| {ratios['peak_rss']:.2f}x |" in line
    targets = {t["target"]: t for t in main_run["report"]["targets"]}
    ct2 = targets["ct2-int8 throughput >= 4x hf-torch fp32 (batch 32, beam 4)"]
    assert ct2["value"] == pytest.approx(rows["ct2-int8"]["vs_reference"]["throughput"])
    assert ct2["status"] in ("PASS", "MISS") and (ct2["gap"] is None) == (ct2["status"] == "PASS")


def test_memory_and_disk_are_measured(main_run, bench_bundle):
    rows = main_run["rows"]
    rss = [r["peak_rss_mb"] for r in rows.values()]
    assert all(v > 0 for v in rss) and len(set(rss)) > 1
    # the torch peer imports torch; the CT2 worker of ours does not
    assert rows["hf-torch-fp32"]["peak_rss_mb"] > rows["ct2-int8"]["peak_rss_mb"]
    for name, row in rows.items():
        # wait4 of the exited child covers its whole life: never below what the worker saw of itself
        # just before writing its result (a sampler, or the parent's own RSS, could be)
        assert row["peak_rss_mb"] >= row["raw"]["worker_own_peak_rss_mb"] > 0, name
        heavy = {"torch", "transformers"} & set(row["stacks_loaded"])
        assert bool(heavy) == (row["runner"] in ("hf", "optimum")), (name, row["stacks_loaded"])
    for name, sub in (("ct2-int8", "ct2/int8"), ("onnx-int8", "onnx/int8"), ("hf-torch-fp32", "torch/fp32"),
                      ("optimum-ort-int8", "onnx/int8")):
        files = [p for p in (bench_bundle / sub).rglob("*") if p.is_file()]
        assert rows[name]["disk_bytes"] == sum(p.stat().st_size for p in files)
        assert rows[name]["disk_mb"] == pytest.approx(rows[name]["disk_bytes"] / 2**20)


def test_throughput_and_latency_come_from_the_raw_timings(main_run, bench_bundle):
    import sentencepiece as spm

    meta = json.loads((bench_bundle / "tokenizer" / "mtedge_tokenizer.json").read_text())
    sp = spm.SentencePieceProcessor(model_file=str(bench_bundle / "tokenizer" / meta["target_spm"]))
    settings = main_run["report"]["settings"]
    for name, row in main_run["rows"].items():
        tokens = sum(len(sp.encode(t, out_type=str)) + 1 for t in outputs_of(main_run, name))
        assert row["target_tokens"] == tokens
        passes = row["raw"]["throughput_pass_s"]
        # passes repeat until the minimum window is timed (the quick protocol's 1 pass is far shorter)
        assert len(passes) >= settings["throughput_repeats"]
        assert sum(passes) >= settings["throughput_min_s"] or len(passes) == MAX_THROUGHPUT_PASSES
        assert sum(passes[:-1]) < settings["throughput_min_s"] or len(passes) == settings["throughput_repeats"]
        assert row["throughput_tok_s"] == pytest.approx(tokens / float(np.median(passes)))
        greedy = row["raw"]["latency_ms"]["greedy"]
        assert len(greedy) == settings["latency_sentences"] * settings["repeats"]
        for q in (50, 90, 99):
            assert row["latency_ms"][f"p{q}"] == pytest.approx(float(np.percentile(greedy, q)))
        assert row["latency_beam4_ms"]["p50"] == pytest.approx(float(np.median(row["raw"]["latency_ms"]["beam4"])))


def test_interleaved_rounds_give_medians_per_round_ratios_and_what_ran(bench_bundle, parallel_test_file,
                                                                       tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = run_cli(bench_args(bench_bundle, parallel_test_file, out, work, ["ct2-int8", "ct2-raw-int8", "onnx-int8"],
                              "--rounds", "2", "--throughput-rounds", "1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["settings"]["rounds"] == 2 and report["settings"]["throughput_rounds"] == 1
    rows = {r["name"]: r for r in report["results"]}
    for name, row in rows.items():
        per_round = [r["throughput_tok_s"] for r in row["rounds"]]
        assert len(per_round) == 3 and all(v > 0 for v in per_round), name
        assert row["throughput_tok_s"] == pytest.approx(sorted(per_round)[1])
        # round 3 timed only the throughput: its latency is absent, not zero, and the pool holds rounds 1-2
        assert [r["throughput_only"] for r in row["rounds"]] == [False, False, True]
        assert [r["latency_p50"] is None for r in row["rounds"]] == [False, False, True]
        assert len(row["raw"]["latency_ms"]["greedy"]) == 2 * 4 * 2
        assert "warning" not in row, row.get("warning")                # same outputs in every round
        for round_index in (1, 2, 3):                                 # a fresh worker each round
            assert list((work / "runs").glob(f"*/logs/{name}.round{round_index}.stderr")), name
    onnx_vs_raw = next(t for t in report["targets"] if t["target"].startswith("onnx-int8 throughput >= 0.9x raw"))
    ratios = [a["throughput_tok_s"] / b["throughput_tok_s"]
              for a, b in zip(rows["onnx-int8"]["rounds"], rows["ct2-raw-int8"]["rounds"])]
    # 3 rounds: the interval is their min-max, 75% sure to hold the median
    assert onnx_vs_raw["rounds"] == 3 and onnx_vs_raw["spread"] == pytest.approx([min(ratios), max(ratios)])
    assert onnx_vs_raw["value"] == pytest.approx(sorted(ratios)[1]) and onnx_vs_raw["coverage"] == 0.75
    assert onnx_vs_raw["status"] in ("PASS", "MISS", "UNSETTLED")
    # our CT2 engine against raw CTranslate2: one process a round, passes alternated (mtedge/bench/paired.py)
    paired = report["paired"]["ct2-int8 / ct2-raw-int8"]
    assert len(paired["round_ratios"]) == 3 and not paired["errors"]
    for turns, ratio in zip(paired["turn_ratios"], paired["round_ratios"]):
        assert len(turns) == 6 and all(v > 0 for v in turns) and ratio == pytest.approx(statistics.median(turns))
    # the wrapper and the library translate alike, sentence for sentence, in every round
    sentences = len(outputs_of({"out": out}, "ct2-int8"))
    assert paired["identical_outputs"] == ", ".join([f"{sentences}/{sentences}"] * 3)
    for target in ("within 5% of raw", ">= 0.97x raw"):
        wrapper = next(t for t in report["targets"] if target in t["target"])
        assert wrapper["rounds"] == 3 and wrapper["value"] == pytest.approx(sorted(paired["round_ratios"])[1])
        assert wrapper["note"].startswith("in one process, passes alternated")
    for round_index in (1, 2, 3):
        assert list((work / "runs").glob(f"*/logs/paired.ct2-int8.ct2-raw-int8.round{round_index}.stderr"))
    latency = next(t for t in report["targets"] if t["target"].startswith("onnx-int8 batch-1 greedy p50 latency "
                                                                           ">= 1.0x faster than raw"))
    assert latency["rounds"] == 2     # the throughput-only round has no latency to compare
    # what ran: CTranslate2's own word for its compute type, ONNX Runtime's providers, the machine's kernels
    assert rows["ct2-int8"]["runtime"]["ct2_compute_type"].startswith("int8")
    assert rows["ct2-raw-int8"]["runtime"]["ct2_compute_type"] == rows["ct2-int8"]["runtime"]["ct2_compute_type"]
    from mtedge.convert import rowwise_int8
    from mtedge.convert.host import host_quant_preset

    bits = rowwise_int8.weight_bits_for_preset(host_quant_preset())   # the bundle was exported for this CPU
    assert rows["onnx-int8"]["runtime"] == {"onnxruntime_providers": ["CPUExecutionProvider"],
                                            "onnx_decoder_int8_op": f"MatMulIntegerToFloat, {bits}-bit weights"}
    assert "int8" in report["machine"]["ct2_cpu_compute_types"]
    assert "inferred from the CPU flags" in report["machine"]["onnxruntime_int8_kernel"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "- **rounds**: 2 interleaved, then 1 more that time only the batch throughput" in md
    assert " (3 rounds, 75%) |" in md
    assert "Paired in one process, `ct2-int8 / ct2-raw-int8` (throughput, passes alternated" in md
    assert " (3 rounds, 75%, in one process) | >= 0.97 |" in md


# ---------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def degraded_run(bench_bundle, tiny_dev_pairs, tmp_path_factory):
    """Sources only; a precision and a whole engine the bundle lacks; a config starved of memory; a
    config that crashes; the rest must still run."""
    import shutil

    from mtedge.bench.worker import FAIL_ENV

    root = tmp_path_factory.mktemp("bench-degraded")
    bundle = root / "bundle"
    shutil.copytree(bench_bundle, bundle, symlinks=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["engines"]["ct2"].pop("int16", None)
    manifest["engines"].pop("onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(bundle / "ct2" / "int16", ignore_errors=True)
    shutil.rmtree(bundle / "onnx")
    sources = root / "sources.txt"
    sources.write_text("".join(f"{s}\n" for s, _ in tiny_dev_pairs[:8]), encoding="utf-8")
    configs = ["ct2-int16", "onnx-int8", "optimum-ort-int8", "ct2-raw-int8", "hf-torch-fp32", "ct2-float32",
               "ct2-int8"]
    # no --max-length: the bundle's own generation limit applies
    proc = run_cli(bench_args(bundle, sources, root / "out", root / "work", configs,
                              "--max-memory-mb", "ct2-raw-int8=48", max_length=None),
                   env_extra={FAIL_ENV: "ct2-float32"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((root / "out" / "report.json").read_text())
    return {"report": report, "rows": {r["name"]: r for r in report["results"]}, "out": root / "out"}


def test_sources_without_references_still_give_agreement(degraded_run):
    rows = degraded_run["rows"]
    assert degraded_run["report"]["test_set"]["has_references"] is False
    for name in ("hf-torch-fp32", "ct2-int8"):
        assert rows[name]["bleu"] is None and rows[name]["chrf"] is None and rows[name]["bleu_delta"] is None
    assert rows["hf-torch-fp32"]["agreement"] == 1.0
    assert 0.0 <= rows["ct2-int8"]["agreement"] <= 1.0
    md = (degraded_run["out"] / "report.md").read_text()
    assert "no references" in md and "n/a" in md


def test_max_length_defaults_to_the_bundles_generation_limit(degraded_run, bench_bundle):
    generation = json.loads((bench_bundle / "manifest.json").read_text())["generation"]
    assert degraded_run["report"]["settings"]["max_length"] == generation["max_new_tokens"]


def test_a_config_missing_from_the_bundle_is_an_error_row(degraded_run):
    rows = degraded_run["rows"]
    for name, missing in (("ct2-int16", "int16"), ("onnx-int8", "onnx"), ("optimum-ort-int8", "onnx")):
        assert rows[name]["error"].startswith("not in bundle") and missing in rows[name]["error"], rows[name]
        assert rows[name]["throughput_tok_s"] is None and rows[name]["peak_rss_mb"] is None
    md = (degraded_run["out"] / "report.md").read_text()
    assert "| onnx-int8 | ours | n/a |" in md and "- **onnx-int8**: not in bundle" in md


def test_a_config_that_crashes_is_recorded_and_the_run_goes_on(degraded_run):
    row = degraded_run["rows"]["ct2-float32"]
    assert row["error"].startswith("worker failed (exit code 1)") and "asked config ct2-float32 to fail" in row["error"]
    assert row["load_s"] is None and row["throughput_tok_s"] is None
    assert row["peak_rss_mb"] > 0    # what the crashed worker used is still known
    assert degraded_run["rows"]["ct2-int8"]["throughput_tok_s"] > 0


def test_a_worker_out_of_memory_is_recorded_and_the_run_goes_on(degraded_run):
    row = degraded_run["rows"]["ct2-raw-int8"]
    assert row["error"].startswith("worker failed") and row["exit_code"] != 0
    assert row["stderr_tail"].strip()
    assert degraded_run["report"]["settings"]["max_memory_mb"] == {"ct2-raw-int8": 48}
    # configs after the failed one were measured
    assert degraded_run["rows"]["ct2-int8"]["error"] is None
    assert degraded_run["rows"]["ct2-int8"]["throughput_tok_s"] > 0


def test_unknown_config_name_is_a_clear_error(bench_bundle, parallel_test_file, tmp_path):
    proc = run_cli(bench_args(bench_bundle, parallel_test_file, tmp_path / "o", tmp_path / "w", ["ct2-int9"]))
    assert proc.returncode == 2
    assert "error: unknown bench config ct2-int9" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o" / "report.json").exists()


def test_ctrl_c_writes_what_was_measured_and_exits_130(bench_bundle, parallel_test_file, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    args = bench_args(bench_bundle, parallel_test_file, out, tmp_path / "w",
                      ["ct2-int8", "hf-torch-fp32", "onnx-fp32"])
    proc = subprocess.Popen(MTEDGE + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # wait until the first row is on disk, then interrupt (generous: a loaded CI machine is slow)
        deadline, report_path = time.time() + 600, out / "report.json"
        while not (report_path.exists() and json.loads(report_path.read_text())["results"][:1]):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no report row after 600 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        # the final save draws the plots (matplotlib): slow on a starved machine, quick otherwise
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True
    assert report["results"][0]["name"] == "ct2-int8" and report["results"][0]["throughput_tok_s"] > 0
    assert len(report["results"]) < 3
    assert "INTERRUPTED" in (out / "report.md").read_text()
