"""What a vocabulary shortlist (``mtedge shortlist``) buys and costs: quality on a real model, speed at opus-mt's
shape.

    .venv/bin/python -m benchmarks.suites.shortlist --bundle export/reference-en-de \\
        --test benchmarks/corpora/data/bible/test.tsv --test benchmarks/corpora/data/sysmsg/test.tsv \\
        --test benchmarks/corpora/data/webui/test.tsv --out benchmarks/results/shortlist

- **Quality** (``--bundle``, which must hold a shortlist): every sentence of each ``--test`` through
  ``Translator`` (int8 of each ``--engines`` engine, its token batches), greedy and beam 4, with and without
  the shortlist: BLEU/chrF against the references and the share of identical outputs; the candidates a sentence
  and 32 consecutive sentences get; and, on the first ``--alone`` sentences of the first test set, each
  sentence translated alone (what an interactive app does) against the full vocabulary, and alone against
  batched (CTranslate2 scores the batch's union, so its outputs depend on the batch; the ONNX engine masks each
  row to its own sentence's candidates).
- **Speed** at opus-mt-en-de's shape (the bench's synthetic bundle: random weights, 58,101 tokens, forced 32
  target tokens), with a shortlist of ``k`` random tokens kept for everyone (``--sizes``) against the full
  vocabulary: raw CTranslate2 int8, and the ONNX engine (int8 at batch 32, int8_latency at batch 1); batch 32
  beam 4 tok/s and batch-1 greedy ms per step, ``--rounds`` rounds in rotated order, each model loaded afresh.
  Random tokens because the synthetic tokenizer has 2,000 real pieces: a list built from text through it could
  name no others. The quality part reports the ``k`` a real list gives.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

from benchmarks.suites.reports import write_report

SYNTHETIC = "opus-mt-en-de"


def _pairs(path: Path) -> tuple[list[str], list[str]]:
    from mtedge.data import read_tsv

    pairs = read_tsv(path)
    return [s for s, _ in pairs], [t for _, t in pairs]


def quality(bundle: Path, tests: list[Path], threads: int, alone: int, engines: list[str]) -> dict:
    from mtedge.bundle import SHORTLIST_FILE, Bundle
    from mtedge.engines.shortlist import VocabularyMap

    opened = Bundle.open(bundle)
    vmap = VocabularyMap.read(opened.engine_dir(engines[0], "int8") / SHORTLIST_FILE)
    out = {"shortlist": opened.manifest.get("shortlist"), "engines": {}}
    for engine in engines:
        out["engines"][engine] = _quality_of(opened, engine, vmap, tests, threads, alone)
    return out


def _quality_of(opened, engine: str, vmap, tests: list[Path], threads: int, alone: int) -> dict:
    import sacrebleu

    from mtedge import Translator

    always, rules = set(vmap.always), vmap.candidates
    full = Translator(opened, engine=engine, precision="int8", threads=threads)
    short = Translator(opened, engine=engine, precision="int8", threads=threads, shortlist=True)
    tok = full.tokenizer
    sets = {}
    for index, test in enumerate(tests):
        sources, references = _pairs(test)
        candidates = [always.union(*[rules.get(p, []) for p in tok.source_tokens(s)]) for s in sources]
        record = {"sentences": len(sources), "vocabulary": len(tok.pieces),
                  # + unk, bos and eos, which CTranslate2 always keeps (the ONNX engine: unk and eos)
                  "candidates_per_sentence_median": statistics.median(len(c) + 3 for c in candidates),
                  "candidates_per_32_median": statistics.median(
                      len(set().union(*candidates[i:i + 32])) + 3 for i in range(0, max(1, len(candidates) - 31), 32))}
        for beam in (1, 4):
            runs = {}
            for label, translator in (("full", full), ("shortlist", short)):
                start = time.perf_counter()
                texts = [t.text for t in translator.translate(sources, beam_size=beam)]
                runs[label] = (texts, time.perf_counter() - start)
            record[f"beam{beam}"] = {
                label: {"bleu": round(sacrebleu.corpus_bleu(texts, [references]).score, 2),
                        "chrf": round(sacrebleu.corpus_chrf(texts, [references]).score, 2), "seconds": round(s, 2)}
                for label, (texts, s) in runs.items()}
            record[f"beam{beam}"]["identical"] = round(
                sum(a == b for a, b in zip(runs["full"][0], runs["shortlist"][0])) / len(sources), 4)
        if index == 0 and alone:
            record["alone"] = _alone(full, short, sources[:alone], references[:alone])
        sets[test.parent.name] = record
        print(f"[shortlist] quality {engine} {test}: {json.dumps(record)}", flush=True)
    full.close()
    short.close()
    return sets


def _alone(full, short, sources: list[str], references: list[str]) -> dict:
    import sacrebleu

    result = {"sentences": len(sources)}
    for beam in (1, 4):
        batched_full = [t.text for t in full.translate(sources, beam_size=beam)]
        alone_short = [short.translate([s], beam_size=beam)[0].text for s in sources]
        batched_short = [t.text for t in short.translate(sources, beam_size=beam)]
        result[f"beam{beam}"] = {
            "bleu_full": round(sacrebleu.corpus_bleu(batched_full, [references]).score, 2),
            "bleu_shortlist_alone": round(sacrebleu.corpus_bleu(alone_short, [references]).score, 2),
            "identical_to_full": round(sum(a == b for a, b in zip(batched_full, alone_short)) / len(sources), 4),
            "alone_differs_from_batched": round(
                sum(a != b for a, b in zip(alone_short, batched_short)) / len(sources), 4)}
    return result


def _model_with_shortlist(source_dir: Path, work: Path, size: int, seed: int) -> Path:
    """``source_dir`` (a CTranslate2 model) beside a vmap.txt keeping ``size`` random tokens (0: none, the
    full vocabulary); the weights are hard links, not copies."""
    from mtedge.bundle import SHORTLIST_FILE

    target = work / f"k{size}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in source_dir.iterdir():
        if path.name == SHORTLIST_FILE:
            continue
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)
    if size:
        vocabulary = json.loads((source_dir / "shared_vocabulary.json").read_text(encoding="utf-8"))
        usable = [t for t in vocabulary if t and not any(ch.isspace() for ch in t)]
        kept = random.Random(seed).sample(usable, size)
        (target / SHORTLIST_FILE).write_text("\t" + " ".join(kept) + "\n", encoding="utf-8")
    return target


def _ct2_speed(batch: list[list[str]], k: int, model_dir: Path, steps: int, threads: int) -> dict:
    import ctranslate2

    translator = ctranslate2.Translator(str(model_dir), device="cpu", compute_type="int8",
                                        intra_threads=threads, inter_threads=1)
    options = dict(use_vmap=bool(k), max_input_length=0, max_decoding_length=steps, min_decoding_length=steps)

    def run(sentences, beam):
        translator.translate_batch(sentences, beam_size=beam, **options)

    return _timed(run, batch, steps)


def _onnx_speed(bundle, batch: list[list[int]], k: int, tok, steps: int, threads: int) -> dict:
    """The ONNX engine as ``Translator`` builds it, with ``k`` random ids kept for every sentence (0: none):
    int8 (the graph for batches) at batch 32, int8_latency (for one sentence) at batch 1."""
    from mtedge.engines.onnx_engine import OnnxEngine
    from mtedge.engines.shortlist import CandidateTable, VocabularyMap
    from mtedge.types import DecodeOptions

    target = tok.target_spec()
    table = None
    if k:
        kept = random.Random(k).sample(sorted(tok.vocab), k)
        table = CandidateTable(VocabularyMap(kept, {}), tok.vocab, keep=(target.eos_id, tok.unk_id))
    engines = {precision: OnnxEngine(bundle.engine_dir("onnx", precision), target, bundle.model_shape,
                                     threads=threads, shortlist=table) for precision in ("int8", "int8_latency")}

    def run(sentences, beam):
        # min_length forces the length, as CTranslate2's min_decoding_length does (+ 1: it counts </s>)
        options = DecodeOptions(beam_size=beam, min_length=steps + 1, max_length=steps + 1)
        engines["int8" if len(sentences) > 1 else "int8_latency"].translate_ids(sentences, options)

    return _timed(run, batch, steps)


def _timed(run, batch: list, steps: int) -> dict:
    """Batch 32 beam 4 tok/s over >= 3 s after a warm-up, and the median batch-1 greedy ms per step."""
    run(batch, 4)   # warm-up
    start = time.perf_counter()
    passes = 0
    while passes < 2 or time.perf_counter() - start < 3.0:
        run(batch, 4)
        passes += 1
    tok_s = passes * len(batch) * (steps + 1) / (time.perf_counter() - start)
    run(batch[:1], 1)
    one = []
    for sentence in batch[:8]:
        t = time.perf_counter()
        run([sentence], 1)
        one.append((time.perf_counter() - t) * 1000 / steps)
    return {"b32_beam4_tok_s": tok_s, "b1_greedy_ms_per_step": statistics.median(one)}


def speed(work_dir: Path, sizes: list[int], rounds: int, threads: int, engines: list[str]) -> dict:
    from mtedge.bench.synthetic import synthetic_bundle
    from mtedge.bench.testset import synthetic_sources
    from mtedge.bundle import Bundle
    from mtedge.tokenizer import BundleTokenizer

    bundle = Bundle.open(synthetic_bundle(SYNTHETIC, work_dir))
    tok = BundleTokenizer(bundle.tokenizer_dir())
    sources = synthetic_sources(32)
    steps = 31   # 32 tokens with the forced </s>, as the bench forces them (mtedge/DESIGN.md §4.2)
    ks = [0, *sizes]
    ct2_models = {k: _model_with_shortlist(bundle.engine_dir("ct2", "int8"), work_dir / "shortlist-speed", k, seed=k)
                  for k in ks} if "ct2" in engines else {}
    measure = {
        "ct2": lambda k: _ct2_speed([tok.source_tokens(s) for s in sources], k, ct2_models[k], steps, threads),
        "onnx": lambda k: _onnx_speed(bundle, [tok.encode(s) for s in sources], k, tok, steps, threads),
    }
    variants = [(engine, k) for engine in engines for k in ks]
    samples: dict[tuple[str, int], list[dict]] = {v: [] for v in variants}
    for round_index in range(rounds):
        shift = round_index % len(variants)
        for engine, k in variants[shift:] + variants[:shift]:
            samples[(engine, k)].append(measure[engine](k))
            print(f"[shortlist] speed round {round_index + 1} {engine} k={k or 'full'}: "
                  f"{samples[(engine, k)][-1]}", flush=True)
    result = {"model": SYNTHETIC, "threads": threads, "rounds": rounds, "sentences": len(sources),
              "forced_tokens": steps + 1, "engines": {}}
    for engine in engines:
        rows = result["engines"][engine] = {}
        for k in ks:
            own, full = samples[(engine, k)], samples[(engine, 0)]
            row = {key: statistics.median(s[key] for s in own) for key in own[0]}
            if k:
                ratios = [s["b32_beam4_tok_s"] / f["b32_beam4_tok_s"] for s, f in zip(own, full)]
                faster = [f["b1_greedy_ms_per_step"] / s["b1_greedy_ms_per_step"] for s, f in zip(own, full)]
                row.update(b32_ratio_median=statistics.median(ratios), b32_ratio_range=[min(ratios), max(ratios)],
                           b1_speedup_median=statistics.median(faster), b1_speedup_range=[min(faster), max(faster)])
            rows[str(k or "full")] = row
    return result


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = ["# Vocabulary shortlist: quality and speed", "",
             f"- **machine**: {machine['cpu_model']}, {machine['usable_cores']} usable cores; "
             f"recorded {report['date']}",
             f"- **command**: `{report['command']}`", ""]
    q = report.get("quality")
    if q:
        s = q["shortlist"] or {}
        lines += ["## Quality (int8, every test sentence through `Translator`)", "",
                  f"Shortlist: {s.get('per_token')} per source token, {s.get('always')} always, from "
                  f"{s.get('pairs')} pairs of {', '.join(f'`{d}`' for d in s.get('data') or [])}.", "",
                  "| engine | test set | sentences | candidates (sentence / 32 sentences, of the vocabulary) | beam | "
                  "BLEU full → shortlist | chrF full → shortlist | identical |",
                  "|---|---|---:|---|---:|---|---|---:|"]
        for engine, sets in q["engines"].items():
            for name, r in sets.items():
                for beam in (1, 4):
                    b = r[f"beam{beam}"]
                    lines.append(f"| {engine} | {name} | {r['sentences']} | {r['candidates_per_sentence_median']:.0f} / "
                                 f"{r['candidates_per_32_median']:.0f} of {r['vocabulary']} | {beam} | "
                                 f"{b['full']['bleu']:.2f} → {b['shortlist']['bleu']:.2f} | "
                                 f"{b['full']['chrf']:.2f} → {b['shortlist']['chrf']:.2f} | {b['identical']:.1%} |")
        alone_rows = [(engine, name, r["alone"]) for engine, sets in q["engines"].items()
                      for name, r in sets.items() if "alone" in r]
        if alone_rows:
            lines += ["", "One sentence at a time (the first sentences of the first test set): the shortlist keeps "
                          "only that sentence's candidates, on either engine.", "",
                      "| engine | test set | sentences | beam | BLEU full (batched) | BLEU shortlist alone | "
                      "identical to full | alone differs from batched |", "|---|---|---:|---:|---:|---:|---:|---:|"]
            for engine, name, a in alone_rows:
                for beam in (1, 4):
                    b = a[f"beam{beam}"]
                    lines.append(f"| {engine} | {name} | {a['sentences']} | {beam} | {b['bleu_full']:.2f} | "
                                 f"{b['bleu_shortlist_alone']:.2f} | {b['identical_to_full']:.1%} | "
                                 f"{b['alone_differs_from_batched']:.1%} |")
        lines.append("")
    sp = report.get("speed")
    if sp:
        what = {"ct2": "raw CTranslate2 int8", "onnx": "the ONNX engine: int8 at batch 32, int8_latency at batch 1"}
        lines += [f"## Speed at {sp['model']}'s shape ({sp['threads']} threads, {sp['sentences']} synthetic "
                  f"sentences, forced {sp['forced_tokens']} tokens, {sp['rounds']} rounds)", "",
                  "| engine | kept tokens | b32 beam 4 tok/s | vs full (median, min–max) | b1 greedy ms/step | "
                  "b1 speed-up (median, min–max) |", "|---|---|---:|---|---:|---|"]
        for engine, rows in sp["engines"].items():
            for k, r in rows.items():
                ratio = (f"{r['b32_ratio_median']:.2f}x ({r['b32_ratio_range'][0]:.2f}–{r['b32_ratio_range'][1]:.2f})"
                         if "b32_ratio_median" in r else "1.00x")
                b1 = (f"{r['b1_speedup_median']:.2f}x ({r['b1_speedup_range'][0]:.2f}–{r['b1_speedup_range'][1]:.2f})"
                      if "b1_speedup_median" in r else "1.00x")
                lines.append(f"| {engine} | {k} | {r['b32_beam4_tok_s']:.0f} | {ratio} | "
                             f"{r['b1_greedy_ms_per_step']:.2f} | {b1} |")
        lines += [""] + [f"- {engine}: {what[engine]}" for engine in sp["engines"]] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle with a shortlist (quality); none: speed only")
    parser.add_argument("--test", type=Path, action="append", default=[], help="a test TSV (repeatable)")
    parser.add_argument("--alone", type=int, default=400, help="sentences translated one at a time")
    parser.add_argument("--sizes", default="1500,4000,8000", help="kept-token counts for the speed part")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", default="ct2,onnx", help="engines measured, comma-separated")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=Path("benchmarks/results/tmp"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    engines = [engine.strip() for engine in args.engines.split(",") if engine.strip()]
    from mtedge.bench.machine import describe_machine

    words = argv if argv is not None else sys.argv[1:]
    report = {"machine": describe_machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "python -m benchmarks.suites.shortlist " + " ".join(words)}
    if args.bundle:
        report["quality"] = quality(args.bundle, args.test, args.threads, args.alone, engines)
    if not args.no_speed:
        report["speed"] = speed(args.work_dir, [int(k) for k in args.sizes.split(",")], args.rounds, args.threads,
                                engines)
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, report, markdown(report))
    print(f"[shortlist] wrote {args.out}/report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
