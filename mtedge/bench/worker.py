"""One configuration, measured in a fresh process: ``python -m mtedge.bench.worker '<json spec>'``.

A fresh process per configuration keeps allocator caches, thread pools and imported
stacks of one engine out of the next one's timings and peak memory; ``mtedge.bench.launcher``
reads the peak RSS from the OS once this process has exited (``os.wait4``), not from a sampler.

The spec (built by ``mtedge.bench.harness``) names the config, the bundle, the sources file,
the protocol and ``result_path``, where this writes its JSON. Nothing heavy is imported
here at module level: the runner imports its own stack.
"""

from __future__ import annotations

import json
import os
import sys
import time

# Env knobs for tests of the failure paths: a worker that crashes on purpose.
FAIL_ENV = "MTEDGE_BENCH_FAIL"   # comma-separated config names that raise after loading
# a tiny model's pass can take milliseconds: the minimum timed window (Protocol.throughput_min_s) stops here
MAX_THROUGHPUT_PASSES = 100
# Stacks whose import alone costs hundreds of MB: recorded per worker, so a report shows that an
# mtedge row's peak memory holds no torch (mtedge/DESIGN.md §2).
HEAVY_STACKS = ("torch", "transformers", "optimum")


def _limit_memory(max_memory_mb: int | None) -> None:
    """Cap the address space, so an over-budget config fails (MemoryError / bad_alloc) instead
    of swapping the machine: a real out-of-memory, recorded in that config's row."""
    if max_memory_mb:
        import resource

        limit = int(max_memory_mb) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def pin_threads(threads: int) -> None:
    # Before any numeric library loads: OpenMP/MKL pools size themselves from these.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def _cold_and_latency(runner, sources: list[str], proto: dict, result: dict) -> None:
    max_length, forced = proto["max_length"], proto["forced_length"]
    # Cold: the very first translation after load (lazy allocations, kernel selection).
    _, cold_s = _timed(runner.translate, sources[:1], 1, max_length, forced, proto["length_penalty"])
    result["first_translation_ms"] = cold_s * 1000

    # Latency: one sentence per call, after warm-up, every sentence repeated.
    latency_sources = sources[: proto["latency_sentences"]]
    result["latency_ms"] = {}
    for label, beam in (("greedy", 1), ("beam4", 4)):
        for text in latency_sources[: proto["warmup"]]:
            runner.translate([text], beam, max_length, forced, proto["length_penalty"])
        samples = []
        for _ in range(proto["repeats"]):
            for text in latency_sources:
                _, seconds = _timed(runner.translate, [text], beam, max_length, forced, proto["length_penalty"])
                samples.append(seconds * 1000)
        result["latency_ms"][label] = samples


def measure(spec: dict) -> dict:
    from mtedge.bench.runners import make_runner

    with open(spec["sources_path"], encoding="utf-8") as fh:
        sources = json.load(fh)
    proto = spec["protocol"]
    max_length, forced = proto["max_length"], proto["forced_length"]
    runner = make_runner(spec)
    result: dict = {"config": spec["config"]["name"], "pid": os.getpid()}

    _, result["load_s"] = _timed(runner.load)
    result["runtime"] = runner.runtime()
    if spec["config"]["name"] in os.environ.get(FAIL_ENV, "").split(","):
        raise RuntimeError(f"{FAIL_ENV} asked config {spec['config']['name']} to fail")

    result["throughput_only"] = bool(spec.get("throughput_only"))
    if result["throughput_only"]:    # a round that only adds a throughput sample (Protocol.throughput_rounds)
        result["first_translation_ms"], result["latency_ms"] = None, None
    else:
        _cold_and_latency(runner, sources, proto, result)

    # Throughput: batches of batch_size at beam_size (CTranslate2's protocol: 32, 4, lp 0).
    batch, beam = proto["batch_size"], proto["beam_size"]
    batches = [sources[i: i + batch] for i in range(0, len(sources), batch)]
    runner.translate(batches[0], beam, max_length, forced, proto["length_penalty"])  # warm-up
    pass_seconds, outputs, counts = [], [], []
    min_s = proto.get("throughput_min_s") or 0.0
    while len(pass_seconds) < proto["throughput_repeats"] or (
            sum(pass_seconds) < min_s and len(pass_seconds) < MAX_THROUGHPUT_PASSES):
        outputs, counts, start = [], [], time.perf_counter()
        for chunk in batches:
            outputs.extend(runner.translate(chunk, beam, max_length, forced, proto["length_penalty"]))
            counts.append(runner.generated_tokens)
        pass_seconds.append(time.perf_counter() - start)
    # what the engine itself says it generated (None where it does not expose token ids)
    generated = None if None in counts else sum(counts)
    result["throughput"] = {"pass_s": pass_seconds, "batch_size": batch, "beam_size": beam,
                            "n_sentences": len(sources), "generated_tokens": generated}
    result["outputs"] = outputs
    result["stacks_loaded"] = sorted(m for m in HEAVY_STACKS if m in sys.modules)
    return result


def own_peak_rss_mb() -> float:
    """This process's peak RSS so far (KiB on Linux); the parent's wait4 figure can only be higher."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(argv: list[str] | None, entry: str, measure_spec) -> int:
    """What every worker entry point does: one JSON spec in, ``measure_spec(spec)`` under the spec's thread
    count and memory cap, its result written to ``result_path`` whole or not at all."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {entry} '<json spec>'", file=sys.stderr)
        return 2
    spec = json.loads(argv[0])
    pin_threads(int(spec["threads"]))
    _limit_memory(spec.get("max_memory_mb"))
    result = measure_spec(spec)
    result["own_peak_rss_mb"] = own_peak_rss_mb()
    tmp = spec["result_path"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    os.replace(tmp, spec["result_path"])
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, "mtedge.bench.worker", measure)


if __name__ == "__main__":
    sys.exit(main())
