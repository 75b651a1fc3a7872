"""The LoRA demonstration: adapt the reference model to web-application UI text (`webui`), merge, and
measure what it gained there and what it kept on the general test sets (`bible`, `sysmsg`).

    .venv/bin/python -m benchmarks.lora_webui.run            # the recorded run -> benchmarks/results/lora_webui/
    .venv/bin/python -m benchmarks.lora_webui.run --quick    # the short version `make demo` runs

Both models are scored the same way (PyTorch generate, beam 4 — greedy in --quick — on the test splits), in
this process, on this machine; the JSON keeps every score with its sacrebleu signature.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "benchmarks" / "corpora" / "data"
REFERENCE_MODEL = ROOT / "benchmarks" / "reference_model" / "model"
TEST_SETS = ("webui", "bible", "sysmsg")

FULL = {"max_steps": 300, "eval_every": 100, "eval_sentences": 500, "test_sentences": None, "beams": 4,
        "out": ROOT / "benchmarks" / "results" / "lora_webui", "run": ROOT / "build" / "lora_webui"}
QUICK = {"max_steps": 120, "eval_every": 40, "eval_sentences": 200, "test_sentences": 200, "beams": 1,
         "out": ROOT / "benchmarks" / "results" / "tmp" / "demo" / "lora", "run": ROOT / "build" / "demo" / "lora"}


def train(model: Path, settings: dict, threads: int) -> Path:
    cmd = [sys.executable, "-m", "mtedge.cli", "train", str(model),
           "--train", str(CORPORA / "webui" / "train.tsv"), "--dev", str(CORPORA / "webui" / "dev.tsv"),
           "-o", str(settings["run"]), "--force", "--method", "lora", "--lora-r", "16", "--lora-alpha", "32",
           "--max-steps", str(settings["max_steps"]), "--warmup-steps", "30", "--learning-rate", "1e-3",
           "--batch-tokens", "2048", "--eval-every", str(settings["eval_every"]),
           "--eval-sentences", str(settings["eval_sentences"]), "--patience", "0", "--seed", "0",
           "--threads", str(threads), "--merge"]
    print("$ " + " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)
    return settings["run"] / "merged"


def score(model_dir: Path, settings: dict, threads: int) -> dict:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from mtedge.data import read_pairs
    from mtedge.train.loop import LoopConfig, evaluate

    torch.set_num_threads(threads)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    n = settings["test_sentences"] or 10**9
    config = LoopConfig(eval_max_sentences=n, eval_beams=settings["beams"], max_source_length=256,
                        max_target_length=256)
    out = {}
    for name in TEST_SETS:
        pairs = [(p.src, p.tgt) for p in read_pairs(CORPORA / name / "test.tsv")]
        result = evaluate(model, tok, pairs, config, torch.device("cpu"))
        out[name] = {k: result[k] for k in ("bleu", "chrf", "n", "signature")}
    return out


def report(before: dict, after: dict, settings: dict, run_dir: Path, seconds: float) -> str:
    provenance = json.loads((run_dir / "merged" / "provenance.json").read_text(encoding="utf-8"))
    best = provenance.get("best_dev")
    lines = ["| test set | sentences | BLEU before | BLEU after | Δ BLEU | chrF before | chrF after | Δ chrF |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in TEST_SETS:
        b, a = before[name], after[name]
        lines.append(f"| `{name}` | {a['n']} | {b['bleu']:.2f} | {a['bleu']:.2f} | {a['bleu'] - b['bleu']:+.2f} | "
                     f"{b['chrf']:.2f} | {a['chrf']:.2f} | {a['chrf'] - b['chrf']:+.2f} |")
    decoding = "beam 4" if settings["beams"] == 4 else "greedy"
    sig = after["webui"]["signature"]
    return "\n".join([
        f"LoRA (r=16, alpha=32, attention projections) on `webui` train, {settings['max_steps']} steps, merged; "
        f"PyTorch {decoding}; {seconds / 60:.1f} min for training + merge.",
        f"Best dev BLEU {best['bleu']} at step {best['step']} ({best['sentences']} webui dev sentences, greedy)."
        if best else "", "",
        *lines, "", f"BLEU `{sig['bleu']}`; chrF `{sig['chrf']}`"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="The short version (a few minutes).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path, default=REFERENCE_MODEL, help="The base model (default: the reference).")
    parser.add_argument("--max-steps", type=int, help="Override the number of LoRA steps.")
    args = parser.parse_args()
    settings = dict(QUICK if args.quick else FULL)
    if args.max_steps:
        settings.update(max_steps=args.max_steps, eval_every=min(settings["eval_every"], args.max_steps))
    started = time.perf_counter()
    merged = train(args.model, settings, args.threads)
    seconds = time.perf_counter() - started
    print("scoring the reference model and the merged LoRA model on the test sets ...", flush=True)
    before, after = score(args.model, settings, args.threads), score(merged, settings, args.threads)
    text = report(before, after, settings, settings["run"], seconds)
    out = settings["out"]
    out.mkdir(parents=True, exist_ok=True)
    record = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()},
              "before": before, "after": after, "train_and_merge_seconds": round(seconds, 1),
              "merged_model": str(merged)}
    (out / "lora_webui.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (out / "lora_webui.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
