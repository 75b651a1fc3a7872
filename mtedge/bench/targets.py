"""The product's speed/memory/quality targets, as ratios measured within one run.

Timings here swing 10x between runs (mtedge/DESIGN.md §4.7), so a target is only ever a ratio of two
rows of the same run — never asserted in tests. With several interleaved rounds the ratio is taken in
each round (both rows measured minutes apart at most) and reported as the median with a confidence
interval for that median (``metrics.median_interval``: the sign test's order statistics, at least 90%
sure from 5 rounds on; min–max below that). A target is PASS or MISS only when the whole interval is on
one side of the bound, UNSETTLED when it crosses it. On the 2-vCPU VMs these reports come from, one
engine timed against itself in alternating windows spreads 0.85–1.19 (mtedge/DESIGN.md §4.16): min–max
of 3 rounds (a 75% interval) could not settle a bound within ~20% of the median, however fast the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtedge.bench import metrics
from mtedge.bench.paired import pair_label

UNSETTLED = "UNSETTLED"
PAIRED_NOTE = "in one process, passes alternated (mtedge/bench/paired.py)"


@dataclass(frozen=True)
class Target:
    label: str
    numerator: tuple[str, str]     # (config, metric)
    denominator: tuple[str, str]
    op: str                        # ">=" or "<="
    bound: float
    # "interval": PASS/MISS when the median's confidence interval is on one side of the bound; "median": the
    # median alone decides (a target stated on the median of rounds)
    rule: str = "interval"
    # judged on the pair measured in one process where the run has it (mtedge/bench/paired.py), not on the
    # two rows' fresh-process rounds
    paired: bool = False


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
           ("ct2-int8", "throughput_tok_s"), ("ct2-raw-int8", "throughput_tok_s"), ">=", 0.95, paired=True),
    Target("mtedge ct2-int8 throughput >= 0.97x raw CTranslate2 int8 (median of rounds)",
           ("ct2-int8", "throughput_tok_s"), ("ct2-raw-int8", "throughput_tok_s"), ">=", 0.97, rule="median",
           paired=True),
    Target("onnx-int8 throughput >= 1.5x onnx-fp32 (batch 32, beam 4)",
           ("onnx-int8", "throughput_tok_s"), ("onnx-fp32", "throughput_tok_s"), ">=", 1.5),
    Target("onnx-int8 throughput >= 0.9x raw CTranslate2 int8 (batch 32, beam 4)",
           ("onnx-int8", "throughput_tok_s"), ("ct2-raw-int8", "throughput_tok_s"), ">=", 0.9),
    Target("onnx-int8 batch-1 greedy p50 latency >= 1.0x faster than raw CTranslate2 int8",
           ("ct2-raw-int8", "latency_p50"), ("onnx-int8", "latency_p50"), ">=", 1.0),
]
# Absolute: batch-1 greedy p50 per generated token, only where every output has the forced length (so a
# sentence's tokens are known without counting); per ONNX int8 precision, the one-row kernel's and the GEMM's.
MS_PER_TOKEN_BOUND = 3.0
MS_PER_TOKEN_CONFIGS = ["onnx-int8-latency", "onnx-int8"]
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
    low: float             # the median's confidence interval (metrics.median_interval)
    high: float
    rounds: int            # rounds in which both rows were measured
    coverage: float        # how sure [low, high] is to hold the median (0.75 for 3 rounds)


def round_ratios(num_row: dict, num_metric: str, den_row: dict, den_metric: str) -> RatioSpread | None:
    """``num / den`` per round (round i of one row against round i of the other), or None when no
    round measured both."""
    pairs = zip(_round_values(num_row, num_metric), _round_values(den_row, den_metric))
    ratios = [n / d for n, d in pairs if n is not None and d]
    return _spread(ratios)


def _spread(values: list[float]) -> RatioSpread | None:
    if not values:
        return None
    low, high, coverage = metrics.median_interval(values)
    return RatioSpread(metrics.median(values), low, high, len(values), coverage)


def evaluate_targets(rows: list[dict], settings: dict | None = None, paired: dict | None = None) -> list[dict]:
    """One record per target: measured value, bound, PASS / MISS / n/a (with why). ``settings`` (the
    report's) tell whether output lengths were forced, which the per-token latency target needs; ``paired``
    (the report's): pairs measured in one process, which judge the targets marked so."""
    by_name = {r["name"]: r for r in rows if not r.get("error")}
    out = []
    for t in TARGETS:
        in_one = (paired or {}).get(pair_label((t.numerator[0], t.denominator[0]))) if t.paired else None
        if in_one and in_one["round_ratios"]:
            record = _judged(t.label, _spread(in_one["round_ratios"]), t.op, t.bound, t.rule)
            record["note"] = "; ".join(filter(None, [PAIRED_NOTE, record["note"]]))
            record["paired"] = True
            out.append(record)
            continue
        spread = round_ratios(by_name.get(t.numerator[0], {}), t.numerator[1],
                              by_name.get(t.denominator[0], {}), t.denominator[1])
        if spread is None:
            missing = [c for c, _ in (t.numerator, t.denominator) if c not in by_name]
            why = f"no result for {', '.join(missing)}" if missing else "metric missing"
            out.append(_not_measured(t.label, f"{t.op} {t.bound:g}", why))
            continue
        out.append(_judged(t.label, spread, t.op, t.bound, t.rule))
    out += _ms_per_token_targets(by_name, settings or {})
    for name in INT8_CONFIGS:
        row = by_name.get(name)
        delta = row.get("bleu_delta") if row else None
        label = f"{name} BLEU delta vs hf-torch fp32 >= {BLEU_DELTA_BOUND:g}"
        if delta is None:
            note = "not measured" if row is None else "no BLEU delta in this run (see quality)"
            out.append(_not_measured(label, f">= {BLEU_DELTA_BOUND:g}", note))
        else:
            ok = delta >= BLEU_DELTA_BOUND
            out.append({"target": label, "value": delta, "bound": f">= {BLEU_DELTA_BOUND:g}",
                        "status": "PASS" if ok else "MISS", "note": "",
                        "gap": None if ok else f"{BLEU_DELTA_BOUND - delta:.2f} BLEU short"})
    return out


def _not_measured(label: str, bound: str, why: str) -> dict:
    return {"target": label, "value": None, "bound": bound, "status": "n/a", "note": why, "gap": None}


def _judged(label: str, spread: RatioSpread, op: str, bound: float, rule: str = "interval") -> dict:
    if rule == "median":
        status = "PASS" if _meets(spread.median, op, bound) else "MISS"
    else:
        met = [_meets(v, op, bound) for v in (spread.low, spread.high)]
        status = "PASS" if all(met) else "MISS" if not any(met) else UNSETTLED
    note = {"median": "the median decides (stated on the median of rounds)",
            UNSETTLED: f"the interval {spread.low:.3g} to {spread.high:.3g} crosses the bound"}
    return {"target": label, "value": spread.median, "bound": f"{op} {bound:g}",
            "spread": [spread.low, spread.high], "rounds": spread.rounds, "coverage": spread.coverage,
            "status": status, "note": note.get("median" if rule == "median" else status, ""),
            "gap": None if _meets(spread.median, op, bound) else _ratio_gap(spread.median, op, bound)}


def _ms_per_token_targets(by_name: dict, settings: dict) -> list[dict]:
    out = []
    for name in MS_PER_TOKEN_CONFIGS:
        label = f"{name} batch-1 greedy p50 <= {MS_PER_TOKEN_BOUND:g} ms per generated token"
        if name not in by_name:
            out.append(_not_measured(label, f"<= {MS_PER_TOKEN_BOUND:g}", "not measured"))
            continue
        if not settings.get("forced_length"):
            out.append(_not_measured(label, f"<= {MS_PER_TOKEN_BOUND:g}",
                                     "needs forced output lengths (a synthetic run)"))
            continue
        tokens = settings["max_length"]
        per_round = [ms / tokens for ms in _round_values(by_name[name], "latency_p50") if ms is not None]
        spread = _spread(per_round)
        out.append(_judged(label, spread, "<=", MS_PER_TOKEN_BOUND) if spread else
                   _not_measured(label, f"<= {MS_PER_TOKEN_BOUND:g}", "metric missing"))
    return out


def _meets(value: float, op: str, bound: float) -> bool:
    return value >= bound if op == ">=" else value <= bound


def _ratio_gap(value: float, op: str, bound: float) -> str:
    """How far a missed ratio is from its bound, in the factor that would close it."""
    if op == ">=":
        return f"{value / bound:.1%} of the target: needs {bound / value:.3g}x more" if value > 0 \
            else "measured 0"
    return f"{value / bound:.3g}x the bound: needs {value / bound:.3g}x less"
