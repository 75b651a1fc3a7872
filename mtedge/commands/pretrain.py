"""``mtedge pretrain``: a sentencepiece vocabulary and a seq2seq model (Marian or M2M100) trained from scratch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from mtedge.errors import UserError


@click.command("pretrain")
@click.option("--train", "train_files", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Training data (TSV/JSONL/.po/.mo); repeat for several files.")
@click.option("--dev", "dev_files", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Dev data for evaluation and model selection; repeat for several files.")
@click.option("--exclude", "exclude_files", multiple=True, type=click.Path(dir_okay=False),
              help="Held-out data (e.g. another corpus' test set): training pairs whose source sentence occurs "
                   "in it are dropped; repeatable.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--arch", default="marian", show_default=True, type=click.Choice(["marian", "m2m100"]),
              help="marian: opus-mt's post-LayerNorm layout; m2m100: pre-LayerNorm, trains faster at high learning rates.")
@click.option("--vocab-size", default=8000, show_default=True, type=click.IntRange(min=64))
@click.option("--d-model", default=256, show_default=True, type=click.IntRange(min=8))
@click.option("--encoder-layers", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--decoder-layers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--heads", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--ffn-dim", default=1024, show_default=True, type=click.IntRange(min=8))
@click.option("--init-std", type=click.FloatRange(min=0, min_open=True),
              help="Std of the initial weights (default: transformers' 0.02; d_model**-0.5 is fairseq's embedding init).")
@click.option("--dropout", default=0.1, show_default=True, type=click.FloatRange(0, 0.9))
@click.option("--max-steps", default=10000, show_default=True, type=click.IntRange(min=1))
@click.option("--learning-rate", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--warmup-steps", default=800, show_default=True, type=click.IntRange(min=0))
@click.option("--decay", default="inverse_sqrt", show_default=True,
              type=click.Choice(["inverse_sqrt", "linear", "constant"]),
              help="Learning rate after warmup: inverse-sqrt, linear to 0 at --max-steps (best final model for a "
                   "known budget), or constant.")
@click.option("--batch-tokens", default=4096, show_default=True, type=click.IntRange(min=16),
              help="Padded source+target tokens per micro-batch.")
@click.option("--grad-accum", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--eval-every", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--eval-sentences", default=400, show_default=True, type=click.IntRange(min=1))
@click.option("--patience", default=0, show_default=True, type=click.IntRange(min=0),
              help="Stop after this many evaluations without a better dev BLEU (0: never).")
@click.option("--max-length", default=128, show_default=True, type=click.IntRange(min=4),
              help="Source/target tokens per training pair (longer ones are truncated).")
@click.option("--max-hours", type=click.FloatRange(min=0, min_open=True),
              help="Stop (resumably) after this much training time.")
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "bf16", "auto"]),
              help="bf16 autocast for the forward/backward pass (weights stay fp32); auto: bf16 where the "
                   "CPU has AMX/AVX512-BF16 or the GPU supports it.")
@click.option("--keep-snapshots", default=0, show_default=True, type=click.IntRange(min=0),
              help="Keep the weights of the last N evaluations in OUTPUT/snapshots (for `mtedge average`).")
@click.option("--label-smoothing", default=0.1, show_default=True, type=click.FloatRange(0, 0.5))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch.")
@click.option("--source-lang", default="en", show_default=True)
@click.option("--target-lang", default="de", show_default=True)
@click.option("--init-from", type=click.Path(file_okay=False, path_type=Path),
              help="Start from this model's weights and vocabulary (same shape; e.g. the published checkpoint "
                   "of an earlier run whose run directory is gone) instead of from scratch.")
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT from its last checkpoint.")
@click.option("--force", is_flag=True, help="Delete an existing OUTPUT and start over.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(train_files, dev_files, exclude_files, output, arch, vocab_size, d_model, encoder_layers, decoder_layers, heads, ffn_dim,
            init_std, dropout, max_steps, learning_rate, warmup_steps, decay, batch_tokens, grad_accum, eval_every, eval_sentences,
            patience, max_length, max_hours, precision, keep_snapshots, label_smoothing, seed, device, threads, source_lang, target_lang, init_from, resume, force, quiet):
    """Train a seq2seq model and its sentencepiece vocabulary from scratch.

    The best checkpoint (by dev BLEU) is written to OUTPUT/best, a plain Hugging Face model directory.
    """
    from mtedge.train.data import drop_held_out_sources, load_files
    from mtedge.train.loop import CHECKPOINT_DIR, LoopConfig
    from mtedge.train.pretrain import ModelShape, pretrain

    out = Path(output)
    if d_model % heads:
        raise UserError(f"--d-model {d_model} must be divisible by --heads {heads}")
    if out.exists() and any(out.iterdir()):
        if force:
            shutil.rmtree(out)
        elif not (resume and (out / CHECKPOINT_DIR).is_dir()):
            raise UserError(f"{out} already exists; pass --resume to continue its run or --force to start over")
    elif resume:
        raise UserError(f"--resume: {out} holds no run to resume")
    train_pairs, train_meta = load_files(train_files, "training")
    dev_pairs, dev_meta = load_files(dev_files, "dev")
    data_meta = {"train": train_meta, "dev": dev_meta}
    if exclude_files:
        train_pairs, data_meta["excluded"] = drop_held_out_sources(train_pairs, exclude_files)
    size = ModelShape(arch=arch, vocab_size=vocab_size, d_model=d_model, encoder_layers=encoder_layers,
                      decoder_layers=decoder_layers, attention_heads=heads, ffn_dim=ffn_dim,
                      max_positions=max(256, max_length + 2), dropout=dropout, init_std=init_std)
    loop = LoopConfig(max_steps=max_steps, learning_rate=learning_rate, warmup_steps=warmup_steps, decay=decay,
                      batch_tokens=batch_tokens, grad_accum=grad_accum, eval_every=eval_every,
                      eval_max_sentences=eval_sentences, patience=patience, max_source_length=max_length,
                      max_target_length=max_length, seed=seed, device=device, threads=threads,
                      max_wall_seconds=max_hours * 3600 if max_hours else None, precision=precision,
                      keep_snapshots=keep_snapshots, label_smoothing=label_smoothing)
    result = pretrain(train_pairs, dev_pairs, out, size, loop, source_lang=source_lang, target_lang=target_lang,
                      data_meta=data_meta, init_from=init_from, progress=not quiet,
                      log=lambda m: click.echo(m, err=True))
    summary = {"best_dir": str(result.best_dir), "best_step": result.best_step, "best_dev_bleu": result.best_bleu,
               "best_dev_chrf": result.best_chrf, "signatures": result.signatures, "steps": result.steps,
               "stopped": result.stopped, "train_seconds": result.wall_seconds}
    (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    click.echo(f"best dev BLEU {result.best_bleu} (chrF {result.best_chrf}) at step {result.best_step}; "
               f"{result.steps} steps, stopped: {result.stopped}; model: {result.best_dir}", err=True)
    click.echo(str(result.best_dir))
