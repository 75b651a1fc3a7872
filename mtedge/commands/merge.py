"""``mtedge merge``: fold a fine-tuned adapter into a plain Hugging Face checkpoint, verified."""

from __future__ import annotations

import click


@click.command("merge")
@click.argument("adapter", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Directory for the merged checkpoint.")
@click.option("--dev", "dev_files", multiple=True, type=click.Path(dir_okay=False),
              help="Dev data for the logits check (default: the training run's dev files).")
@click.option("--verify-sentences", default=64, show_default=True, type=click.IntRange(min=1),
              help="Dev sentences the merged model's logits are checked on.")
@click.option("--force", is_flag=True, help="Replace an existing OUTPUT.")
def command(adapter, output, dev_files, verify_sentences, force):
    """Merge ADAPTER (an `mtedge train` run directory, its best/ or checkpoint/, or any PEFT adapter).

    The merged model's logits must match the adapter's on dev batches (max abs diff <= 1e-4),
    or nothing is written. OUTPUT gets weights, tokenizer, generation config and provenance.json.
    """
    from mtedge.train.merge import merge_adapter

    result = merge_adapter(adapter, output, dev=list(dev_files) or None, force=force,
                           verify_sentences=verify_sentences)
    click.echo(f"[merge] logits max abs diff vs adapter {result.max_abs_diff:.2e} on {result.sentences} "
               f"dev sentences", err=True)
    click.echo(str(result.out_dir))
