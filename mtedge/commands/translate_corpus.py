"""``mtedge translate-corpus``: a whole corpus file on Ray Data, resumable (extra ``mtedge[distributed]``).

Why a subcommand of its own rather than ``mtedge translate --ray``: the two promise different things.
``translate`` is a stream — stdin or a file in, stdout or a file out, lines written as they are ready,
``--json`` n-best, usable in a pipe. A corpus job needs a regular file it can read twice (once to cut
and hash the shards, once per shard on the workers), an output assembled from verified shards, a
shard directory to resume from, per-format row selection (``--field``) and a policy for malformed rows
(``--on-error``). Folded into ``translate``, half of the options would be errors without ``--ray`` and
the other half errors with it; here every option means something, and ``translate`` stays as light
and as tested as it is. Ray itself is imported only when shards have to be translated.

Light: no torch/transformers (unless ``--engine torch``), no ray until the job runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from mtedge.commands.translate import FLAG_NAMES, FLOAT, POSITIVE, SHORTLIST_HELP
from mtedge.engines import check_engine

NAMES = {**FLAG_NAMES, "actors": "--actors", "threads_per_actor": "--threads-per-actor",
         "batch_size": "--batch-size", "shard_rows": "--shard-rows"}


@click.command("translate-corpus")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("-i", "--input", "input_path", type=click.Path(path_type=Path), required=True,
              help="The corpus: text (one segment a line), .tsv, .jsonl or .parquet.")
@click.option("-o", "--output", "output_path", type=click.Path(path_type=Path), required=True,
              help="Where to write the translations: row N is the translation of input row N.")
@click.option("--format", "input_format", default=None,
              help="text | tsv | jsonl | parquet (default: from the extension; anything else is text).")
@click.option("--field", "field_name", default=None,
              help="TSV: the column number (default 1); JSONL: the key, Parquet: the column (default 'text').")
@click.option("--output-format", default=None,
              help="text (one line per row) | jsonl | parquet (id, translation, error); default: from -o's extension.")
@click.option("--on-error", default="fail", show_default=True,
              help="A malformed row: fail (before translating anything) or skip (an empty translation, counted).")
@click.option("--ray", "address", default=None, metavar="ADDRESS",
              help="Ray cluster to run on (ray://host:10001, auto); default: start a local Ray instance.")
@click.option("--actors", type=POSITIVE, default=None,
              help="Translator actors (default: as many as the cluster's CPUs hold).")
@click.option("--threads-per-actor", type=POSITIVE, default=1, show_default=True,
              help="Compute threads (and reserved CPUs) per actor.")
@click.option("--batch-size", type=POSITIVE, default=128, show_default=True, help="Rows per actor call.")
@click.option("--shard-rows", type=POSITIVE, default=2000, show_default=True,
              help="Rows per shard: the unit that is written, verified and resumed.")
@click.option("--shards-dir", type=click.Path(path_type=Path), default=None,
              help="Shard files and manifest (default: OUTPUT.shards beside the output).")
@click.option("--keep-shards", is_flag=True, help="Keep the shard directory after the output is written.")
@click.option("--restart", is_flag=True, help="Discard the shards of an earlier run instead of resuming it.")
@click.option("--engine", default="ct2", show_default=True, help="ct2 | onnx | torch (the PyTorch reference).")
@click.option("--precision", default=None, help="Engine precision (default: int8; fp32 for torch).")
@click.option("--beam", "beam_size", type=POSITIVE, default=None, help="Beam size (default: the bundle's).")
@click.option("--max-length", type=POSITIVE, default=None,
              help="Most target tokens per sentence, </s> included (default: the bundle's).")
@click.option("--length-penalty", type=FLOAT, default=None, help="HF length penalty (default: the bundle's).")
@click.option("--split-sentences", is_flag=True, help="Translate each sentence of a row separately.")
@click.option("--shortlist", is_flag=True, help=SHORTLIST_HELP.format(unit="row"))
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def command(bundle, input_path, output_path, input_format, field_name, output_format, on_error, address, actors,
            threads_per_actor, batch_size, shard_rows, shards_dir, keep_shards, restart, engine, precision,
            beam_size, max_length, length_penalty, split_sentences, shortlist, progress):
    """Translate a corpus file with BUNDLE on Ray, in resumable shards.

    Row N of the output is the translation of row N of the input (blank rows stay blank). Finished
    shards are kept in the shard directory with a manifest; running the same command again after a
    failure or a kill translates only the shards that are missing or do not verify.
    """
    check_engine(engine)  # before any input is read
    from mtedge.corpus import translate_corpus

    report = translate_corpus(
        bundle, input_path, output_path, input_format=input_format, field_name=field_name,
        output_format=output_format, on_error=on_error, address=address, actors=actors,
        threads_per_actor=threads_per_actor, batch_size=batch_size, shard_rows=shard_rows, shards_dir=shards_dir,
        keep_shards=keep_shards, restart=restart, engine=engine, precision=precision, beam_size=beam_size,
        max_length=max_length, length_penalty=length_penalty, split_sentences=split_sentences,
        shortlist=shortlist, progress=progress, names=NAMES)
    for name, why in report.redone[:5]:
        click.echo(f"warning: {name} is translated again: {why}", err=True)
    if report.malformed_count:
        shown = "; ".join(f"row {row}: {message}" for row, message in report.malformed[:3])
        more = " …" if report.malformed_count > 3 else ""
        click.echo(f"warning: {report.malformed_count} malformed row(s) written as empty translations ({shown}{more})",
                   err=True)
    for line in summary(report):
        click.echo(line)


def summary(report) -> list[str]:
    """How many rows, how fast, where it was written."""
    lines = [f"{report.rows} rows ({report.blank} blank, {report.malformed_count} malformed) in "
             f"{report.shards} shard(s)"]
    if report.reused_shards:
        lines.append(f"reused {report.reused_shards} verified shard(s) ({report.reused_rows} rows) "
                     f"from {report.shards_dir}")
    if report.translated_rows:
        speed = report.rows_per_second or 0.0
        lines.append(f"translated {report.translated_rows} rows in {report.shards - report.reused_shards} shard(s) "
                     f"in {report.seconds:.1f} s: {speed:.1f} rows/s with {report.actors} actor(s) x "
                     f"{report.threads_per_actor} thread(s) on {report.where} "
                     f"(Ray start-up {report.startup_seconds:.1f} s not counted)")
    kept = f"; shards kept in {report.shards_dir}" if report.kept_shards else ""
    lines.append(f"wrote {report.output} ({report.output_format}, {report.rows} rows){kept}")
    return lines
