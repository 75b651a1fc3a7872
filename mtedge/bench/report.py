"""A run's ``report.json`` and ``report.md`` (the plots are ``mtedge.bench.plots``), built from its rows."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mtedge import metrics
from mtedge.bench import plots
from mtedge.bench.configs import REFERENCE_CONFIG
from mtedge.bench.targets import evaluate_targets, round_ratios


@dataclass
class Report:
    """The report of one run, built anew from the rows at every save: a row holds only its own
    configuration's numbers, and everything relative to other rows (quality deltas and agreement vs
    :data:`REFERENCE_CONFIG`, ratios, targets) is derived here, so no save leaves a stale number behind."""

    header: dict                    # machine, settings, model, test set, quality note: fixed for the run
    score_quality: bool             # False: BLEU/chrF/agreement mean nothing (synthetic random weights)
    rows: list[dict] = field(default_factory=list)
    outputs: dict[str, list[str]] = field(default_factory=dict)   # config name -> its translations
    # "a / b" -> each round's result of that pair measured in one process (mtedge.bench.paired)
    paired: dict[str, list[dict]] = field(default_factory=dict)
    interrupted: bool = False

    def build(self) -> dict:
        rows = [dict(row) for row in self.rows]
        note = apply_reference(rows, self.outputs, self.score_quality)
        ref = next((r for r in rows if r["name"] == REFERENCE_CONFIG), None)
        for row in rows:
            row["vs_reference"] = reference_ratios(row, ref)
        paired = {label: paired_summary(rounds) for label, rounds in self.paired.items()}
        report = {**self.header, "reference_config": REFERENCE_CONFIG, "interrupted": self.interrupted,
                  "results": rows, "paired": paired,
                  "targets": evaluate_targets(rows, self.header.get("settings"), paired), "plots": []}
        if note and self.score_quality:
            report["reference_note"] = note
        return report

    def save(self, out_dir: Path, final: bool = False) -> dict:
        """Writes ``report.json`` (after every row, so a crash or Ctrl-C keeps what was measured); the final
        save also draws the plots and writes ``report.md``. Returns what was written."""
        report = self.build()
        if final:
            try:
                report["plots"] = plots.write_plots(report, out_dir)
            except Exception as exc:  # a plot must never cost the measured numbers
                report["plots_error"] = repr(exc)
            if not any(r.get("bleu_delta") is not None for r in report["results"]):
                report["plots_note"] = f"no throughput-vs-BLEU-delta plot: {report['quality_note']}"
            (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
        write_json(report, out_dir)
        return report


def apply_reference(rows: list[dict], outputs: dict[str, list[str]], score_quality: bool) -> str | None:
    """BLEU/chrF deltas and exact-match agreement against the hf-torch-fp32 row of this run (in ``rows``);
    a note when that row was not measured."""
    ref = next((r for r in rows if r["name"] == REFERENCE_CONFIG and not r.get("error")), None)
    if ref is None or REFERENCE_CONFIG not in outputs:
        return f"{REFERENCE_CONFIG} was not measured in this run: no deltas or agreement"
    if not score_quality:
        return None
    for row in rows:
        if row.get("error") or row["name"] not in outputs:
            continue
        row["agreement"] = metrics.agreement(outputs[row["name"]], outputs[REFERENCE_CONFIG])
        if row.get("bleu") is not None and ref.get("bleu") is not None:
            row["bleu_delta"] = row["bleu"] - ref["bleu"]
            row["chrf_delta"] = row["chrf"] - ref["chrf"]
    return None


def _fmt(value, digits: int = 1, na: str = "n/a") -> str:
    if value is None:
        return na
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(lat: dict | None) -> str:
    if not lat or lat.get("p50") is None:
        return "n/a"
    return f"{lat['p50']:.1f} / {lat['p90']:.1f} / {lat['p99']:.1f}"


def _x(value: float | None, spread: list | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}x" + (f" ({spread[0]:.2f}–{spread[1]:.2f})" if spread else "")


def reference_ratios(row: dict, ref: dict | None) -> dict:
    """This row against the hf-torch-fp32 row of the same run: throughput and peak RSS as
    row / torch, batch-1 greedy p50 latency as a speed-up (torch / row, > 1 is faster). Each is the
    median of the per-round ratios; ``spread`` holds that median's confidence interval when there were several
    rounds (``metrics.median_interval``)."""
    out = {"throughput": None, "latency_p50_speedup": None, "peak_rss": None}
    if not ref or row.get("error") or ref.get("error"):
        return out
    spreads = {
        "throughput": round_ratios(row, "throughput_tok_s", ref, "throughput_tok_s"),
        "latency_p50_speedup": round_ratios(ref, "latency_p50", row, "latency_p50"),
        "peak_rss": round_ratios(row, "peak_rss_mb", ref, "peak_rss_mb"),
    }
    for key, spread in spreads.items():
        out[key] = spread.median if spread else None
    if any(spread and spread.rounds > 1 for spread in spreads.values()):
        out["spread"] = {key: [spread.low, spread.high] if spread else None for key, spread in spreads.items()}
    return out


def _status(row: dict) -> str:
    """A short tag for the table; the full error is listed under it."""
    error = row.get("error")
    return "ok" if not error else error.split(":", 1)[0]


def markdown_table(rows: list[dict]) -> str:
    """Two tables over every configuration: speed/memory (with ratios vs hf-torch-fp32), quality."""
    ref = next((r for r in rows if r["name"] == REFERENCE_CONFIG), None)
    speed = ["| config | ours/peer | tok/s (b32, beam 4) | tok/s vs torch | greedy b1 ms p50 / p90 / p99 "
             "| p50 speed-up vs torch | beam 4 b1 ms p50 / p90 / p99 | load s | first ms | peak RSS MB "
             "| RSS vs torch | disk MB | status |"]
    speed.append("|" + "---|" * (speed[0].count("|") - 1))
    quality = ["| config | BLEU | chrF | ΔBLEU vs torch | ΔchrF vs torch | agreement with torch |",
               "|---|---|---|---|---|---|"]
    for r in rows:
        x = reference_ratios(r, ref)
        spread = x.get("spread") or {}
        speed.append("| " + " | ".join([
            r["name"], r.get("group", ""), _fmt(r.get("throughput_tok_s")), _x(x["throughput"], spread.get("throughput")),
            _pct(r.get("latency_ms")), _x(x["latency_p50_speedup"], spread.get("latency_p50_speedup")),
            _pct(r.get("latency_beam4_ms")), _fmt(r.get("load_s"), 2), _fmt(r.get("first_translation_ms")),
            _fmt(r.get("peak_rss_mb")), _x(x["peak_rss"], spread.get("peak_rss")), _fmt(r.get("disk_mb")), _status(r),
        ]) + " |")
        quality.append("| " + " | ".join([
            r["name"], _fmt(r.get("bleu"), 2), _fmt(r.get("chrf"), 2), _fmt(r.get("bleu_delta"), 2),
            _fmt(r.get("chrf_delta"), 2), _fmt(r.get("agreement"), 3),
        ]) + " |")
    errors = [f"- **{r['name']}**: {' '.join(r['error'].split())}" for r in rows if r.get("error")]
    return "\n".join(speed + [""] + quality + ([""] + errors if errors else []))


def targets_table(targets: list[dict]) -> str:
    lines = ["| target | measured (median) | interval of the median (rounds, confidence) | bound | status | gap |",
             "|---|---|---|---|---|---|"]
    for t in targets:
        # 3 significant digits: a ratio of 0.302 against a bound of 0.3 must not print as 0.30
        value = f"{t['value']:.3g}" if t["value"] is not None else f"n/a ({t['note']})"
        spread = t.get("spread")
        coverage = f", {t['coverage']:.0%}" if t.get("coverage") is not None else ""  # absent from older reports
        coverage += ", in one process" if t.get("paired") else ""
        spread_text = (f"{spread[0]:.3g} – {spread[1]:.3g} ({t['rounds']} rounds{coverage})"
                       if spread and t["rounds"] > 1 else "")
        lines.append(f"| {t['target']} | {value} | {spread_text} | {t['bound']} | {t['status']} | "
                     f"{t.get('gap') or ''} |")
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    simd = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["simd"].items())
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    out = [
        f"# mtedge bench: {report['model']['name']}",
        "",
        f"- **machine**: {m['cpu_model']}, {m['usable_cores']} usable cores of {m['cpu_count']}; {simd}"
        + (f"; {m['memory_total_mb']} MB RAM" if m.get("memory_total_mb") else "")
        + (f"; GPU {m['gpu']}" if m.get("gpu") else "")
        + (f"; load average at start {m['load_average'][0]:.1f}" if m.get("load_average") else ""),
        f"- **threads**: {s['threads']} (intra-op; inter-op 1) — **packages**: {pkgs}",
        _kernels_line(m),
        f"- **model**: {report['model']['bundle']} ({report['model']['family']})"
        + (" — synthetic, random weights" if report["model"].get("synthetic") else ""),
        f"- **test set**: {report['test_set']['origin']}, {report['test_set']['n_sentences']} sentences, "
        f"references: {'yes' if report['test_set']['has_references'] else 'no'}",
        f"- **protocol**: throughput at batch {s['batch_size']}, beam {s['beam_size']}, length_penalty "
        f"{s['length_penalty']:g}, median of {_passes(s)} after a warm-up batch; latency "
        f"at batch 1 (greedy and beam 4) over {s['latency_sentences']} sentences x {s['repeats']} repeats "
        f"after {s['warmup']} warm-up call(s); max_length {s['max_length']} tokens incl. </s>"
        + (" (forced: min = max)" if s["forced_length"] else ""),
        _rounds_line(s.get("rounds", 1), s.get("throughput_rounds", 0)),
        f"- **target tokens**: {s['token_count_method']}",
        "- **memory**: peak RSS of each worker process from the OS (wait4 ru_maxrss); disk = the "
        "configuration's model files; MB = 2^20 bytes. Each configuration ran in a fresh process"
        + (" in every round (the highest peak counts)." if s.get("rounds", 1) > 1 else "."),
        f"- **ratios**: against `{REFERENCE_CONFIG}` of this run (tok/s and RSS: row / torch; latency: "
        f"torch p50 / row p50, > 1 is faster)",
        f"- **quality**: {report['quality_note']}",
    ]
    if report.get("interrupted"):
        out.append("- **INTERRUPTED**: the run was stopped; only the rows below were measured.")
    out += ["", markdown_table(report["results"]), ""]
    ran = [f"- {r['name']}: {_runtime_text(r['runtime'])}" for r in report["results"] if r.get("runtime")]
    if ran:
        out += ["What ran (as each library reports it):", *ran, ""]
    warnings = [f"- {r['name']}: {r['warning']}" for r in report["results"] if r.get("warning")]
    if warnings:
        out += ["Warnings:", *warnings, ""]
    if report.get("reference_note"):
        out += [f"Note: {report['reference_note']}", ""]
    sigs = sorted({r[k] for r in report["results"] for k in ("bleu_signature", "chrf_signature") if r.get(k)})
    if sigs:
        out += ["sacrebleu signatures: " + "; ".join(f"`{sig}`" for sig in sigs), ""]
    out += ["## Targets (ratios measured in this run)", "", targets_table(report["targets"]), ""]
    for label, pair in (report.get("paired") or {}).items():
        out += [f"Paired in one process, `{label}` (throughput, passes alternated; mtedge/bench/paired.py): "
                + (", ".join(f"round {i + 1} {r:.3f}" for i, r in enumerate(pair["round_ratios"])) or "no round")
                + f"; outputs identical in {pair['identical_outputs']}"
                + "".join(f"; {error}" for error in pair["errors"]), ""]
    if report.get("plots"):
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]] + [""]
    if report.get("plots_note"):
        out += [f"Plots: {report['plots_note']}", ""]
    if report.get("plots_error"):
        out += [f"Plots failed: {report['plots_error']}", ""]
    return "\n".join(out)


def _kernels_line(machine: dict) -> str:
    types = machine.get("ct2_cpu_compute_types")
    return (f"- **int8 kernels**: onnxruntime {machine.get('onnxruntime_int8_kernel', 'n/a')}; CTranslate2 CPU "
            f"compute types {', '.join(types) if types else 'n/a'}")


_RUNTIME_LABELS = {"ct2_compute_type": "CTranslate2 compute type", "ct2_device": "device",
                   "onnxruntime_providers": "ONNX Runtime providers", "onnx_decoder_int8_op": "decoder weight MatMuls",
                   "torch_quantized_engine": "torch quantized engine"}


def _runtime_text(runtime: dict) -> str:
    return "; ".join(f"{_RUNTIME_LABELS.get(key, key)} {', '.join(value) if isinstance(value, list) else value}"
                     for key, value in runtime.items())


def _passes(settings: dict) -> str:
    minimum = settings.get("throughput_min_s") or 0   # absent from reports recorded before the window existed
    passes = f"{settings['throughput_repeats']} pass(es)"
    return f"{passes} or more, until {minimum:g} s are timed," if minimum else passes


def _rounds_line(rounds: int, throughput_rounds: int = 0) -> str:
    if rounds + throughput_rounds <= 1:
        return "- **rounds**: 1 (ratios from one worker per configuration; no spread)"
    extra = (f", then {throughput_rounds} more that time only the batch throughput (tok/s and its ratios are over "
             f"all {rounds + throughput_rounds})" if throughput_rounds else "")
    return (f"- **rounds**: {rounds} interleaved{extra} (every configuration once per round, a fresh process each "
            f"time, the order rotated by one each round); tok/s is the median over rounds, latency percentiles pool "
            f"every round's samples; a ratio is the median of the per-round ratios, with the median's confidence "
            f"interval in brackets (the sign test's order statistics: 90% or surer from 5 rounds on, min–max below)")


def write_json(report: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)   # a reader never sees half a report
    return path


def paired_summary(rounds: list[dict]) -> dict:
    """A pair's rounds (mtedge.bench.paired results, or {"error": ...}): each round's median ratio, and how
    many of its sentences both sides translated alike."""
    done = [r for r in rounds if "ratio" in r]
    return {"round_ratios": [r["ratio"] for r in done], "turn_ratios": [r["ratios"] for r in done],
            "identical_outputs": ", ".join(f"{r['identical_outputs']}/{r['n_sentences']}" for r in done) or "n/a",
            "errors": [f"round {i + 1}: {r['error']}" for i, r in enumerate(rounds) if "error" in r]}
