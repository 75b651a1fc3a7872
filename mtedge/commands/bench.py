"""``mtedge bench``: measure every engine x precision of a model side by side."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("bench")
@click.argument("model", required=False)
@click.option("--test", "test_file", type=click.Path(dir_okay=False),
              help="Test set: TSV/JSONL with references, or plain text (one source per line).")
@click.option("--synthetic", metavar="NAME",
              help="Measure a random-weight model with NAME's exact shape (e.g. opus-mt-en-de) "
                   "at forced output lengths; speed and memory only.")
@click.option("--configs", help="Comma-separated subset, e.g. onnx-int8,ct2-int8,hf-torch-fp32.")
@click.option("--threads", type=int, help="Intra-op threads for every engine (default: all usable cores).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="benchmarks/results/latest",
              show_default=True, help="Report directory.")
@click.option("--work-dir", type=click.Path(file_okay=False), default="benchmarks/results/tmp",
              show_default=True, help="Exports, synthetic models and worker logs.")
@click.option("--quick", is_flag=True, help="A short run: few sentences, few repeats.")
@click.option("--sentences", type=int, help="Throughput/quality sentences (default 256, quick 32).")
@click.option("--latency-sentences", type=int,
              help="Sentences timed one by one at batch 1 (default 20, quick 4).")
@click.option("--repeats", type=int, help="Repeats of each latency sentence (default 3, quick 2).")
@click.option("--throughput-repeats", type=int,
              help="Timed passes over the --sentences at batch 32 (default 2, quick 1; the median counts).")
@click.option("--throughput-min-seconds", "throughput_min_s", type=float,
              help="More passes until this many seconds are timed (default 3, quick 0): short passes are noisy.")
@click.option("--rounds", type=int,
              help="Interleaved rounds: every configuration once per round, each in a fresh process "
                   "(default 3, quick 1); figures are medians over rounds, ratios come with their spread.")
@click.option("--throughput-rounds", type=int,
              help="Then this many more rounds that time only the batch throughput (default 6, quick 0): "
                   "enough rounds for a 90%+ interval around each throughput ratio.")
@click.option("--max-length", type=int,
              help="Max generated tokens incl. </s> (default: the bundle's generation limit, as "
                   "mtedge translate uses; synthetic: the forced length, 32, quick 24).")
@click.option("--max-memory-mb", multiple=True, metavar="MB|CONFIG=MB",
              help="Address-space cap for the workers (all, or one config); over it the config fails "
                   "and is recorded as such.")
@click.option("--timeout", "timeout_s", type=float, help="Seconds one configuration may take.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def command(model, test_file, synthetic, configs, threads, out_dir, work_dir, quick, sentences, latency_sentences,
            repeats, throughput_repeats, throughput_min_s, rounds, throughput_rounds, max_length, max_memory_mb,
            timeout_s, no_progress):
    """Benchmark MODEL (a bundle, or an HF checkpoint dir exported first) on --test FILE,
    or a --synthetic model; writes report.json, report.md and plots to --out."""
    from mtedge.bench.api import bench

    report = bench(model, test_file=test_file, synthetic=synthetic, configs=configs, threads=threads,
                   out_dir=Path(out_dir), work_dir=Path(work_dir), quick=quick, sentences=sentences,
                   latency_sentences=latency_sentences, repeats=repeats, throughput_repeats=throughput_repeats,
                   throughput_min_s=throughput_min_s, rounds=rounds, throughput_rounds=throughput_rounds,
                   max_length=max_length, max_memory_mb=list(max_memory_mb),
                   timeout_s=timeout_s, progress=not no_progress)
    from mtedge.bench.report import markdown_table, targets_table

    click.echo(markdown_table(report["results"]))
    click.echo()
    click.echo(targets_table(report["targets"]))
    click.echo(f"\nreport: {Path(out_dir) / 'report.md'}")
    if report["results"] and all(r.get("error") for r in report["results"]):
        raise SystemExit(1)
