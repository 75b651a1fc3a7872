"""One report row per configuration, from what its worker measured (or why it measured nothing).

A row holds only this configuration's own numbers; what is relative to another row (deltas, agreement,
ratios vs the reference) is derived when the report is built (``mtedge.bench.report.Report``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtedge.bench import metrics
from mtedge.bench.configs import BenchConfig
from mtedge.bench.supervisor import WorkerOutcome, failure_message
from mtedge.bench.testset import TestSet

if TYPE_CHECKING:  # the harness imports this module
    from mtedge.bench.harness import Protocol


def base_row(config: BenchConfig, protocol: Protocol) -> dict:
    return {"name": config.name, "engine": config.engine, "precision": config.precision,
            "runner": config.runner, "group": config.group, "device": config.device,
            "beam_size": protocol.beam_size, "batch_size": protocol.batch_size,
            "throughput_tok_s": None, "target_tokens": None, "latency_ms": None, "latency_beam4_ms": None,
            "peak_rss_mb": None, "disk_mb": None, "disk_bytes": None, "load_s": None,
            "first_translation_ms": None, "bleu": None, "chrf": None, "bleu_delta": None,
            "chrf_delta": None, "agreement": None, "bleu_signature": None, "chrf_signature": None,
            "error": None}


def record_outcome(row: dict, outcome: WorkerOutcome, *, test_set: TestSet, counter, protocol: Protocol,
                   score_quality: bool, limit_mb: int | None, timeout_s: float | None) -> list[str] | None:
    """Fills ``row`` from a finished worker; returns its outputs, or None when it left no result."""
    row["peak_rss_mb"] = outcome.peak_rss_mb
    row["exit_code"] = outcome.exit_code
    if outcome.result is None:
        row["error"] = failure_message(outcome, limit_mb, timeout_s)
        row["stderr_tail"] = outcome.stderr_tail
        return None
    fill_row(row, outcome.result, outcome, test_set, counter, protocol, score_quality)
    return outcome.result["outputs"]


def fill_row(row: dict, result: dict, outcome: WorkerOutcome, test_set: TestSet, counter,
             protocol: Protocol, score_quality: bool) -> None:
    outputs = result["outputs"]
    tp = result["throughput"]
    if protocol.forced_length:
        tokens = len(outputs) * protocol.max_length
        if tp.get("generated_tokens") not in (None, tokens):   # the engine ignored the forced length
            row["warning"] = f"engine generated {tp['generated_tokens']} tokens, forced length implies {tokens}"
    else:
        tokens = counter.count(outputs)
    seconds = metrics.median(tp["pass_s"])
    latency = result["latency_ms"]     # None in a throughput-only round
    row.update({
        "load_s": result["load_s"],
        "first_translation_ms": result["first_translation_ms"],
        "latency_ms": metrics.latency_summary(latency["greedy"]) if latency else None,
        "latency_beam4_ms": metrics.latency_summary(latency["beam4"]) if latency else None,
        "throughput_tok_s": tokens / seconds if seconds else None,
        "target_tokens": tokens,
        "engine_generated_tokens": tp.get("generated_tokens"),
        "peak_rss_mb": outcome.peak_rss_mb,
        "stacks_loaded": result.get("stacks_loaded"),
        "runtime": result.get("runtime"),
        "throughput_only": bool(result.get("throughput_only")),
        "raw": {"latency_ms": latency, "throughput_pass_s": tp["pass_s"],
                "worker_wall_s": outcome.wall_s, "worker_own_peak_rss_mb": result.get("own_peak_rss_mb")},
    })
    if score_quality and not row["throughput_only"]:   # the same outputs as the full rounds' (or a warning)
        row.update(metrics.quality(outputs, test_set.references))


# ------------------------------------------------------------------ rounds

def round_summary(row: dict) -> dict:
    """The figures of one round that ratios are taken of (``mtedge.bench.targets.round_ratios``)."""
    return {"throughput_tok_s": row.get("throughput_tok_s"),
            "latency_p50": (row.get("latency_ms") or {}).get("p50"),
            "latency_beam4_p50": (row.get("latency_beam4_ms") or {}).get("p50"),
            "peak_rss_mb": row.get("peak_rss_mb"), "load_s": row.get("load_s"),
            "throughput_only": bool(row.get("throughput_only")), "error": row.get("error")}


def combine_rounds(rounds: list[dict], outputs: list[list[str] | None]) -> dict:
    """One configuration's row from its rounds (one fresh worker each, interleaved with the other
    configurations): throughput is the median over rounds, latency percentiles are over every round's
    samples (throughput-only rounds have none), peak RSS is the highest, and ``rounds`` keeps each round's
    figures for per-round ratios.
    A failed round leaves a warning; the row is an error only when every round failed."""
    measured = [row for row in rounds if not row.get("error")]
    if not measured:
        row = dict(rounds[0])
        row["rounds"] = [round_summary(r) for r in rounds]
        return row
    row = dict(measured[0])
    if len(rounds) == 1:
        row["rounds"] = [round_summary(row)]
        return row
    raws = [r["raw"] for r in measured]
    timed = [raw["latency_ms"] for raw in raws if raw["latency_ms"]]
    greedy = [ms for latency in timed for ms in latency["greedy"]]
    beam = [ms for latency in timed for ms in latency["beam4"]]
    firsts = [r["first_translation_ms"] for r in measured if r.get("first_translation_ms") is not None]
    row.update({
        "throughput_tok_s": metrics.median([r["throughput_tok_s"] for r in measured]),
        "latency_ms": metrics.latency_summary(greedy) if timed else None,
        "latency_beam4_ms": metrics.latency_summary(beam) if timed else None,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in measured if r.get("peak_rss_mb") is not None),
        "load_s": metrics.median([r["load_s"] for r in measured]),
        "first_translation_ms": metrics.median(firsts) if firsts else None,
        "rounds": [round_summary(r) for r in rounds],
        "raw": {"latency_ms": {"greedy": greedy, "beam4": beam} if timed else None,
                "throughput_pass_s": [s for raw in raws for s in raw["throughput_pass_s"]],
                "worker_wall_s": metrics.median([raw["worker_wall_s"] for raw in raws]),
                "worker_own_peak_rss_mb": max((raw.get("worker_own_peak_rss_mb") or 0) for raw in raws) or None},
    })
    warnings = [row["warning"]] if row.get("warning") else []
    failed = [f"round {i + 1}: {r['error']}" for i, r in enumerate(rounds) if r.get("error")]
    if failed:
        warnings.append(f"{len(failed)} of {len(rounds)} rounds failed ({'; '.join(failed)})")
    first = next(out for out in outputs if out is not None)
    differing = [i + 1 for i, out in enumerate(outputs) if out is not None and out != first]
    if differing:
        warnings.append(f"outputs of round(s) {', '.join(map(str, differing))} differ from the first "
                        f"measured round's: this configuration is not deterministic here")
    if warnings:
        row["warning"] = "; ".join(warnings)
    return row
