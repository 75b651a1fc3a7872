"""``mtedge bench``: every configuration in its own worker process, one report.

The parent stays light (no torch, except when it exports a checkpoint first): it resolves the bundle,
writes the sentences once, prepares each configuration, runs its worker (``mtedge.bench.supervisor``),
turns what the worker measured into a row (``mtedge.bench.rows``) and saves the report after every row
(``mtedge.bench.report.Report``), so a crash or Ctrl-C still leaves what was measured.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from mtedge.bench import metrics
from mtedge.bench.configs import REFERENCE_CONFIG, BenchConfig, resolve_configs
from mtedge.bench.machine import describe_machine
from mtedge.bench.report import Report
from mtedge.bench.rows import base_row, combine_rounds, record_outcome
from mtedge.bench.paired import PAIRS, pair_label
from mtedge.bench.supervisor import failure_message, run_worker
from mtedge.bench.testset import TestSet
from mtedge.bundle import SHORTLIST_FILE, Bundle
from mtedge.engines import cuda_available
from mtedge.errors import BundleError, UserError
from mtedge.tokenizer import TOKENIZER_JSON


@dataclass
class Protocol:
    """How much is measured; ``quick`` is the demo/test size."""

    sentences: int = 256            # throughput + quality sentences
    latency_sentences: int = 20
    repeats: int = 3
    warmup: int = 2
    throughput_repeats: int = 2
    # passes go on (up to MAX_THROUGHPUT_PASSES) until this much time is timed: a pass over a short test set
    # lasts a fraction of a second, and such passes drift 10-15% from one to the next (reference-sysmsg:
    # 0.33 s passes, two of them per round, put our CT2 wrapper at 0.92x raw CT2 where 30 interleaved
    # in-process passes put it at 0.997x)
    throughput_min_s: float = 3.0
    # interleaved rounds (A B C ... A B C ...), each configuration in a fresh worker every round: timings on a
    # shared machine drift over minutes, so a ratio is only trusted across rounds (its median and spread)
    rounds: int = 3
    # then this many more interleaved rounds that time only the batch throughput (fresh workers, no latency or
    # quality): a ratio's interval needs 5+ rounds to be 90% sure, and one engine timed against itself on these
    # VMs spreads 0.85-1.19 (mtedge/DESIGN.md §4.16); 3 + 6 = 9 rounds give a 96% interval (2nd to 8th value)
    throughput_rounds: int = 6
    batch_size: int = 32
    beam_size: int = 4
    length_penalty: float = 0.0     # CTranslate2's benchmark protocol
    # generated tokens incl. </s>; None: the bundle's own generation limit (bundle.generation.max_length) — a
    # larger cap would let a runaway output index past the model's position table
    max_length: int | None = None
    forced_length: bool = False

    @classmethod
    def quick(cls, **overrides) -> "Protocol":
        base = cls(sentences=32, latency_sentences=4, repeats=2, warmup=1, throughput_repeats=1, throughput_min_s=0.0,
                   rounds=1, throughput_rounds=0)
        return cls(**{**base.__dict__, **overrides})

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BenchOptions:
    out_dir: Path
    work_dir: Path
    configs: str | None = None
    threads: int | None = None
    protocol: Protocol = field(default_factory=Protocol)
    max_memory_mb: dict[str, int] = field(default_factory=dict)   # config name or "*" -> MB
    progress: bool = True
    timeout_s: float | None = None


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def dir_size_bytes(path: Path, leave_out: tuple[str, ...] = ()) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed), but for the names in ``leave_out``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*")
               if p.is_file() and not p.is_symlink() and p.name not in leave_out)


# ---------------------------------------------------------------- per-config preparation

def _torch_dir(bundle) -> Path:
    try:
        return bundle.engine_dir("torch", "fp32")
    except BundleError as exc:
        raise BundleError(f"{exc} (the PyTorch peers need the bundle's torch/fp32 checkpoint; "
                          f"export without --no-torch)") from None


def _optimum_view(bundle, precision: str, work_dir: Path) -> Path:
    """A directory of symlinks: the bundle's ONNX files + the checkpoint's config files, the
    layout ORTModelForSeq2SeqLM expects; the bundle itself is never modified."""
    onnx_dir, torch_dir = bundle.engine_dir("onnx", precision), _torch_dir(bundle)
    view = work_dir / "optimum-views" / f"{bundle.path.name}-{precision}"
    view.mkdir(parents=True, exist_ok=True)
    for old in view.iterdir():
        old.unlink()
    for src in onnx_dir.iterdir():
        (view / src.name).symlink_to(src.resolve())
    for name in ("config.json", "generation_config.json"):
        if (torch_dir / name).exists():
            (view / name).symlink_to((torch_dir / name).resolve())
    return view


class UnsupportedConfig(Exception):
    """The bundle has the files, but this machine cannot run the configuration."""


def _check_ct2_support(config: BenchConfig) -> None:
    # e.g. int16 needs Intel MKL: on an AMD CPU CTranslate2 refuses it at load, after seconds of
    # worker start-up and with a less helpful message
    if config.engine != "ct2" or config.device != "cpu":
        return
    from mtedge.bench.exporting import ct2_cpu_compute_types

    supported = ct2_cpu_compute_types()
    if config.precision not in supported:
        raise UnsupportedConfig(f"CTranslate2 cannot run {config.precision} on this CPU "
                                f"(supported: {', '.join(sorted(supported))})")


def prepare_spec(config: BenchConfig, bundle, work_dir: Path) -> tuple[dict, Path]:
    """Worker spec extras and the directory whose files are this config's model on disk.
    Raises BundleError when the bundle lacks what the config runs, UnsupportedConfig when this
    machine cannot run it."""
    extra: dict = {}
    if config.runner == "mtedge":
        model_dir = bundle.engine_dir(config.engine, config.precision)
        if config.shortlist and not bundle.has_shortlist(config.engine, config.precision):
            raise BundleError(f"bundle {bundle.name} has no vocabulary shortlist (add one with `mtedge shortlist`)")
    elif config.runner in ("hf", "hf-int8"):
        model_dir = extra["torch_dir"] = _torch_dir(bundle)
    elif config.runner == "optimum":
        model_dir = bundle.engine_dir("onnx", config.precision)
        extra["torch_dir"] = _torch_dir(bundle)
        extra["view_dir"] = _optimum_view(bundle, config.precision, work_dir)
    elif config.runner == "ct2raw":
        model_dir = extra["engine_dir"] = bundle.engine_dir("ct2", config.precision)
        bundle.tokenizer_dir()
    else:  # pragma: no cover - configs.py and runners.py list the same runners
        raise ValueError(config.runner)
    _check_ct2_support(config)
    return {k: str(v) for k, v in extra.items()}, model_dir


# ---------------------------------------------------------------- the run

@dataclass
class _Run:
    """What every configuration of one run shares."""

    bundle: Bundle
    options: BenchOptions
    protocol: Protocol
    threads: int
    run_dir: Path
    sources_path: Path
    test_set: TestSet
    counter: metrics.TokenCounter | None
    score_quality: bool

    def _job(self, label: str) -> dict:
        """What every worker job's spec holds: its name, the sentences, the protocol, where its result goes."""
        return {"label": label, "threads": self.threads, "sources_path": str(self.sources_path),
                "protocol": self.protocol.to_dict(), "result_path": str(self.run_dir / f"{label}.result.json")}

    def measure(self, config: BenchConfig, row: dict, round_index: int = 0,
                throughput_only: bool = False) -> list[str] | None:
        """Fills ``row`` with one round of ``config`` (only its batch throughput with ``throughput_only``);
        returns its outputs, or None when it has none."""
        try:
            extra, model_dir = prepare_spec(config, self.bundle, Path(self.options.work_dir))
        except (BundleError, UnsupportedConfig) as exc:
            row["error"] = _unavailable_message(config, exc)
            return None
        # a config without the shortlist does not need its file, though it shares the directory
        row["disk_bytes"] = dir_size_bytes(model_dir, () if config.shortlist else (SHORTLIST_FILE,))
        row["disk_mb"] = row["disk_bytes"] / 2**20
        row["model_dir"] = str(model_dir)
        limit = self.options.max_memory_mb.get(config.name, self.options.max_memory_mb.get("*"))
        label = f"{config.name}.round{round_index + 1}"
        spec = {**self._job(label), "config": config.to_dict(), "bundle": str(self.bundle.path),
                "max_memory_mb": limit, "throughput_only": throughput_only, **extra}
        outcome = run_worker(spec, self.run_dir / "logs", self.options.timeout_s)
        return record_outcome(row, outcome, test_set=self.test_set, counter=self.counter,
                              protocol=self.protocol, score_quality=self.score_quality, limit_mb=limit,
                              timeout_s=self.options.timeout_s)

    def measure_pair(self, pair: tuple[BenchConfig, BenchConfig], round_index: int) -> dict:
        """One round of ``pair`` in one process (mtedge.bench.paired): its result, or {"error": why}."""
        members = []
        for config in pair:
            extra, _ = prepare_spec(config, self.bundle, Path(self.options.work_dir))
            members.append({"config": config.to_dict(), "bundle": str(self.bundle.path), "threads": self.threads,
                            **extra})
        spec = {**self._job(f"paired.{pair[0].name}.{pair[1].name}.round{round_index + 1}"), "members": members}
        outcome = run_worker(spec, self.run_dir / "logs", self.options.timeout_s, module="mtedge.bench.paired")
        if outcome.result is None:
            return {"error": failure_message(outcome, None, self.options.timeout_s)}
        return outcome.result


