"""Two configurations in one process, their batch passes alternated: the cost of a wrapper over the library
it wraps, without the minutes and fresh processes that lie between two rows.

    python -m mtedge.bench.paired '<json spec>'

Rows timed in fresh processes minutes apart swing ±15% on the 2-vCPU VMs these reports come from
(mtedge/DESIGN.md §4.16), so a bound within a few percent of 1.0 — our CTranslate2 engine at >= 0.97x raw
CTranslate2 — flipped between PASS and MISS from run to run (0.94–1.05) while the two, called in turns in
one process, differed by under 1%. Each round the harness runs this job once per pair in :data:`PAIRS`
whose two rows it measures: both runners load in one worker, take turns over the same batches (A B, then
B A, so neither always runs second), and every turn pair gives one ratio of throughputs. The round's value is
their median; the target is judged on the rounds' values. Holding both models, the job's memory belongs
to neither row and is not reported; its outputs are compared, which also checks that the pair translates
alike.
"""

from __future__ import annotations

import json
import os
import sys
import time

from mtedge.bench import metrics
from mtedge.bench.worker import run_job

# (numerator, denominator): a wrapper and the library it wraps, on the same model files
PAIRS = (("ct2-int8", "ct2-raw-int8"),)
TURN_PAIRS = 6       # A B, B A, ... : six ratios per round


def pair_label(pair: tuple[str, str]) -> str:
    return f"{pair[0]} / {pair[1]}"


def measure(spec: dict) -> dict:
    from mtedge.bench.runners import make_runner

    with open(spec["sources_path"], encoding="utf-8") as fh:
        sources = json.load(fh)
    proto = spec["protocol"]
    batch, beam = proto["batch_size"], proto["beam_size"]
    batches = [sources[i: i + batch] for i in range(0, len(sources), batch)]
    runners = [make_runner(member) for member in spec["members"]]
    for runner in runners:
        runner.load()

    def one_pass(runner) -> tuple[list[str], float]:
        start, outputs = time.perf_counter(), []
        for chunk in batches:
            outputs.extend(runner.translate(chunk, beam, proto["max_length"], proto["forced_length"],
                                            proto["length_penalty"]))
        return outputs, time.perf_counter() - start

    for runner in runners:                      # warm-up: lazy allocations, packed weights
        runner.translate(batches[0], beam, proto["max_length"], proto["forced_length"], proto["length_penalty"])
    seconds: list[list[float]] = [[], []]
    outputs: list[list[str]] = [[], []]
    for turn in range(int(spec.get("turn_pairs") or TURN_PAIRS)):
        for k in ((0, 1) if turn % 2 == 0 else (1, 0)):
            outputs[k], took = one_pass(runners[k])
            seconds[k].append(took)
    # throughput ratio numerator / denominator = the denominator's time / the numerator's, turn pair by turn pair
    ratios = [den / num for num, den in zip(*seconds)]
    same = sum(a == b for a, b in zip(*outputs))
    return {"pair": [member["config"]["name"] for member in spec["members"]], "pass_s": seconds,
            "ratios": ratios, "ratio": metrics.median(ratios), "identical_outputs": same,
            "n_sentences": len(sources), "pid": os.getpid()}


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, "mtedge.bench.paired", measure)


if __name__ == "__main__":
    sys.exit(main())
