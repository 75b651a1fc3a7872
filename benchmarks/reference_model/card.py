"""Publish the reference model: copy the best checkpoint of the training run into ``model/``, score it on
the test splits (PyTorch, beam 4) and write the model card ``README.md``.

    .venv/bin/python -m benchmarks.reference_model.card [--run benchmarks/reference_model/run]

Every figure in the card is measured here, by this script, on this machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORPORA = ROOT / "benchmarks" / "corpora" / "data"
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "source.spm", "target.spm",
               "vocab.json", "tokenizer_config.json", "special_tokens_map.json")
TEST_SETS = ("bible", "sysmsg", "webui")
MAX_MB = 40


def publish(run: Path, dest: Path, weights: str) -> None:
    best = run / weights
    missing = [n for n in MODEL_FILES if not (best / n).is_file()]
    if missing:
        raise SystemExit(f"{best} lacks {', '.join(missing)}; has the training run evaluated yet?")
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copy2(best / name, staging / name)
    size_mb = sum(p.stat().st_size for p in staging.iterdir()) / 2**20
    if size_mb > MAX_MB:
        raise SystemExit(f"the checkpoint is {size_mb:.1f} MB, over the {MAX_MB} MB we accept in git")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def score(model_dir: Path, threads: int) -> dict:
    import torch
    from transformers import MarianMTModel, MarianTokenizer

    from mtedge.data import read_pairs
    from mtedge.train.loop import LoopConfig, evaluate

    torch.set_num_threads(threads)
    model = MarianMTModel.from_pretrained(model_dir).eval()
    tok = MarianTokenizer.from_pretrained(model_dir)
    config = LoopConfig(eval_max_sentences=10**9, eval_beams=4, eval_batch_size=32, max_source_length=256,
                        max_target_length=256)
    out = {}
    for name in TEST_SETS:
        pairs = [(p.src, p.tgt) for p in read_pairs(CORPORA / name / "test.tsv")]
        started = time.perf_counter()
        result = evaluate(model, tok, pairs, config, torch.device("cpu"))
        out[name] = {"bleu": result["bleu"], "chrf": result["chrf"], "n": result["n"],
                     "signature": result["signature"], "seconds": round(time.perf_counter() - started, 1)}
        print(f"{name}: BLEU {result['bleu']} chrF {result['chrf']} (n={result['n']})", flush=True)
    return out


def corpus_hashes() -> dict:
    out = {}
    for name in TEST_SETS:
        manifest = json.loads((CORPORA / name / "manifest.json").read_text(encoding="utf-8"))
        out[name] = {split: {"pairs": rec["pairs"], "sha256": rec["sha256"]}
                     for split, rec in manifest["splits"].items()}
    return out


def write_card(run: Path, dest: Path, scores: dict, weights: str) -> None:
    from mtedge.bench.machine import describe_machine

    pretrain_config = json.loads((run / "pretrain_config.json").read_text())
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    best = max(log, key=lambda r: r["dev_bleu"]) if weights == "best" else log[-1]
    machine = describe_machine()
    size = pretrain_config["size"]
    loop = pretrain_config["loop"]
    hashes = corpus_hashes()
    weights_mb = (dest / "model.safetensors").stat().st_size / 2**20
    total_mb = sum(p.stat().st_size for p in dest.iterdir()) / 2**20
    record = {"scores_beam4": scores, "weights": weights, "published_step": best["step"], "best_dev_bleu": best["dev_bleu"],
              "dev_signature": best["signature"], "steps_trained": log[-1]["step"],
              "train_seconds": log[-1]["trained_seconds"], "size": size, "loop": loop,
              "parameters": pretrain_config["parameters"], "corpora": hashes, "machine": machine,
              "total_mb": round(total_mb, 2)}
    (dest / "mtedge_card.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    def row(name):
        s = scores[name]
        return f"| `{name}` test | {s['n']} | {s['bleu']:.2f} | {s['chrf']:.2f} |"

    bleu_sig, chrf_sig = scores["bible"]["signature"]["bleu"], scores["bible"]["signature"]["chrf"]
    data_lines = "\n".join(f"| `{n}` | " + " | ".join(f"{hashes[n][s]['pairs']} (`{hashes[n][s]['sha256'][:12]}`)"
                                                      for s in ("train", "dev", "test")) + " |"
                           for n in TEST_SETS)
    card = f"""# mtedge reference model: en→de MarianMT trained from scratch