def _unavailable_message(config: BenchConfig, exc: Exception) -> str:
    if not isinstance(exc, BundleError):
        return f"unsupported here: {exc}"
    message = f"not in bundle: {exc}"
    try:
        _check_ct2_support(config)
    except UnsupportedConfig as why:   # the root cause, e.g. int16 on an AMD CPU
        message += f" (and {why}, so the bench does not export it)"
    return message


def run_bench(bundle_path: Path, test_set: TestSet, options: BenchOptions, *, synthetic: str | None = None,
              model_label: str | None = None) -> dict:
    bundle = Bundle.open(bundle_path)
    gpu = cuda_available("ct2")  # the GPU rows are CTranslate2's; no torch import: the parent stays light
    configs = resolve_configs(options.configs, gpu)
    threads = options.threads or default_threads()
    protocol = options.protocol
    if protocol.max_length is None:   # what mtedge.Translator defaults to: the bench measures what users get
        protocol = replace(protocol, max_length=bundle.generation.max_length)
    out_dir, work_dir = Path(options.out_dir), Path(options.work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir = work_dir / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)

    sentences = test_set.sources[: protocol.sentences]
    references = test_set.references[: protocol.sentences] if test_set.references else None
    test_set = TestSet(sentences, references, test_set.origin)
    sources_path = run_dir / "sources.json"
    sources_path.write_text(json.dumps(sentences, ensure_ascii=False), encoding="utf-8")

    score_quality = synthetic is None
    counter = None if protocol.forced_length else metrics.TokenCounter(_target_spm(bundle))
    header = _header(bundle, configs, protocol, threads, options, test_set, synthetic, model_label, gpu)
    report = Report(header, score_quality)
    run = _Run(bundle, options, protocol, threads, run_dir, sources_path, test_set, counter, score_quality)

    rounds = _Rounds(configs, protocol, report, out_dir)
    by_name = {config.name: config for config in configs}
    pairs = [(by_name[a], by_name[b]) for a, b in PAIRS if a in by_name and b in by_name]
    total_rounds = protocol.rounds + protocol.throughput_rounds
    bar = _progress(len(configs) * total_rounds, options.progress)
    try:
        for round_index in range(total_rounds):
            throughput_only = round_index >= protocol.rounds
            for config in rotated(configs, round_index):
                bar.set_postfix_str(f"{config.name} (round {round_index + 1}/{total_rounds}"
                                    f"{', throughput' if throughput_only else ''})")
                rounds.start(config)
                row = base_row(config, protocol)
                outputs = run.measure(config, row, round_index, throughput_only)
                rounds.record(config, row, outputs)
                bar.update(1)
                report.save(out_dir)
            for pair in pairs:
                if rounds.measured(pair[0].name) and rounds.measured(pair[1].name):
                    label = pair_label((pair[0].name, pair[1].name))
                    bar.set_postfix_str(f"{label} in one process")
                    report.paired.setdefault(label, []).append(run.measure_pair(pair, round_index))
                    report.save(out_dir)
    except KeyboardInterrupt:
        report.interrupted = True
        rounds.interrupted()
        report.save(out_dir, final=True)
        bar.close()
        raise
    bar.close()
    return report.save(out_dir, final=True)


