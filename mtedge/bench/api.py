"""The Python entry point behind ``mtedge bench``."""

from __future__ import annotations

from pathlib import Path

from mtedge.bench.configs import resolve_configs
from mtedge.bench.harness import BenchOptions, Protocol, parse_memory_limits, run_bench
from mtedge.bench.testset import TestSet, load_test_set, synthetic_sources
from mtedge.errors import UserError

SYNTHETIC_WORDS = 20        # ~25 source tokens, close to a newstest sentence
SYNTHETIC_FORCED_LENGTH = 32  # target tokens incl. </s>, forced on every engine (quick: 24)


def bench(model: str | Path | None = None, *, test_file: str | Path | None = None, synthetic: str | None = None,
          configs: str | None = None, threads: int | None = None, out_dir: Path = Path("benchmarks/results/latest"),
          work_dir: Path = Path("benchmarks/results/tmp"), quick: bool = False, sentences: int | None = None,
          latency_sentences: int | None = None, repeats: int | None = None, throughput_repeats: int | None = None,
          throughput_min_s: float | None = None, rounds: int | None = None,
          throughput_rounds: int | None = None, max_length: int | None = None,
          max_memory_mb: list[str] | None = None,
          timeout_s: float | None = None, progress: bool = True) -> dict:
    """Runs the benchmark and returns the report dict (also written to ``out_dir``)."""
    if synthetic and model:
        raise UserError("give either MODEL or --synthetic NAME, not both")
    if not synthetic and not model:
        raise UserError("give a MODEL (bundle or HF checkpoint dir) or --synthetic NAME")
    if not synthetic and not test_file:
        raise UserError("--test FILE is required for a real model (TSV/JSONL with references, or plain text)")
    if threads is not None and threads < 1:
        raise UserError("--threads must be >= 1")
    if synthetic:
        from mtedge.bench.synthetic import SYNTHETIC_MODELS

        if synthetic not in SYNTHETIC_MODELS:
            raise UserError(f"unknown synthetic model {synthetic!r}; known: {', '.join(SYNTHETIC_MODELS)}")
    resolve_configs(configs, gpu=False)     # unknown names fail before any export or worker
    limits = parse_memory_limits(max_memory_mb or [])

    counts = dict(sentences=sentences, latency_sentences=latency_sentences, repeats=repeats,
                  throughput_repeats=throughput_repeats, rounds=rounds)
    for option, value in counts.items():
        if value is not None and value < 1:
            raise UserError(f"--{option.replace('_', '-')} must be >= 1")
    if throughput_min_s is not None and throughput_min_s < 0:
        raise UserError("--throughput-min-seconds must be >= 0")
    if throughput_rounds is not None and throughput_rounds < 0:
        raise UserError("--throughput-rounds must be >= 0")
    overrides = {k: v for k, v in dict(counts, max_length=max_length, throughput_min_s=throughput_min_s,
                                       throughput_rounds=throughput_rounds).items() if v is not None}
    if synthetic:
        overrides.setdefault("max_length", 24 if quick else SYNTHETIC_FORCED_LENGTH)
        overrides["forced_length"] = True
    protocol = Protocol.quick(**overrides) if quick else Protocol(**overrides)
    if protocol.max_length is not None and protocol.max_length < 2:
        raise UserError("--max-length must be >= 2 (one piece and </s>)")

    work_dir = Path(work_dir)
    if synthetic:
        from mtedge.bench.synthetic import synthetic_bundle

        bundle_path, label = synthetic_bundle(synthetic, work_dir), f"synthetic {synthetic}"
        test_set = TestSet(synthetic_sources(protocol.sentences, SYNTHETIC_WORDS), None,
                           f"synthetic: {SYNTHETIC_WORDS}-word sentences")
    else:
        test_set = load_test_set(test_file)
        from mtedge.bench.exporting import resolve_bundle

        bundle_path, label = resolve_bundle(model, work_dir)
    options = BenchOptions(out_dir=Path(out_dir), work_dir=work_dir, configs=configs, threads=threads,
                           protocol=protocol, max_memory_mb=limits, progress=progress, timeout_s=timeout_s)
    return run_bench(bundle_path, test_set, options, synthetic=synthetic, model_label=label)
