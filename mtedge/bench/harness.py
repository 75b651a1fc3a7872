"""``mtedge bench``: every configuration in its own worker process, one report.

The parent stays light (no torch, except when it exports a checkpoint first): it resolves the
bundle, writes the sentences once, starts ``python -m mtedge.bench.worker`` per configuration through
``mtedge.bench.launcher`` (which reports the exited worker's peak RSS from ``os.wait4``, free of the
parent's own), scores the outputs (sacrebleu) and writes the report after every row, so a crash or
Ctrl-C still leaves what was measured.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mtedge.bench import metrics, plots, report as report_mod
from mtedge.bench.configs import REFERENCE_CONFIG, BenchConfig, cuda_available, resolve_configs
from mtedge.bench.machine import describe_machine
from mtedge.bench.testset import TestSet
from mtedge.errors import BundleError, UserError

STDERR_TAIL_CHARS = 2000
LAUNCHER = Path(__file__).with_name("launcher.py")


@dataclass
class Protocol:
    """How much is measured; ``quick`` is the demo/test size."""

    sentences: int = 256            # throughput + quality sentences
    latency_sentences: int = 20
    repeats: int = 3
    warmup: int = 2
    throughput_repeats: int = 2
    batch_size: int = 32
    beam_size: int = 4
    length_penalty: float = 0.0     # CTranslate2's benchmark protocol
    # generated tokens incl. </s>; None: the bundle's own generation limit (bundle_max_length) — a
    # larger cap would let a runaway output index past the model's position table
    max_length: int | None = None
    forced_length: bool = False

    @classmethod
    def quick(cls, **overrides) -> "Protocol":
        base = cls(sentences=32, latency_sentences=4, repeats=2, warmup=1, throughput_repeats=1)
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


def bundle_max_length(bundle) -> int:
    """The bundle's generation limit in generated tokens incl. </s> (HF max_new_tokens): what
    ``mtedge.Translator`` defaults to, so the bench measures what a user of the bundle gets."""
    generation = bundle.generation
    return int(generation.get("max_new_tokens") or max(1, int(generation.get("max_length") or 257) - 1))


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def dir_size_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())


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
    elif config.runner == "hf":
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


# ---------------------------------------------------------------- running one worker

@dataclass
class WorkerOutcome:
    result: dict | None
    exit_code: int
    peak_rss_mb: float | None
    wall_s: float
    stderr_tail: str
    timed_out: bool = False


def run_worker(spec: dict, log_dir: Path, timeout_s: float | None = None) -> WorkerOutcome:
    """Runs one worker to completion through ``mtedge.bench.launcher``; its peak RSS is the kernel's
    accounting of the exited worker (``wait4`` ``ru_maxrss``, KiB on Linux), taken by the launcher —
    a direct child of this process would carry this process's own peak (see launcher.py)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    name = spec["config"]["name"]
    result_path = Path(spec["result_path"])
    usage_path = result_path.with_name(f"{name}.usage.json")
    for path in (result_path, usage_path):
        path.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    argv = [sys.executable, "-S", str(LAUNCHER), str(usage_path), str(timeout_s or 0),
            sys.executable, "-m", "mtedge.bench.worker", json.dumps(spec)]
    start = time.perf_counter()
    with open(log_dir / f"{name}.stdout", "wb") as out, open(log_dir / f"{name}.stderr", "wb") as err:
        # a session of its own: a terminal's Ctrl-C reaches this process only, which then stops the
        # launcher, which kills the worker and still reports what it used
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                time.sleep(0.05)
        except BaseException:       # Ctrl-C: never leave a worker behind
            _reap(proc)
            raise
    wall = time.perf_counter() - start
    stderr_text = (log_dir / f"{name}.stderr").read_text(encoding="utf-8", errors="replace")
    usage = json.loads(usage_path.read_text(encoding="utf-8")) if usage_path.exists() else None
    if usage is None:               # the launcher itself died: nothing trustworthy to report
        return WorkerOutcome(None, proc.returncode, None, wall,
                             (stderr_text or "the worker launcher failed")[-STDERR_TAIL_CHARS:])
    result = None
    if usage["exit_code"] == 0 and result_path.exists():
        result = json.loads(result_path.read_text(encoding="utf-8"))
    return WorkerOutcome(result, usage["exit_code"], usage["max_rss_kib"] / 1024, wall,
                         stderr_text[-STDERR_TAIL_CHARS:], usage["killed_for"] == "timeout" and result is None)


