"""The report's PNG plots: throughput, throughput vs BLEU delta, latency percentiles, memory and disk.

Made for a person to read: one horizontal bar per configuration (names stay level and legible however
many there are), every bar labelled with its value, ours and the peers in two colours (and "· peer" in
the label, where a legend box would cover bars), a log axis where
values span more than ~20x (a tiny model runs 100x faster on CTranslate2 than on PyTorch, and linear
bars would hide the slow half), and the run's machine/threads/protocol under each title.
"""

from __future__ import annotations

import os
from pathlib import Path

from mtedge.bench.configs import REFERENCE_CONFIG
from mtedge.bench.targets import BLEU_DELTA_BOUND

COLORS = {"ours": "#1f77b4", "peer": "#ff7f0e"}
LOG_SPREAD = 20.0       # max/min above which an axis goes logarithmic
BAR_HEIGHT_IN = 0.42    # inches per configuration
PLOT_FILES = ("throughput.png", "throughput_vs_bleu_delta.png", "latency_percentiles.png", "memory_and_disk.png")


def _pyplot():
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _subtitle(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    model = report["model"]["name"] + (" (synthetic, random weights)" if report["model"].get("synthetic") else "")
    return f"{model} — {m['cpu_model']}, {s['threads']} thread(s)"


def _log_if_spread(ax, values: list[float], axis: str = "x") -> bool:
    positive = [v for v in values if v and v > 0]
    if len(positive) > 1 and max(positive) / min(positive) > LOG_SPREAD:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        return True
    return False


def _hbar(ax, names, values, groups, label_fmt, *, height=0.7, offset=0.0, color=None, label=None):
    """``label_fmt``: a function of the value, or the bars' labels in order."""
    ys = [i + offset for i in range(len(names))]
    bars = ax.barh(ys, [v or 0 for v in values], height=height, label=label,
                   color=color or [COLORS.get(g, "#777777") for g in groups])
    for index, (y, v) in enumerate(zip(ys, values)):
        if v:
            text = label_fmt[index] if isinstance(label_fmt, list) else label_fmt(v)
            ax.annotate(text, (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    return bars


def _tick_labels(rows: list[dict]) -> list[str]:
    # the group in the label itself: a legend box would sit on top of some bar
    return [r["name"] + ("  · peer" if r.get("group") == "peer" else "") for r in rows]


def _finish_bars(ax, names, values, invert: bool = True):
    ax.set_yticks(range(len(names)), names, fontsize=9)
    if invert:                            # run order, top to bottom (once: shared axes share it)
        ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.set_axisbelow(True)
    top = max([v for v in values if v] or [1])
    if ax.get_xscale() == "log":
        ax.set_xlim(right=top * 6)        # room for the value labels
    else:
        ax.set_xlim(0, top * 1.3)


def throughput_label(row: dict, ref_tok_s: float | None) -> str:
    """A bar's tok/s and its ratio to PyTorch: the report table's ratio (the median of the per-round ratios,
    mtedge/bench/report.py) where the row has one, which the ratio of the two median tok/s can miss by a few
    percent."""
    ratio = (row.get("vs_reference") or {}).get("throughput")
    if ratio is None and ref_tok_s:
        ratio = row["throughput_tok_s"] / ref_tok_s
    return f"{row['throughput_tok_s']:,.0f}" + (f"  ({ratio:.2f}x torch)" if ratio else "")


def plot_throughput(report: dict, rows: list[dict], path: Path, plt) -> str | None:
    rows = [r for r in rows if r.get("throughput_tok_s")]
    if not rows:
        return None
    s = report["settings"]
    names, groups = _tick_labels(rows), [r.get("group", "ours") for r in rows]
    values = [r["throughput_tok_s"] for r in rows]
    ref = next((r["throughput_tok_s"] for r in rows if r["name"] == REFERENCE_CONFIG), None)
    fig, ax = plt.subplots(figsize=(9, 1.6 + BAR_HEIGHT_IN * len(rows)))
    log = _log_if_spread(ax, values)

    _hbar(ax, names, values, groups, [throughput_label(r, ref) for r in rows])
    _finish_bars(ax, names, values)
    ax.set_xlabel(f"target tokens/s (batch {s['batch_size']}, beam {s['beam_size']}; higher is better"
                  + ("; log scale" if log else "") + ")")
    ax.set_title(f"Throughput\n{_subtitle(report)}", fontsize=10)
    return _save(fig, path, plt)


def plot_throughput_vs_bleu(report: dict, rows: list[dict], path: Path, plt) -> str | None:
    """Only with BLEU deltas: without references (or for a synthetic model) there is no x axis."""
    points = [r for r in rows if r.get("bleu_delta") is not None and r.get("throughput_tok_s")]
    if not points:
        return None
    s = report["settings"]
    markers = "osD^vP*Xhp<>"
    fig, ax = plt.subplots(figsize=(9, 5))
    for i, r in enumerate(points):
        ax.scatter(r["bleu_delta"], r["throughput_tok_s"], s=60, marker=markers[i % len(markers)],
                   color=COLORS.get(r.get("group"), "#777777"), edgecolor="black", linewidth=0.5,
                   label=f"{r['name']}: {r['throughput_tok_s']:,.0f} tok/s, ΔBLEU {r['bleu_delta']:+.2f}")
    log = _log_if_spread(ax, [r["throughput_tok_s"] for r in points], axis="y")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.axvline(BLEU_DELTA_BOUND, color="red", linestyle="--", linewidth=0.8,
               label=f"int8 target: ΔBLEU >= {BLEU_DELTA_BOUND:g}")
    # equal deltas must not look like a precise axis of ±0.05: show at least ±1 BLEU
    reach = max([1.0] + [abs(r["bleu_delta"]) * 1.2 for r in points])
    ax.set_xlim(-reach, reach)
    ax.set_xlabel(f"BLEU delta vs {REFERENCE_CONFIG} (BLEU points; right of 0 is better)")
    ax.set_ylabel(f"target tokens/s (batch {s['batch_size']}, beam {s['beam_size']})" + (", log scale" if log else ""))
    ax.set_title(f"Throughput vs quality lost\n{_subtitle(report)}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    # a legend instead of point labels: configs with equal deltas would print over each other
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path, plt)


def plot_latency(report: dict, rows: list[dict], path: Path, plt) -> str | None:
    series = [("greedy", "latency_ms"), ("beam 4", "latency_beam4_ms")]
    rows = [r for r in rows if any((r.get(k) or {}).get("p50") for _, k in series)]
    if not rows:
        return None
    names = _tick_labels(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.8 + BAR_HEIGHT_IN * 1.3 * len(rows)), sharey=True)
    shades = {"p50": 1.0, "p90": 0.6, "p99": 0.3}
    for n, (ax, (label, key)) in enumerate(zip(axes, series)):
        all_values = []
        for j, (p, alpha) in enumerate(shades.items()):
            values = [(r.get(key) or {}).get(p) for r in rows]
            all_values += [v for v in values if v]
            ys = [i + (j - 1) * 0.27 for i in range(len(rows))]
            ax.barh(ys, [v or 0 for v in values], height=0.25, color="#2c7fb8", alpha=alpha, label=p)
            if p == "p50":
                for y, v in zip(ys, values):
                    if v:
                        ax.annotate(f"{v:,.1f}", (v, y), xytext=(3, 0), textcoords="offset points",
                                    va="center", fontsize=7)
        log = _log_if_spread(ax, all_values)
        _finish_bars(ax, names, all_values, invert=n == 0)
        ax.set_xlabel("ms per sentence (batch 1; lower is better" + ("; log scale" if log else "") + ")")
        ax.set_title(f"{label}: p50 (labelled) / p90 / p99", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.04),
               frameon=False)
    fig.suptitle(f"Latency per sentence\n{_subtitle(report)}", fontsize=10)
    return _save(fig, path, plt)


def plot_memory_and_disk(report: dict, rows: list[dict], path: Path, plt) -> str | None:
    rows = [r for r in rows if r.get("peak_rss_mb")]
    if not rows:
        return None
    names, groups = _tick_labels(rows), [r.get("group", "ours") for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.6 + BAR_HEIGHT_IN * len(rows)), sharey=True)
    for n, (ax, key, title) in enumerate( ((axes[0], "peak_rss_mb", "Peak resident memory of the worker process"),
                           (axes[1], "disk_mb", "Model files on disk"))):
        values = [r.get(key) for r in rows]
        _hbar(ax, names, values, groups, lambda v: f"{v:,.1f} MB")
        _finish_bars(ax, names, values, invert=n == 0)
        ax.set_xlabel("MB (2^20 bytes; lower is better)")
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"Memory and size\n{_subtitle(report)}", fontsize=10)
    return _save(fig, path, plt)


def write_plots(report: dict, out_dir: Path) -> list[str]:
    """The PNGs for the rows that were measured; returns their paths."""
    rows = [r for r in report["results"] if not r.get("error")]
    if not rows:
        return []
    plt = _pyplot()
    out_dir = Path(out_dir)
    for name in PLOT_FILES:    # a plot this run does not make must not survive from an earlier run
        (out_dir / name).unlink(missing_ok=True)
    made = [
        plot_throughput(report, rows, out_dir / "throughput.png", plt),
        plot_throughput_vs_bleu(report, rows, out_dir / "throughput_vs_bleu_delta.png", plt),
        plot_latency(report, rows, out_dir / "latency_percentiles.png", plt),
        plot_memory_and_disk(report, rows, out_dir / "memory_and_disk.png", plt),
    ]
    return [p for p in made if p]


def _save(fig, path: Path, plt) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)
