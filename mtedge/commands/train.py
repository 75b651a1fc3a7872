"""``mtedge train``: fine-tune a Hugging Face seq2seq translation model (LoRA, IA3 or full) on parallel data."""

from __future__ import annotations

import click

from mtedge.errors import UserError


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UserError("--target-modules is empty; name at least one module")
    return items


@click.command("train")
@click.argument("model")
@click.option("--train", "train_files", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Training data (TSV/JSONL/.po/.mo); repeat for several files.")
@click.option("--dev", "dev_files", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Dev data for evaluation, model selection and the merge check; repeat for several files.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Run directory: train_log.jsonl, checkpoint/ (last), best/ (best dev BLEU), merged/.")
@click.option("--method", default="lora", show_default=True, type=click.Choice(["lora", "adalora", "ia3", "full"]),
              help="lora, adalora (LoRA with an importance-based rank budget; --lora-r is its average target "
                   "rank) and ia3 train a small PEFT adapter (mergeable); full trains every weight (see --freeze).")
@click.option("--target-modules", help="Comma-separated modules to adapt (default per family: attention "
                                       "projections for lora; keys, values and FFN output for ia3).")
@click.option("--freeze", help="With --method full: parts to keep fixed, comma-separated: encoder (decoder-only "
                                 "fine-tuning), decoder, embeddings.")
@click.option("--lora-r", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--lora-alpha", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--lora-dropout", default=0.05, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--tokenizer", help="Tokenizer directory (default: the model's own).")
@click.option("--source-lang", help="Source language code (M2M100/NLLB/mBART).")
@click.option("--target-lang", help="Target language code (M2M100/NLLB/mBART).")
@click.option("--max-steps", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Optimizer steps.")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate [default: lora 5e-4, ia3 3e-3, full 5e-5].")
@click.option("--warmup-steps", default=100, show_default=True, type=click.IntRange(min=0))
@click.option("--decay", default="linear", show_default=True,
              type=click.Choice(["linear", "inverse_sqrt", "constant"]), help="Learning rate after warmup.")
@click.option("--batch-tokens", default=4096, show_default=True, type=click.IntRange(min=16),
              help="Padded source+target tokens per micro-batch.")
@click.option("--grad-accum", default=1, show_default=True, type=click.IntRange(min=1),
              help="Micro-batches per optimizer step.")
@click.option("--eval-every", default=200, show_default=True, type=click.IntRange(min=1),
              help="Optimizer steps between dev evaluations.")
@click.option("--eval-sentences", default=500, show_default=True, type=click.IntRange(min=1),
              help="Dev sentences translated per evaluation.")
@click.option("--eval-beams", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--patience", default=5, show_default=True, type=click.IntRange(min=0),
              help="Stop after this many evaluations without a better dev BLEU (0: never).")
@click.option("--max-length", default=128, show_default=True, type=click.IntRange(min=4),
              help="Source/target tokens per training pair (longer ones are truncated).")
@click.option("--label-smoothing", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch.")
@click.option("--merge", "merge", is_flag=True,
              help="After training, merge best/ into OUTPUT/merged (a plain Hugging Face checkpoint).")
@click.option("--resume", is_flag=True, help="Carry on the run in OUTPUT from its last checkpoint.")
@click.option("--force", is_flag=True, help="Delete an existing OUTPUT and start over.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(model, train_files, dev_files, output, method, target_modules, freeze, lora_r, lora_alpha, lora_dropout,
            tokenizer, source_lang, target_lang, max_steps, learning_rate, warmup_steps, decay, batch_tokens,
            grad_accum, eval_every, eval_sentences, eval_beams, patience, max_length, label_smoothing, seed,
            device, threads, merge, resume, force, quiet):
    """Fine-tune MODEL (a local checkpoint directory or a hub name) on --train, selecting on --dev.

    \b
    mtedge train Helsinki-NLP/opus-mt-en-de --train domain.tsv --dev dev.tsv -o runs/domain --merge
    mtedge train runs/base --method ia3 --train a.tsv --train b.po --dev dev.tsv -o runs/ia3
    mtedge train ... -o runs/domain --resume      # after Ctrl-C
    """
    from pathlib import Path

    from mtedge.train.finetune import DEFAULT_LEARNING_RATES, FinetuneRequest, finetune
    from mtedge.train.loop import LoopConfig
    from mtedge.train.methods import MethodSettings

    settings = MethodSettings(method=method, target_modules=_csv(target_modules), lora_r=lora_r,
                              lora_alpha=lora_alpha, lora_dropout=lora_dropout, freeze=_csv(freeze) or [])
    loop = LoopConfig(max_steps=max_steps, learning_rate=learning_rate or DEFAULT_LEARNING_RATES[method],
                      warmup_steps=min(warmup_steps, max_steps), decay=decay, batch_tokens=batch_tokens,
                      grad_accum=grad_accum, eval_every=eval_every, eval_max_sentences=eval_sentences,
                      eval_beams=eval_beams, patience=patience, max_source_length=max_length,
                      max_target_length=max_length, label_smoothing=label_smoothing, seed=seed, device=device,
                      threads=threads)
    request = FinetuneRequest(model=model, train=[Path(p) for p in train_files], dev=[Path(p) for p in dev_files],
                              out=Path(output), method=settings, loop=loop, tokenizer=tokenizer,
                              source_lang=source_lang, target_lang=target_lang, force=force, resume=resume,
                              merge=merge, progress=not quiet)
    try:
        result = finetune(request)
    except KeyboardInterrupt as exc:
        # The loop left a resumable checkpoint; say how to use it (the CLI prints "Interrupted." after).
        if str(exc):
            click.echo(f"{exc}; carry on with the same command plus --resume", err=True)
        raise
    run = result.loop
    click.echo(f"[train] {run.steps} steps ({run.stopped}); best dev BLEU {run.best_bleu} chrF {run.best_chrf} "
               f"at step {run.best_step}", err=True)
    if run.signatures:
        click.echo(f"[train] {run.signatures.get('bleu')} | {run.signatures.get('chrf')}", err=True)
    if result.merged is not None:
        click.echo(f"[train] merged; logits max abs diff vs adapter {result.merged.max_abs_diff:.2e} "
                   f"on {result.merged.sentences} dev sentences", err=True)
        click.echo(str(result.merged.out_dir))
    else:
        click.echo(str(run.best_dir or result.out_dir))