def _reap(proc: subprocess.Popen) -> None:
    """Stops the launcher (it kills its worker first); the whole session if it does not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:                            # whatever is left of its session (a worker the launcher lost)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _failure_message(outcome: WorkerOutcome, limit_mb: int | None = None,
                     timeout_s: float | None = None) -> str:
    if outcome.timed_out:
        return f"worker timed out: killed after {timeout_s:g} s (--timeout)"
    code = outcome.exit_code
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    if limit_mb:
        how += f", address space capped at {limit_mb} MB"
    lines = [line for line in outcome.stderr_tail.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    if code == 0:
        return "worker wrote no result"
    return f"worker failed ({how}): {last}"


# ---------------------------------------------------------------- rows

def base_row(config: BenchConfig, protocol: Protocol) -> dict:
    return {"name": config.name, "engine": config.engine, "precision": config.precision,
            "runner": config.runner, "group": config.group, "device": config.device,
            "beam_size": protocol.beam_size, "batch_size": protocol.batch_size,
            "throughput_tok_s": None, "target_tokens": None, "latency_ms": None, "latency_beam4_ms": None,
            "peak_rss_mb": None, "disk_mb": None, "disk_bytes": None, "load_s": None,
            "first_translation_ms": None, "bleu": None, "chrf": None, "bleu_delta": None,
            "chrf_delta": None, "agreement": None, "bleu_signature": None, "chrf_signature": None,
            "error": None}


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
    row.update({
        "load_s": result["load_s"],
        "first_translation_ms": result["first_translation_ms"],
        "latency_ms": metrics.latency_summary(result["latency_ms"]["greedy"]),
        "latency_beam4_ms": metrics.latency_summary(result["latency_ms"]["beam4"]),
        "throughput_tok_s": tokens / seconds if seconds else None,
        "target_tokens": tokens,
        "engine_generated_tokens": tp.get("generated_tokens"),
        "peak_rss_mb": outcome.peak_rss_mb,
        "stacks_loaded": result.get("stacks_loaded"),
        "raw": {"latency_ms": result["latency_ms"], "throughput_pass_s": tp["pass_s"],
                "worker_wall_s": outcome.wall_s, "worker_own_peak_rss_mb": result.get("own_peak_rss_mb")},
    })
    if score_quality:
        row.update(metrics.quality(outputs, test_set.references))


def apply_reference(rows: list[dict], outputs: dict[str, list[str]], score_quality: bool) -> str | None:
    """BLEU/chrF deltas and exact-match agreement against the hf-torch-fp32 row of this run."""
    ref = next((r for r in rows if r["name"] == REFERENCE_CONFIG and not r.get("error")), None)
    if ref is None or REFERENCE_CONFIG not in outputs:
        return f"{REFERENCE_CONFIG} was not measured in this run: no deltas or agreement"
    if not score_quality:
        return None
    for row in rows:
        if row.get("error") or row["name"] not in outputs:
            continue
        row["agreement"] = metrics.agreement(outputs[row["name"]], outputs[REFERENCE_CONFIG])
        if row.get("bleu") is not None and ref.get("bleu") is not None:
            row["bleu_delta"] = row["bleu"] - ref["bleu"]
            row["chrf_delta"] = row["chrf"] - ref["chrf"]
    return None


# ---------------------------------------------------------------- the run

def run_bench(bundle_path: Path, test_set: TestSet, options: BenchOptions, *, synthetic: str | None = None,
              model_label: str | None = None) -> dict:
    from mtedge.bundle import Bundle

    bundle = Bundle.open(bundle_path)
    gpu = cuda_available()
    configs = resolve_configs(options.configs, gpu)
    threads = options.threads or default_threads()
    protocol = options.protocol
    if protocol.max_length is None:
        protocol.max_length = bundle_max_length(bundle)
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
    if synthetic:
        quality_note = (f"skipped: synthetic {synthetic} model with random weights and forced output lengths "
                        f"— its outputs are noise, so BLEU/chrF/agreement would measure nothing")
    elif references is None:
        quality_note = (f"no references in the test file: BLEU/chrF n/a; agreement = exact-match rate vs "
                        f"{REFERENCE_CONFIG} outputs (batch {protocol.batch_size}, beam {protocol.beam_size})")
    else:
        quality_note = (f"BLEU/chrF (sacrebleu) of the batch-{protocol.batch_size} beam-{protocol.beam_size} "
                        f"outputs vs references; deltas and exact-match agreement vs {REFERENCE_CONFIG}")
    counter = None if protocol.forced_length else metrics.TokenCounter(_target_spm(bundle))

    report = {
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
        "test_set": {"origin": test_set.origin, "n_sentences": len(sentences),
                     "has_references": references is not None},
        "quality_note": quality_note,
        "reference_config": REFERENCE_CONFIG,
        "interrupted": False,
        "results": [],
        "targets": [],
        "plots": [],
    }
    outputs: dict[str, list[str]] = {}
    rows = report["results"]

    def save(final: bool = False):
        note = apply_reference(rows, outputs, score_quality)
        # saved after every row: a note from before the reference row ran must not outlive it
        report.pop("reference_note", None)
        if note and score_quality:
            report["reference_note"] = note
        from mtedge.bench.targets import evaluate_targets

        report["targets"] = evaluate_targets(rows)
        ref = next((r for r in rows if r["name"] == REFERENCE_CONFIG), None)
        for row in rows:
            row["vs_reference"] = report_mod.reference_ratios(row, ref)
        if final:
            try:
                report["plots"] = plots.write_plots(report, out_dir)
            except Exception as exc:  # a plot must never cost the measured numbers
                report["plots_error"] = repr(exc)
            if not any(r.get("bleu_delta") is not None for r in rows):
                report["plots_note"] = f"no throughput-vs-BLEU-delta plot: {report['quality_note']}"
            (out_dir / "report.md").write_text(report_mod.render_markdown(report), encoding="utf-8")
        report_mod.write_json(report, out_dir)

    bar = _progress(len(configs), options.progress)
    try:
        for config in configs:
            bar.set_postfix_str(config.name)
            row = base_row(config, protocol)
            rows.append(row)
            try:
                extra, model_dir = prepare_spec(config, bundle, work_dir)
            except (BundleError, UnsupportedConfig) as exc:
                kind = "not in bundle" if isinstance(exc, BundleError) else "unsupported here"
                row["error"] = f"{kind}: {exc}"
                if isinstance(exc, BundleError):
                    try:
                        _check_ct2_support(config)
                    except UnsupportedConfig as why:   # the root cause, e.g. int16 on an AMD CPU
                        row["error"] += f" (and {why}, so the bench does not export it)"
                bar.update(1)
                save()
                continue
            row["disk_bytes"] = dir_size_bytes(model_dir)
            row["disk_mb"] = row["disk_bytes"] / 2**20
            row["model_dir"] = str(model_dir)
            limit = options.max_memory_mb.get(config.name, options.max_memory_mb.get("*"))
            spec = {"config": config.to_dict(), "bundle": str(bundle.path), "threads": threads,
                    "sources_path": str(sources_path), "protocol": protocol.to_dict(),
                    "max_memory_mb": limit, "result_path": str(run_dir / f"{config.name}.result.json"),
                    **extra}
            outcome = run_worker(spec, run_dir / "logs", options.timeout_s)
            row["peak_rss_mb"] = outcome.peak_rss_mb
            row["exit_code"] = outcome.exit_code
            if outcome.result is None:
                row["error"] = _failure_message(outcome, limit, options.timeout_s)
                row["stderr_tail"] = outcome.stderr_tail
            else:
                fill_row(row, outcome.result, outcome, test_set, counter, protocol, score_quality)
                outputs[config.name] = outcome.result["outputs"]
                (out_dir / "outputs").mkdir(exist_ok=True)
                (out_dir / "outputs" / f"{config.name}.txt").write_text(
                    "\n".join(outcome.result["outputs"]) + "\n", encoding="utf-8")
            bar.update(1)
            save()
    except KeyboardInterrupt:
        report["interrupted"] = True
        if rows and rows[-1]["error"] is None and rows[-1]["throughput_tok_s"] is None:
            rows[-1]["error"] = "interrupted (Ctrl-C) before this configuration finished"
        save(final=True)
        bar.close()
        raise
    bar.close()
    save(final=True)
    return report


def _target_spm(bundle) -> Path:
    tok_dir = bundle.tokenizer_dir()
    meta = json.loads((tok_dir / "mtedge_tokenizer.json").read_text(encoding="utf-8"))
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
