"""``mtedge shortlist``: add a vocabulary shortlist, built from parallel data, to a bundle."""

from __future__ import annotations

from pathlib import Path

import click

from mtedge.convert.shortlist import DEFAULT_ALWAYS, DEFAULT_MIN_COUNT, DEFAULT_PER_TOKEN


@click.command("shortlist")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--data", "data", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Parallel text of the model's domain (.tsv, .jsonl, .po/.mo), e.g. its training data; "
                   "repeat for several files.")
@click.option("--per-token", default=DEFAULT_PER_TOKEN, show_default=True, type=click.IntRange(min=1),
              help="Target tokens kept for each source token (the most frequent in its sentences' translations).")
@click.option("--always", default=DEFAULT_ALWAYS, show_default=True, type=click.IntRange(min=0),
              help="The most frequent target tokens, kept for every batch.")
@click.option("--min-count", default=DEFAULT_MIN_COUNT, show_default=True, type=click.IntRange(min=1),
              help="Sentence pairs a source and a target token must share to be linked.")
@click.option("--check", type=click.Path(path_type=Path), default=None,
              help="Held-out pairs (e.g. dev.tsv): report how many of their reference tokens the list keeps.")
def command(bundle, data, per_token, always, min_count, check):
    """Write BUNDLE's vocabulary shortlist (vmap.txt, for ct2 and onnx) from --data; `mtedge translate --shortlist`
    uses it."""
    from mtedge.convert.shortlist import add_shortlist

    record = add_shortlist(bundle, list(data), per_token=per_token, always=always, min_count=min_count,
                           check=check, log=lambda message: click.echo(message, err=True))
    click.echo(f"[shortlist] {record['source_tokens_mapped']} source tokens mapped from {record['pairs']} pairs; "
               f"{record['always']} target tokens always kept", err=True)
