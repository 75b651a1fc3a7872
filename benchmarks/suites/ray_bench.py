"""What Ray buys a corpus job: rows/s of one plain ``Translator`` vs ``mtedge translate-corpus`` with N actors.

    .venv/bin/python -m benchmarks.suites.ray_bench BUNDLE --texts benchmarks/corpora/data/bible/test.tsv \\
        --rows 2000 --actors 1,2 --out benchmarks/results/tmp/ray

Every run translates the same rows (``--texts``: a text file, one segment a line, or a TSV whose first
column is the source; cycled up to ``--rows``), written once to ``OUT/input.txt``:

- ``plain``: one Translator with ``--threads-per-actor`` threads, in this process, the whole input in one
  ``translate()`` call after a warm-up; the model load is timed apart and not counted.
- ``ray-N``: ``translate_corpus`` with N actors of ``--threads-per-actor`` threads each, on a fresh shard
  directory, against one Ray instance started (or connected, ``--ray``) once for all runs; its time is
  the whole job — reading, translating, writing the shards, and each actor's start-up and model load
  (what a corpus job pays) — but not Ray's own start-up, reported apart.

Every Ray output is compared with the plain one (``identical``). Prints a markdown table and writes
``report.json`` (machine, settings, every run) and ``report.md`` to ``--out``. Timings on a shared machine
swing a lot (mtedge/DESIGN.md §4.7): keep the machine header, with its load average, with any figure.
On a cluster, ``--out`` and the bundle must be at the same path on every node.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import psutil

from benchmarks.suites.reports import write_report
from mtedge.bench.machine import describe_machine


def read_texts(path: Path, rows: int) -> list[str]:
    texts = [line.split("\t", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    texts = [text for text in texts if text]
    if not texts:
        sys.exit(f"error: no texts in {path}")
    return [texts[n % len(texts)] for n in range(rows)]


def plain_run(args: argparse.Namespace, texts: list[str]) -> tuple[dict, list[str]]:
    from mtedge import Translator

    started = time.perf_counter()
    translator = Translator(args.bundle, engine=args.engine, precision=args.precision, device="cpu",
                            threads=args.threads_per_actor)
    load = time.perf_counter() - started
    translator.translate(texts[:8])  # warm-up
    started = time.perf_counter()
    outputs = [t.text for t in translator.translate(texts)]
    seconds = time.perf_counter() - started
    translator.close()
    return {"run": "plain", "actors": 0, "threads_per_actor": args.threads_per_actor, "rows": len(texts),
            "seconds": round(seconds, 3), "rows_per_s": round(len(texts) / seconds, 2),
            "load_s": round(load, 3), "first_shard_s": None, "identical": True}, outputs


def ray_run(args: argparse.Namespace, source: Path, actors: int, expected: list[str]) -> dict:
    from mtedge.corpus import translate_corpus

    output = args.out / f"ray-{actors}.txt"
    shards = args.out / f"ray-{actors}.shards"
    shutil.rmtree(shards, ignore_errors=True)
    report = translate_corpus(args.bundle, source, output, actors=actors, threads_per_actor=args.threads_per_actor,
                              batch_size=args.batch_size, shard_rows=args.shard_rows, shards_dir=shards,
                              engine=args.engine, precision=args.precision)
    outputs = output.read_text(encoding="utf-8").split("\n")[:-1]
    return {"run": f"ray-{actors}", "actors": report.actors, "threads_per_actor": args.threads_per_actor,
            "rows": report.translated_rows, "seconds": round(report.seconds, 3),
            "rows_per_s": round(report.rows_per_second or 0.0, 2), "load_s": None,
            "first_shard_s": round(report.first_shard_seconds or 0.0, 3),
            "identical": outputs == expected}


def run(args: argparse.Namespace) -> dict:
    from mtedge.corpus import ray_job

    args.out.mkdir(parents=True, exist_ok=True)
    texts = read_texts(args.texts, args.rows)
    source = args.out / "input.txt"
    source.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
    machine = describe_machine()
    machine["physical_cores"] = psutil.cpu_count(logical=False)
    machine["logical_cpus"] = psutil.cpu_count(logical=True)
    plain, expected = plain_run(args, texts)
    plain["vs_plain"] = 1.0
    runs = [plain]
    print(f"plain      {plain['rows_per_s']:9.2f} rows/s", flush=True)
    started = time.perf_counter()
    with ray_job.session(args.ray) as (ray, where):
        ray_startup = time.perf_counter() - started
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0))
        for actors in args.actors:
            row = ray_run(args, source, actors, expected)
            row["vs_plain"] = round(row["rows_per_s"] / plain["rows_per_s"], 2)
            runs.append(row)
            print(f"{row['run']:10s} {row['rows_per_s']:9.2f} rows/s  x{row['vs_plain']} vs plain  "
                  f"identical: {row['identical']}", flush=True)
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    settings = {"bundle": str(args.bundle), "engine": args.engine, "precision": args.precision or "int8",
                "threads_per_actor": args.threads_per_actor, "batch_size": args.batch_size,
                "shard_rows": args.shard_rows, "rows": len(texts), "texts": str(args.texts),
                "ray": where, "ray_cluster_cpus": cluster_cpus, "ray_startup_s": round(ray_startup, 2),
                "note": args.note}
    report = {"machine": machine, "settings": settings, "runs": runs}
    write_report(args.out, report, markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    machine, settings = report["machine"], report["settings"]
    lines = [
        "# `mtedge translate-corpus`: plain Translator vs Ray actors",
        "",
        f"Machine: {machine['cpu_model']}, {machine['physical_cores']} cores / {machine['logical_cpus']} threads "
        f"({machine['usable_cores']} usable); load average at start {machine['load_average']}, at end "
        f"{machine.get('load_average_end')}. Ray: {settings['ray']} ({settings['ray_cluster_cpus']:g} CPUs, "
        f"start-up {settings['ray_startup_s']} s, not counted).",
        f"{settings['engine']} {settings['precision']}, {settings['threads_per_actor']} thread(s) per Translator; "
        f"{settings['rows']} rows from `{settings['texts']}`; Ray: batch {settings['batch_size']} rows, shards of "
        f"{settings['shard_rows']}. Ray times include each actor's start-up and model load (most of `first shard s`, "
        f"the time to the first finished shard, on a small input); the plain one excludes its load (`load s`).",
    ]
    if settings.get("note"):
        lines += ["", f"**Note:** {settings['note']}"]
    lines += ["", "| run | actors x threads | rows | seconds | rows/s | vs plain | load s | first shard s | identical "
              "to plain |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in report["runs"]:
        shape = "1 process" if row["run"] == "plain" else f"{row['actors']} x {row['threads_per_actor']}"
        lines.append(f"| {row['run']} | {shape} | {row['rows']} | {row['seconds']} | {row['rows_per_s']} | "
                     f"{row['vs_plain']} | {_cell(row['load_s'])} | {_cell(row['first_shard_s'])} | "
                     f"{'yes' if row['identical'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return "—" if value is None else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--texts", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--actors", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    parser.add_argument("--threads-per-actor", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--shard-rows", type=int, default=500)
    parser.add_argument("--engine", default="ct2")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--ray", default=None, metavar="ADDRESS", help="A Ray cluster (default: a local instance).")
    parser.add_argument("--note", default="", help="Recorded with the result, e.g. what else ran on the machine.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tmp/ray"))
    from mtedge.errors import UserError

    try:
        run(parser.parse_args(argv))
    except UserError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
