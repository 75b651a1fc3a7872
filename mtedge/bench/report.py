"""Writes a run's ``report.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
import os
from pathlib import Path


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


def markdown_table(rows: list[dict]) -> str:
    head = ("| config | engine | precision | tok/s (b32, beam 4) | greedy b1 ms p50/p90/p99 "
            "| beam4 b1 ms p50/p90/p99 | load s | first ms | peak RSS MB | disk MB | BLEU | chrF "
            "| ΔBLEU | ΔchrF | agreement | error |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        err = (r.get("error") or "").replace("|", "\\|").replace("\n", " ")
        if len(err) > 120:
            err = err[:117] + "..."
        lines.append("| " + " | ".join([
            r["name"], r["engine"], r["precision"], _fmt(r.get("throughput_tok_s")),
            _pct(r.get("latency_ms")), _pct(r.get("latency_beam4_ms")), _fmt(r.get("load_s"), 2),
            _fmt(r.get("first_translation_ms")), _fmt(r.get("peak_rss_mb")), _fmt(r.get("disk_mb")),
            _fmt(r.get("bleu"), 2), _fmt(r.get("chrf"), 2), _fmt(r.get("bleu_delta"), 2),
            _fmt(r.get("chrf_delta"), 2), _fmt(r.get("agreement"), 3), err or "",
        ]) + " |")
    return "\n".join(lines)


def targets_table(targets: list[dict]) -> str:
    lines = ["| target | measured | bound | status |", "|---|---|---|---|"]
    for t in targets:
        value = _fmt(t["value"], 2) if t["value"] is not None else f"n/a ({t['note']})"
        lines.append(f"| {t['target']} | {value} | {t['bound']} | {t['status']} |")
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    simd = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["simd"].items())
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    out = [
        f"# mtedge bench: {report['model']['name']}",
        "",
        f"- **machine**: {m['cpu_model']}, {m['usable_cores']} usable cores of {m['cpu_count']}; {simd}"
        + (f"; GPU {m['gpu']}" if m.get("gpu") else ""),
        f"- **threads**: {s['threads']} (intra-op; inter-op 1) — **packages**: {pkgs}",
        f"- **model**: {report['model']['bundle']} ({report['model']['family']})"
        + (" — synthetic, random weights" if report["model"].get("synthetic") else ""),
        f"- **test set**: {report['test_set']['origin']}, {report['test_set']['n_sentences']} sentences, "
        f"references: {'yes' if report['test_set']['has_references'] else 'no'}",
        f"- **protocol**: throughput at batch {s['batch_size']}, beam {s['beam_size']}, length_penalty "
        f"{s['length_penalty']:g}, median of {s['throughput_repeats']} pass(es) after a warm-up batch; latency "
        f"at batch 1 (greedy and beam 4) over {s['latency_sentences']} sentences x {s['repeats']} repeats "
        f"after {s['warmup']} warm-up call(s); max_length {s['max_length']} tokens incl. </s>"
        + (" (forced: min = max)" if s["forced_length"] else ""),
        f"- **target tokens**: {s['token_count_method']}",
        f"- **memory**: peak RSS of each worker process from the OS (wait4 ru_maxrss); disk = the "
        f"configuration's model files; MB = 2^20 bytes. Each configuration ran in a fresh process.",
        f"- **quality**: {report['quality_note']}",
    ]
    if report.get("interrupted"):
        out.append("- **INTERRUPTED**: the run was stopped; only the rows below were measured.")
    out += ["", markdown_table(report["results"]), ""]
    warnings = [f"- {r['name']}: {r['warning']}" for r in report["results"] if r.get("warning")]
    if warnings:
        out += ["Warnings:", *warnings, ""]
    if report.get("reference_note"):
        out += [f"Note: {report['reference_note']}", ""]
    sigs = sorted({r[k] for r in report["results"] for k in ("bleu_signature", "chrf_signature") if r.get(k)})
    if sigs:
        out += ["sacrebleu signatures: " + "; ".join(f"`{sig}`" for sig in sigs), ""]
    out += ["## Targets (ratios measured in this run)", "", targets_table(report["targets"]), ""]
    if report.get("plots"):
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]] + [""]
    return "\n".join(out)


def write_json(report: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)   # a reader never sees half a report
    return path


def write_plots(report: dict, out_dir: Path) -> list[str]:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if not r.get("error")]
    if not rows:
        return []
    names = [r["name"] for r in rows]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    have_delta = any(r.get("bleu_delta") is not None for r in rows)
    for r in rows:
        x = r.get("bleu_delta") if have_delta else 0.0
        if x is None or r.get("throughput_tok_s") is None:
            continue
        ax.scatter(x, r["throughput_tok_s"])
        ax.annotate(r["name"], (x, r["throughput_tok_s"]), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("BLEU delta vs hf-torch-fp32" if have_delta else "BLEU delta: n/a (" + report["quality_note"][:60] + ")")
    ax.set_ylabel("target tokens/s (batch 32, beam 4)")
    ax.set_title("Throughput vs quality loss")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "throughput_vs_bleu_delta.png", plt))

    fig, ax = plt.subplots(figsize=(max(7, len(rows) * 1.1), 4.5))
    width = 0.13
    series = [("greedy", "latency_ms"), ("beam4", "latency_beam4_ms")]
    for si, (label, key) in enumerate(series):
        for pi, p in enumerate(("p50", "p90", "p99")):
            vals = [(r.get(key) or {}).get(p) or 0 for r in rows]
            offs = (si * 3 + pi - 2.5) * width
            ax.bar([i + offs for i in range(len(rows))], vals, width, label=f"{label} {p}")
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("ms per sentence (batch 1)")
    ax.set_title("Latency percentiles")
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, out_dir / "latency_percentiles.png", plt))

    fig, ax = plt.subplots(figsize=(max(7, len(rows) * 1.1), 4.5))
    xs = range(len(rows))
    ax.bar([i - 0.2 for i in xs], [r.get("peak_rss_mb") or 0 for r in rows], 0.4, label="peak RSS (MB)")
    ax.bar([i + 0.2 for i in xs], [r.get("disk_mb") or 0 for r in rows], 0.4, label="size on disk (MB)")
    ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("MB (2^20 bytes)")
    ax.set_title("Peak memory and model size")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / "memory_and_disk.png", plt))
    return paths


def _save(fig, path: Path, plt) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
