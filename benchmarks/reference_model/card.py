"""Publish the reference model: average the training run's last snapshots (or take its best checkpoint),
copy the result into ``model/``, score it on the test splits (PyTorch, beam 4), draw the learning curve and
write the model card ``README.md``.

    .venv/bin/python -m benchmarks.reference_model.card [--run benchmarks/reference_model/run] [--weights averaged]

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
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json")
SKIPPED_FILES = ("averaged_from.json", "trainer_state.pt")  # provenance the card carries; optimizer state
TEST_SETS = ("bible", "sysmsg", "webui")
MAX_MB = 60  # the one large file the repository accepts
DECAY_WORDS = {"inverse_sqrt": "inverse-sqrt decay", "linear": "linear decay to 0 at step {max_steps}",
               "constant": "constant"}


def weights_dir(run: Path, weights: str, average: int) -> Path:
    """The model directory to publish: run/best, run/checkpoint, or the mean of the last snapshots."""
    if weights != "averaged":
        return run / weights
    from mtedge.train.averaging import average_snapshots, list_snapshots

    snapshots = list_snapshots(run)[-average:]
    print(f"averaging {', '.join(p.name for p in snapshots)}", flush=True)
    return average_snapshots(snapshots, run / "averaged", force=True)


def publish(source: Path, dest: Path) -> None:
    missing = [n for n in REQUIRED_FILES if not (source / n).is_file()]
    if missing:
        raise SystemExit(f"{source} lacks {', '.join(missing)}; has the training run evaluated yet?")
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name not in SKIPPED_FILES:
            shutil.copy2(path, staging / path.name)
    size_mb = sum(p.stat().st_size for p in staging.iterdir()) / 2**20
    if size_mb > MAX_MB:
        raise SystemExit(f"the checkpoint is {size_mb:.1f} MB, over the {MAX_MB} MB we accept in git")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def score(model_dir: Path, threads: int) -> dict:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from mtedge.data import read_pairs
    from mtedge.train.loop import LoopConfig, evaluate

    torch.set_num_threads(threads)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
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


def translate_samples(model_dir: Path, threads: int) -> list[dict]:
    """The five fixed sample sentences (benchmarks/reference_model/samples.py), PyTorch beam 4."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from benchmarks.reference_model.samples import sample_pairs

    torch.set_num_threads(threads)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    picks = sample_pairs()
    with torch.inference_mode():
        enc = tok([src for _, src, _ in picks], return_tensors="pt", padding=True)
        out = tok.batch_decode(model.generate(**enc, num_beams=4, max_new_tokens=128), skip_special_tokens=True)
    return [{"corpus": c, "source": src, "output": hyp, "reference": ref} for (c, src, ref), hyp in zip(picks, out)]


def checkpoint_progress(run: Path) -> dict:
    """Steps and training seconds of the run's last checkpoint (may be later than its last evaluation)."""
    import torch

    from mtedge.train.loop import CHECKPOINT_DIR, STATE_NAME

    path = run / CHECKPOINT_DIR / STATE_NAME
    if not path.is_file():
        return {}
    state = torch.load(path, map_location="cpu", weights_only=False)["state"]
    return {"step": state["step"], "trained_seconds": state["trained_seconds"]}


def earlier_training(run: Path, continued_from: Path | None = None) -> dict | None:
    """What the model this run was initialized from (``mtedge pretrain --init-from``) had behind it: its card's
    steps and hours and its learning curve, read before ``publish`` replaces it (it is usually ``model/``).
    ``continued_from``: a directory with that model's card and log, for a run resumed after it published
    (``model/`` then holds this run's own earlier result, whose steps this run's log already counts)."""
    init_from = json.loads((run / "pretrain_config.json").read_text()).get("init_from")
    if not (init_from or continued_from):   # a resumed run records no init_from: name it with continued_from
        return None
    source = Path(continued_from or init_from)
    card, log = source / "mtedge_card.json", source / "train_log.jsonl"
    if not (card.is_file() and log.is_file()):
        raise SystemExit(f"{run} continues {init_from}, which has no mtedge_card.json / train_log.jsonl to "
                         f"count its earlier training from")
    record = json.loads(card.read_text())
    return {"from": init_from or str(source), "steps": record["steps_trained"], "seconds": record["train_seconds"],
            "published_step": record["published_step"],
            "log": [json.loads(line) for line in log.read_text().splitlines() if line.strip()]}


