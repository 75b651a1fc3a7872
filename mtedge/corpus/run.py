"""``translate_corpus``: one corpus file to one output file, on Ray, resumably (see ``mtedge.corpus``).

Everything that can be refused is refused on the driver before Ray starts: the paths, the bundle (a
Translator is loaded once here, so a broken model file is named now, not by every actor), the decoding
options, malformed rows under ``on_error="fail"``, a shard directory left by another setup.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from mtedge.corpus.ray_job import SHORTLIST_OPTION
from mtedge.corpus.source import InputSpec, scan
from mtedge.corpus.store import OUTPUT_FORMATS, ShardStore, detect_output_format
from mtedge.errors import UserError

ON_ERROR = ("fail", "skip")
DEFAULT_BATCH_SIZE = 128     # rows per actor call; the Translator batches them by tokens inside
DEFAULT_SHARD_ROWS = 2000    # rows per shard: what a killed run can lose per shard in flight
SHOWN_ERRORS = 3


@dataclass
class CorpusReport:
    rows: int
    blank: int
    shards: int
    reused_shards: int
    reused_rows: int
    translated_rows: int
    malformed: list[tuple[int, str]]      # (row, message), the first few
    malformed_count: int
    redone: list[tuple[str, str]]         # (shard, why) of recorded shards that failed verification
    seconds: float                        # the Ray job: read, translate, write the shards
    startup_seconds: float                # starting or connecting to Ray
    first_shard_seconds: float | None     # from the job's start to its first shard: actor start-up, model load
    actors: int
    threads_per_actor: int
    output: Path
    output_format: str
    shards_dir: Path
    kept_shards: bool
    where: str = ""
    cluster_cpus: float = 0.0
    settings: dict = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float | None:
        return self.translated_rows / self.seconds if self.translated_rows and self.seconds > 0 else None


def check_paths(input_path: Path, output_path: Path) -> None:
    if not input_path.exists():
        raise UserError(f"input file not found: {input_path}")
    if not input_path.is_file():
        raise UserError(f"input path is not a regular file: {input_path} (translate-corpus reads a file twice; "
                        f"use `mtedge translate` for a stream)")
    if output_path.is_dir():
        raise UserError(f"output path is a directory: {output_path}")
    parent = Path(os.path.realpath(output_path)).parent
    if not parent.is_dir():
        raise UserError(f"output directory does not exist: {parent}")
    try:
        out_stat = os.stat(output_path)
    except OSError:
        return
    in_stat = os.stat(input_path)
    if stat.S_ISREG(out_stat.st_mode) and (in_stat.st_dev, in_stat.st_ino) == (out_stat.st_dev, out_stat.st_ino):
        raise UserError(f"output {output_path} is the input file; writing it would destroy the input")


def malformed_message(path, malformed: list[tuple[int, str]], count: int) -> str:
    row, message = malformed[0]
    more = ""
    if count > 1:
        rows = ", ".join(str(r) for r, _ in malformed[1:SHOWN_ERRORS + 1])
        rows += ", …" if count > SHOWN_ERRORS + 1 else ""
        more = f"; {count - 1} more malformed row(s): {rows}"
    return f"{path} row {row}: {message}{more}"


def translate_corpus(bundle: str | Path, input_path: str | Path, output_path: str | Path, *,
                     input_format: str | None = None, field_name: str | None = None,
                     output_format: str | None = None, on_error: str = "fail", address: str | None = None,
                     actors: int | None = None, threads_per_actor: int = 1, batch_size: int = DEFAULT_BATCH_SIZE,
                     shard_rows: int = DEFAULT_SHARD_ROWS, shards_dir: str | Path | None = None,
                     keep_shards: bool = False, restart: bool = False, engine: str = "ct2",
                     precision: str | None = None, beam_size: int | None = None, max_length: int | None = None,
                     length_penalty: float | None = None, split_sentences: bool = False, shortlist: bool = False,
                     progress: bool = False, names: dict[str, str] | None = None) -> CorpusReport:
    """Translate every row of ``input_path`` into ``output_path`` (row N of the output is the translation
    of row N of the input). ``names`` spells parameters as the caller does in messages (the CLI's flags)."""
    bundle, input_path, output_path = Path(bundle), Path(input_path), Path(output_path)
    if on_error not in ON_ERROR:
        raise UserError(f"--on-error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    output_format = output_format or detect_output_format(output_path)
    if output_format not in OUTPUT_FORMATS:
        raise UserError(f"unknown output format {output_format!r}; choose from {', '.join(OUTPUT_FORMATS)}")
    for name, value in (("actors", actors), ("threads_per_actor", threads_per_actor), ("batch_size", batch_size),
                        ("shard_rows", shard_rows)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise UserError(f"{(names or {}).get(name, name)} must be a positive integer, got {value!r}")
    check_paths(input_path, output_path)
    spec = InputSpec.make(input_path, input_format, field_name)
    shards_dir = Path(shards_dir) if shards_dir is not None else output_path.with_name(output_path.name + ".shards")

    from mtedge.bundle import sha256_file
    from mtedge.translator import Translator

    # Load once here: a bundle that cannot load fails now, with its own message, before any actor starts.
    translator = Translator(bundle, engine=engine, precision=precision, device="cpu", threads=1,
                            shortlist=shortlist)
    try:
        decode = translator.decode_options(beam_size, max_length, 0, length_penalty, names=names)
        precision = translator.precision
        bundle_sha = sha256_file(translator.bundle.manifest_path)
    finally:
        translator.close()
    options = {"beam_size": decode.beam_size, "max_length": decode.max_length,
               "length_penalty": decode.length_penalty, "split_sentences": bool(split_sentences),
               SHORTLIST_OPTION: bool(shortlist)}
    settings = {"bundle_manifest_sha256": bundle_sha, "engine": engine, "precision": precision, **options,
                "input_format": spec.fmt, "field": spec.field, "shard_rows": shard_rows}

    scanned = scan(spec, shard_rows)
    if scanned.malformed_count and on_error == "fail":
        raise UserError(malformed_message(input_path, scanned.malformed, scanned.malformed_count)
                        + " (--on-error skip writes them as empty translations)")
    store = ShardStore.open(shards_dir, settings, restart=restart)
    pending, redone = [], []
    for shard in scanned.shards:
        reason = store.check(shard)
        if reason is not None:
            pending.append(shard)
            if reason != "not done":
                redone.append((shard.name, reason))
    report = CorpusReport(
        rows=scanned.rows, blank=scanned.blank, shards=len(scanned.shards),
        reused_shards=len(scanned.shards) - len(pending),
        reused_rows=scanned.rows - sum(s.rows for s in pending), translated_rows=sum(s.rows for s in pending),
        malformed=scanned.malformed, malformed_count=scanned.malformed_count, redone=redone, seconds=0.0,
        startup_seconds=0.0, first_shard_seconds=None, actors=0, threads_per_actor=threads_per_actor,
        output=output_path, output_format=output_format, shards_dir=shards_dir, kept_shards=keep_shards,
        settings=settings)
    if pending:
        _run_on_ray(report, spec, pending, store, str(bundle.resolve()), engine, precision, options, address, actors,
                    threads_per_actor, batch_size, progress)
    store.assemble(scanned.shards, output_path, output_format)
    if not keep_shards:
        store.remove()
    return report


def _run_on_ray(report: CorpusReport, spec, pending, store, bundle, engine, precision, options, address, actors,
                threads_per_actor, batch_size, progress) -> None:
    from mtedge.corpus import ray_job

    started = time.perf_counter()
    with ray_job.session(address) as (ray, where):
        report.where = where
        report.actors, report.cluster_cpus = ray_job.pool_size(ray, actors, threads_per_actor,
                                                                local=address is None)
        report.startup_seconds = time.perf_counter() - started
        bar = None
        if progress:
            import sys

            from tqdm import tqdm

            bar = tqdm(total=report.rows, initial=report.reused_rows, unit="row", file=sys.stderr,
                       dynamic_ncols=True, leave=False)
        started = time.perf_counter()

        def write(*shard):
            store.write(*shard)
            if report.first_shard_seconds is None:
                report.first_shard_seconds = time.perf_counter() - started

        try:
            ray_job.translate_shards(ray, spec, pending, bundle=bundle, engine=engine, precision=precision,
                                     options=options, actors=report.actors, threads_per_actor=threads_per_actor,
                                     batch_size=batch_size, on_shard=write,
                                     on_rows=bar.update if bar is not None else None)
        finally:
            report.seconds = time.perf_counter() - started
            if bar is not None:
                bar.close()