The embedded default model of mtedge (`benchmarks/reference_model/model/`, {total_mb:.1f} MB). It stands in for
`Helsinki-NLP/opus-mt-en-de`, which cannot be downloaded here: same architecture family, same tokenizer files
and conventions (`source.spm`, `target.spm`, `vocab.json`, `<pad>` = decoder start, zero `<pad>` row), much
smaller and trained on far less data. It is a test bed for the pipeline, not a production translator.

## How it was built

```
make corpora                                  # benchmarks/corpora: bible + sysmsg (+ webui for LoRA)
benchmarks/reference_model/train.sh           # mtedge pretrain ... (resumes if stopped)
.venv/bin/python -m benchmarks.reference_model.card   # copies run/best here, scores it, writes this card
```

| | |
|---|---|
| architecture | MarianMT, d_model {size['d_model']}, {size['encoder_layers']} encoder + {size['decoder_layers']} decoder layers, {size['attention_heads']} heads, FFN {size['ffn_dim']}, tied embeddings |
| parameters | {pretrain_config['parameters'] / 1e6:.2f} M ({weights_mb:.1f} MB fp32 safetensors) |
| vocabulary | shared sentencepiece unigram, {size['vocab_size']} pieces (en+de), placeholders `%s %d {{ }}` kept whole |
| training data | `bible` train + `sysmsg` train (below) |
| schedule | AdamW, lr {loop['learning_rate']}, {loop['warmup_steps']} warmup steps then inverse-sqrt decay, {loop['batch_tokens']} padded tokens per batch, label smoothing {loop['label_smoothing']}, dropout {size['dropout']}, seed {loop['seed']} |
| steps | {log[-1]['step']} optimizer steps, {log[-1]['trained_seconds'] / 60:.0f} min of training (evaluations included) |
| published weights | {"best dev BLEU" if weights == "best" else "the last step (dev BLEU this low does not rank checkpoints; dev chrF and training loss do)"}: step {best['step']}, dev BLEU {best['dev_bleu']}, chrF {best['dev_chrf']} (greedy, first {best['dev_n']} of bible+sysmsg dev interleaved) |
| machine | {machine['cpu_model']}, {machine['cpu_count']} cores (2 torch threads; the machine was shared with other jobs), torch {machine['packages'].get('torch')} |

Training data (pairs and sha256 prefix of each split, from `benchmarks/corpora/data/*/manifest.json`):

| corpus | train | dev | test |
|---|---|---|---|
{data_lines}

## Test scores (PyTorch `generate`, beam 4, max 256 new tokens)

| test set | sentences | BLEU | chrF |
|---|---:|---:|---:|
{row('bible')}
{row('sysmsg')}
{row('webui')}

`webui` is out of domain (web-application interface text): it is the LoRA demonstration's "before".
BLEU signature `{bleu_sig}`; chrF signature `{chrf_sig}`.
Raw numbers: `mtedge_card.json`; every dev evaluation of the run: `train_log.jsonl` (copied here).
"""
    (dest / "README.md").write_text(card, encoding="utf-8")
    shutil.copy2(run / "train_log.jsonl", dest / "train_log.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=HERE / "run")
    parser.add_argument("--dest", type=Path, default=HERE / "model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", choices=("best", "checkpoint"), default="best",
                        help="best: highest dev BLEU; checkpoint: the last step (when dev BLEU is too low to rank by)")
    args = parser.parse_args()
    publish(args.run, args.dest, args.weights)
    scores = score(args.dest, args.threads)
    write_card(args.run, args.dest, scores, args.weights)
    print(f"wrote {args.dest}")


if __name__ == "__main__":
    main()