def joined_log(log: list[dict], earlier: dict | None) -> list[dict]:
    """This run's evaluations after the earlier training's, steps and hours counted from the very start (this
    run's step-0 evaluation is the earlier model's last one again, so it is left out)."""
    if earlier is None:
        return log
    shifted = [{**r, "step": r["step"] + earlier["steps"], "trained_seconds": r["trained_seconds"] + earlier["seconds"],
                "continued_from_step": earlier["steps"]} for r in log if r["step"] > 0]
    return earlier["log"] + shifted


def write_card(run: Path, dest: Path, scores: dict, samples: list[dict], weights: str, average: int,
               earlier: dict | None = None) -> None:
    from benchmarks.reference_model.curve import plot_learning_curve
    from mtedge.bench.machine import describe_machine

    pretrain_config = json.loads((run / "pretrain_config.json").read_text())
    run_log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    log = joined_log(run_log, earlier)
    progress = checkpoint_progress(run)            # a run stopped by --max-hours went on after its last eval
    if earlier and progress:
        progress = {"step": progress["step"] + earlier["steps"],
                    "trained_seconds": progress["trained_seconds"] + earlier["seconds"]}
    last = {**log[-1], **progress}
    # run/best holds this run's best: an evaluation of the model it continued is not among its candidates
    best = max(log[len(earlier["log"]):] if earlier else log, key=lambda r: r["dev_bleu"])
    published = {"best": best, "checkpoint": last, "averaged": log[-1]}[weights]
    machine = describe_machine()
    size, loop = pretrain_config["size"], pretrain_config["loop"]
    hashes = corpus_hashes()
    weights_mb = (dest / "model.safetensors").stat().st_size / 2**20
    total_mb = sum(p.stat().st_size for p in dest.iterdir()) / 2**20
    hours = last["trained_seconds"] / 3600
    steps_per_s = last["step"] / last["trained_seconds"] if last["trained_seconds"] else 0.0
    tokens_per_s = steps_per_s * loop["batch_tokens"] * loop["grad_accum"]
    what = {"best": f"the best dev BLEU checkpoint (step {best['step']})",
            "checkpoint": f"the last step ({last['step']})",
            "averaged": f"the mean of the last {average} snapshots (every {loop['eval_every']} steps, up to step "
                        f"{log[-1]['step']})"}[weights]
    record = {"scores_beam4": scores, "samples_beam4": samples, "weights": weights, "averaged_snapshots":
              average if weights == "averaged" else None, "published_step": published["step"],
              "best_dev_bleu": best["dev_bleu"], "best_dev_step": best["step"], "dev_signature": best["signature"],
              "steps_trained": last["step"], "train_seconds": last["trained_seconds"],
              "steps_per_second": round(steps_per_s, 3), "padded_tokens_per_second": round(tokens_per_s),
              "size": size, "loop": loop, "parameters": pretrain_config["parameters"],
              "data": pretrain_config.get("data", {}), "corpora": hashes, "machine": machine,
              "total_mb": round(total_mb, 2),
              "continued_from": None if earlier is None else {
                  "model": earlier["from"], "steps": earlier["steps"], "train_seconds": earlier["seconds"]}}
    (dest / "mtedge_card.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (dest / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log), encoding="utf-8")
    plot_learning_curve(dest / "train_log.jsonl", dest / "learning_curve.png",
                        title=f"reference model ({size['arch']} d{size['d_model']} "
                              f"{size['encoder_layers']}+{size['decoder_layers']}): learning curve")

    def row(name):
        s = scores[name]
        return f"| `{name}` test | {s['n']} | {s['bleu']:.2f} | {s['chrf']:.2f} |"

    bleu_sig, chrf_sig = scores["bible"]["signature"]["bleu"], scores["bible"]["signature"]["chrf"]
    data_lines = "\n".join(f"| `{n}` | " + " | ".join(f"{hashes[n][s]['pairs']} (`{hashes[n][s]['sha256'][:12]}`)"
                                                      for s in ("train", "dev", "test")) + " |"
                           for n in TEST_SETS)
    excluded = pretrain_config.get("data", {}).get("excluded", {})
    sample_lines = "\n".join(f"| {x['corpus']} | {x['source']} | {x['output']} | {x['reference']} |"
                              for x in samples)
    arch = {"m2m100": "M2M100 (pre-LayerNorm; `facebook/m2m100` layout: `sentencepiece.bpe.model`, fairseq "
                      "`vocab.json`, `__en__`/`__de__` language tokens)",
            "marian": "MarianMT (post-LayerNorm; opus-mt layout)"}[size.get("arch", "marian")]
    history = (HERE / "history.md").read_text(encoding="utf-8") if (HERE / "history.md").is_file() else ""
    card = f"""# mtedge reference model: en→de, trained from scratch

The embedded default model of mtedge (`benchmarks/reference_model/model/`, {total_mb:.1f} MB). It stands in for a
pretrained translation checkpoint, which cannot be downloaded here. Small, trained on CPU hours: a test bed
that translates, not a production translator.

## How it was built

```
make corpora                                  # benchmarks/corpora: bible + sysmsg (+ webui, held out)
benchmarks/reference_model/train.sh           # mtedge pretrain ... (resumes if stopped)
.venv/bin/python -m benchmarks.reference_model.card   # averages the last snapshots, scores, writes this card
```

| | |
|---|---|
| architecture | {arch}, d_model {size['d_model']}, {size['encoder_layers']} encoder + {size['decoder_layers']} decoder layers, {size['attention_heads']} heads, FFN {size['ffn_dim']}, tied embeddings |
| parameters | {pretrain_config['parameters'] / 1e6:.2f} M ({weights_mb:.1f} MB fp32 safetensors) |
| vocabulary | shared sentencepiece unigram, {size['vocab_size']} pieces (en+de), placeholders `%s %d {{ }}` kept whole |
| training data | `bible` train + `sysmsg` train (below); {excluded.get('dropped_training_pairs', 0)} training pairs whose source is in `webui` dev/test were dropped |
| schedule | {_continued(earlier, loop)}AdamW (0.9, 0.98), peak lr {loop['learning_rate']} after {loop['warmup_steps']} warmup steps, then {DECAY_WORDS[loop.get('decay', 'inverse_sqrt')].format(max_steps=loop['max_steps'])}; {loop['batch_tokens']} padded tokens per batch x {loop['grad_accum']}; label smoothing {loop['label_smoothing']}, dropout {size['dropout']}, clip {loop['clip_norm']}, seed {loop['seed']} |
| precision | {loop.get('precision', 'fp32')} (bf16 autocast where the CPU has AMX/AVX512-BF16; weights and optimizer fp32) |
| training | {last['step']} optimizer steps in {hours:.2f} h ({steps_per_s:.2f} steps/s, ~{tokens_per_s:,.0f} padded tokens/s; evaluations excluded) |
| published weights | {what}; best greedy dev BLEU during the run {best['dev_bleu']} (chrF {best['dev_chrf']}) at step {best['step']}, on the first {best['dev_n']} of bible+sysmsg dev interleaved |
| machine | {machine['cpu_model']}, {machine['cpu_count']} cores, {loop.get('threads') or 'all'} torch threads, torch {machine['packages'].get('torch')} |

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

`bible` is World English Bible → Elberfelder 1905 (chapters held out of training in every edition); `sysmsg`
is held-out messages of the Debian catalogs; `webui` (Weblate/Django) is out of domain: it is the LoRA
demonstration's "before". BLEU signature `{bleu_sig}`; chrF signature `{chrf_sig}`.

## Five sample translations (PyTorch, beam 4)

| corpus | source | reference model | reference translation |
|---|---|---|---|
{sample_lines}

## Learning curve

![learning curve](learning_curve.png)

Every dev evaluation of the run: `train_log.jsonl` (copied here); raw numbers: `mtedge_card.json`.

{history}"""
    (dest / "README.md").write_text(card, encoding="utf-8")


def _continued(earlier: dict | None, loop: dict) -> str:
    if earlier is None:
        return ""
    return (f"steps 1–{earlier['steps']}: the model this one continues (history below); steps "
            f"{earlier['steps'] + 1}–{earlier['steps'] + loop['max_steps']}, one run initialized from it "
            f"(`--init-from`): ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=HERE / "run")
    parser.add_argument("--dest", type=Path, default=HERE / "model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", choices=("averaged", "best", "checkpoint"), default="averaged",
                        help="averaged: the mean of the last --average snapshots; best: highest dev BLEU; "
                             "checkpoint: the last step")
    parser.add_argument("--average", type=int, default=5, help="How many snapshots to average.")
    parser.add_argument("--continued-from", type=Path,
                        help="The card (mtedge_card.json, train_log.jsonl) of the model the run was initialized "
                             "from, when its --init-from directory now holds a version this run published "
                             "before it was resumed (default: the run's init_from)")
    args = parser.parse_args()
    earlier = earlier_training(args.run, args.continued_from)
    publish(weights_dir(args.run, args.weights, args.average), args.dest)
    scores = score(args.dest, args.threads)
    samples = translate_samples(args.dest, args.threads)
    write_card(args.run, args.dest, scores, samples, args.weights, args.average, earlier)
    print(f"wrote {args.dest}")


if __name__ == "__main__":
    main()
