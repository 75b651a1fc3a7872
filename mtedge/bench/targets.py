"""The product's speed/memory/quality targets, as ratios measured within one run.

Timings here swing 10x between runs (mtedge/DESIGN.md §4.7), so a target is only ever a ratio of two
rows of the same run — never asserted in tests. With several interleaved rounds the ratio is taken in
each round (both rows measured minutes apart at most) and reported as the median with its spread;
a target is PASS or MISS only when every round agrees, UNSETTLED when the spread crosses the bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtedge.bench import metrics

UNSETTLED = "UNSETTLED"


@dataclass(frozen=True)
class Target:
    label: str
    numerator: tuple[str, str]     # (config, metric)
    denominator: tuple[str, str]
    op: str                        # ">=" or "<="
    bound: float


# metric names are row keys; "latency_p50" is batch-1 greedy p50.
TARGETS = [
    Target("ct2-int8 throughput >= 4x hf-torch fp32 (batch 32, beam 4)",
           ("ct2-int8", "throughput_tok_s"), ("hf-torch-fp32", "throughput_tok_s"), ">=", 4.0),
    Target("ct2-int8 peak memory <= 30% of hf-torch fp32",
           ("ct2-int8", "peak_rss_mb"), ("hf-torch-fp32", "peak_rss_mb"), "<=", 0.30),
    Target("onnx-int8 throughput >= 2x optimum-ort-int8 (batch 32, beam 4)",
           ("onnx-int8", "throughput_tok_s"), ("optimum-ort-int8", "throughput_tok_s"), ">=", 2.0),
    Target("onnx-int8 throughput >= 2x hf-torch fp32 (batch 32, beam 4)",
           ("onnx-int8", "throughput_tok_s"), ("hf-torch-fp32", "throughput_tok_s"), ">=", 2.0),
    Target("onnx-int8 batch-1 greedy p50 latency >= 1.5x faster than hf-torch fp32",
           ("hf-torch-fp32", "latency_p50"), ("onnx-int8", "latency_p50"), ">=", 1.5),
    Target("mtedge ct2-int8 throughput within 5% of raw CTranslate2 int8",
           ("ct2-int8", "throughput_tok_s"), ("ct2-raw-int8", "throughput_tok_s"), ">=", 0.95),
]
# BLEU deltas are differences, not ratios.
BLEU_DELTA_BOUND = -0.5
INT8_CONFIGS = ["onnx-int8", "ct2-int8"]


def _metric(row: dict, metric: str):
    if metric == "latency_p50":
        return (row.get("latency_ms") or {}).get("p50")
    return row.get(metric)


def _round_values(row: dict, metric: str) -> list:
    """The metric in each round of ``row`` (one value for a row without rounds)."""
    if row.get("rounds"):
        return [r.get(metric) for r in row["rounds"]]
    return [_metric(row, metric)]


@dataclass(frozen=True)
class RatioSpread:
    median: float
    low: float
    high: float
    rounds: int            # rounds in which both rows were measured


def round_ratios(num_row: dict, num_metric: str, den_row: dict, den_metric: str) -> RatioSpread | None:
    """``num / den`` per round (round i of one row against round i of the other), or None when no
    round measured both."""
    pairs = zip(_round_values(num_row, num_metric), _round_values(den_row, den_metric))
    ratios = [n / d for n, d in pairs if n is not None and d]
    if not ratios:
        return None
    return RatioSpread(metrics.median(ratios), min(ratios), max(ratios), len(ratios))


def evaluate_targets(rows: list[dict]) -> list[dict]:
    """One record per target: measured value, bound, PASS / MISS / n/a (with why)."""
    by_name = {r["name"]: r for r in rows if not r.get("error")}
    out = []
    for t in TARGETS:
        spread = round_ratios(by_name.get(t.numerator[0], {}), t.numerator[1],
                              by_name.get(t.denominator[0], {}), t.denominator[1])
        if spread is None:
            missing = [c for c, _ in (t.numerator, t.denominator) if c not in by_name]
            why = f"no result for {', '.join(missing)}" if missing else "metric missing"
            out.append({"target": t.label, "value": None, "bound": f"{t.op} {t.bound:g}", "status": "n/a",
                        "note": why, "gap": None})
            continue
        met = [_meets(v, t) for v in (spread.low, spread.high)]
        status = "PASS" if all(met) else "MISS" if not any(met) else UNSETTLED
        note = "" if status != UNSETTLED else (f"the rounds disagree: {spread.low:.3g} to {spread.high:.3g} "
                                               f"crosses the bound")
        out.append({"target": t.label, "value": spread.median, "bound": f"{t.op} {t.bound:g}",
                    "spread": [spread.low, spread.high], "rounds": spread.rounds, "status": status, "note": note,
                    "gap": None if _meets(spread.median, t) else _ratio_gap(spread.median, t)})
    for name in INT8_CONFIGS:
        row = by_name.get(name)
        delta = row.get("bleu_delta") if row else None
        label = f"{name} BLEU delta vs hf-torch fp32 >= {BLEU_DELTA_BOUND:g}"
        if delta is None:
            note = "not measured" if row is None else "no BLEU delta in this run (see quality)"
            out.append({"target": label, "value": None, "bound": f">= {BLEU_DELTA_BOUND:g}", "status": "n/a",
                        "note": note, "gap": None})
        else:
            ok = delta >= BLEU_DELTA_BOUND
            out.append({"target": label, "value": delta, "bound": f">= {BLEU_DELTA_BOUND:g}",
                        "status": "PASS" if ok else "MISS", "note": "",
                        "gap": None if ok else f"{BLEU_DELTA_BOUND - delta:.2f} BLEU short"})
    return out


def _meets(value: float, t: Target) -> bool:
    return value >= t.bound if t.op == ">=" else value <= t.bound


def _ratio_gap(value: float, t: Target) -> str:
    """How far a missed ratio is from its bound, in the factor that would close it."""
    if t.op == ">=":
        return f"{value / t.bound:.1%} of the target: needs {t.bound / value:.3g}x more" if value > 0 \
            else "measured 0"
    return f"{value / t.bound:.3g}x the bound: needs {value / t.bound:.3g}x less"