def rotated(configs: list[BenchConfig], round_index: int) -> list[BenchConfig]:
    """Round r starts at configuration r: no configuration always runs first (cold page cache, a
    machine that has just gone quiet) or always right after the same neighbour."""
    shift = round_index % len(configs) if configs else 0
    return configs[shift:] + configs[:shift]


class _Rounds:
    """Each configuration's rounds so far and its row in the report, rebuilt after every round."""

    def __init__(self, configs: list[BenchConfig], protocol: Protocol, report: Report, out_dir: Path):
        self.protocol, self.report, self.out_dir = protocol, report, out_dir
        self.index = {config.name: i for i, config in enumerate(configs)}
        self.rows: dict[str, list[dict]] = {config.name: [] for config in configs}
        self.outputs: dict[str, list] = {config.name: [] for config in configs}
        self.current: BenchConfig | None = None

    def start(self, config: BenchConfig) -> None:
        self.current = config
        # in the report before its first round (round 1 runs in config order): an interrupt marks it
        if len(self.report.rows) == self.index[config.name]:
            self.report.rows.append(base_row(config, self.protocol))

    def measured(self, name: str) -> bool:
        """Whether ``name``'s latest round left numbers (a pair is timed in one process only then)."""
        return bool(self.rows[name]) and not self.rows[name][-1].get("error")

    def record(self, config: BenchConfig, row: dict, outputs: list[str] | None) -> None:
        self.current = None
        self.rows[config.name].append(row)
        self.outputs[config.name].append(outputs)
        combined = combine_rounds(self.rows[config.name], self.outputs[config.name])
        self.report.rows[self.index[config.name]] = combined
        first = next((out for out in self.outputs[config.name] if out is not None), None)
        if first is not None and config.name not in self.report.outputs:
            self.report.outputs[config.name] = first
            (self.out_dir / "outputs").mkdir(exist_ok=True)
            (self.out_dir / "outputs" / f"{config.name}.txt").write_text("\n".join(first) + "\n", encoding="utf-8")

    def interrupted(self) -> None:
        """Ctrl-C: the configuration being measured says so, unless an earlier round measured it."""
        config = self.current
        if config is None:
            return
        row = self.report.rows[self.index[config.name]]
        if not self.rows[config.name]:
            row["error"] = "interrupted (Ctrl-C) before this configuration finished"
        else:
            row["warning"] = "; ".join(filter(None, [row.get("warning"), "interrupted (Ctrl-C) during a later round"]))


