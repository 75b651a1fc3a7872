"""How long would a full ``mtedge bench`` take? Extrapolated from a (quick) run's report.json.

    .venv/bin/python -m benchmarks.suites.estimate QUICK/report.json [--sentences 256] [--latency-sentences 20]
        [--repeats 3] [--warmup 2] [--throughput-repeats 2] [--throughput-min-seconds 3] [--length-scale 1.0]
        [--rounds 3] [--throughput-rounds 6]

Per configuration, from that run's raw numbers: the worker's fixed cost (process start, imports, load,
first translation: its wall time minus the timed calls) + the calls the target protocol makes, each
priced at the mean of the measured calls of its kind (batch-1 greedy, batch-1 beam 4, and one sentence
of a batch-32 beam-4 pass); timed passes repeat until the minimum window is timed, as the worker does.
A throughput-only round (``--throughput-rounds``) costs the fixed part, the warm-up batch and the timed passes;
the total is ``rounds`` full rounds plus those.
``--length-scale`` multiplies the decoding calls, e.g. 32/24 when the full
run forces 32 target tokens where the quick one forced 24 (decoding time grows about linearly with the
output length; the encoder's share makes this slightly pessimistic). The parent's own work (export,
scoring, plots) is not included: a few seconds for a bundle, minutes for a first --synthetic export.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mtedge.bench.worker import MAX_THROUGHPUT_PASSES


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def estimate_row(row: dict, quick: dict, target: dict, length_scale: float,
                 throughput_only: bool = False) -> float | None:
    raw = row.get("raw")
    if not raw or row.get("error"):
        return None
    greedy, beam = raw["latency_ms"]["greedy"], raw["latency_ms"]["beam4"]
    passes, n = raw["throughput_pass_s"], quick["sentences"]
    per_sentence_tp = _mean(passes) / n
    # what the quick run spent in timed calls, warm-ups (one call per warm-up sentence) priced like
    # the measured calls; the rest of the worker's wall time is fixed cost
    quick_warmup = min(quick["warmup"], quick["latency_sentences"])
    quick_calls = ((quick_warmup + len(greedy)) * _mean(greedy) / 1000
                   + (quick_warmup + len(beam)) * _mean(beam) / 1000
                   + (min(quick["batch_size"], n) + len(passes) * n) * per_sentence_tp)
    fixed = max(0.0, raw["worker_wall_s"] - quick_calls)
    calls = 0 if throughput_only else \
        min(target["warmup"], target["latency_sentences"]) + target["latency_sentences"] * target["repeats"]
    full_calls = (calls * (_mean(greedy) + _mean(beam)) / 1000
                  + min(quick["batch_size"], target["sentences"]) * per_sentence_tp) * length_scale
    pass_s = target["sentences"] * per_sentence_tp * length_scale
    window = target.get("throughput_min_s") or 0.0
    timed_passes = max(target["throughput_repeats"],
                       min(MAX_THROUGHPUT_PASSES, math.ceil(window / pass_s) if pass_s else 0))
    return fixed + full_calls + timed_passes * pass_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--latency-sentences", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--throughput-repeats", type=int, default=2)
    parser.add_argument("--throughput-min-seconds", type=float, default=3.0)
    parser.add_argument("--length-scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--throughput-rounds", type=int, default=6)
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text(encoding="utf-8"))
    quick = report["settings"]
    target = {"sentences": args.sentences, "latency_sentences": args.latency_sentences, "repeats": args.repeats,
              "warmup": args.warmup, "throughput_repeats": args.throughput_repeats,
              "throughput_min_s": args.throughput_min_seconds}
    total = 0.0
    for row in report["results"]:
        seconds = estimate_row(row, quick, target, args.length_scale)
        measured = (row.get("raw") or {}).get("worker_wall_s")
        if seconds is None:
            print(f"{row['name']:18s} n/a ({(row.get('error') or '').split(':')[0]})")
            continue
        extra = estimate_row(row, quick, target, args.length_scale, throughput_only=True)
        run = args.rounds * seconds + args.throughput_rounds * extra
        total += run
        print(f"{row['name']:18s} quick {measured:7.1f} s -> full round {seconds:7.1f} s, throughput round "
              f"{extra:6.1f} s, all {run:7.1f} s")
    m = report["machine"]
    print(f"total {total / 60:.1f} min for {args.rounds} + {args.throughput_rounds} rounds of "
          f"{', '.join(f'{k} {v}' for k, v in target.items())}, "
          f"length x{args.length_scale:g} (measured on {m['cpu_model']}, {quick['threads']} thread(s), "
          f"load average {m.get('load_average')})")


if __name__ == "__main__":
    main()