def _header(bundle: Bundle, configs: list[BenchConfig], protocol: Protocol, threads: int, options: BenchOptions,
            test_set: TestSet, synthetic: str | None, model_label: str | None, gpu) -> dict:
    """The report's fields that hold for the whole run."""
    if synthetic:
        quality_note = (f"skipped: synthetic {synthetic} model with random weights and forced output lengths "
                        f"— its outputs are noise, so BLEU/chrF/agreement would measure nothing")
    elif test_set.references is None:
        quality_note = (f"no references in the test file: BLEU/chrF n/a; agreement = exact-match rate vs "
                        f"{REFERENCE_CONFIG} outputs (batch {protocol.batch_size}, beam {protocol.beam_size})")
    else:
        quality_note = (f"BLEU/chrF (sacrebleu) of the batch-{protocol.batch_size} beam-{protocol.beam_size} "
                        f"outputs vs references; deltas and exact-match agreement vs {REFERENCE_CONFIG}")
    return {
        "mtedge_bench_version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe_machine(gpu),
        "settings": {**protocol.to_dict(), "threads": threads, "configs": [c.name for c in configs],
                     "max_memory_mb": options.max_memory_mb or None,
                     "token_count_method": (f"forced: every sentence is exactly max_length = {protocol.max_length} "
                                            f"tokens incl. </s>") if protocol.forced_length else
                     metrics.TokenCounter.method},
        "model": {"name": model_label or bundle.name, "bundle": str(bundle.path), "family": bundle.family,
                  "synthetic": synthetic},
        "test_set": {"origin": test_set.origin, "n_sentences": len(test_set.sources),
                     "has_references": test_set.references is not None},
        "quality_note": quality_note,
    }


def _target_spm(bundle: Bundle) -> Path:
    tok_dir = bundle.tokenizer_dir()
    meta = json.loads((tok_dir / TOKENIZER_JSON).read_text(encoding="utf-8"))
    return tok_dir / meta["target_spm"]


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="mtedge bench", unit="config", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True)


def parse_memory_limits(values: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``--max-memory-mb 4000`` (every config) or ``--max-memory-mb ct2-int8=300`` (one)."""
    limits: dict[str, int] = {}
    for value in values:
        name, sep, mb = value.rpartition("=")
        try:
            limits[name if sep else "*"] = int(mb)
        except ValueError:
            raise UserError(f"--max-memory-mb expects MB or CONFIG=MB, got {value!r}") from None
    return limits
