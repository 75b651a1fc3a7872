"""What a vocabulary shortlist (``mtedge shortlist``) buys and costs: quality on a real model, speed at opus-mt's
shape.

    .venv/bin/python -m benchmarks.suites.shortlist --bundle export/reference-en-de \\
        --test benchmarks/corpora/data/bible/test.tsv --test benchmarks/corpora/data/sysmsg/test.tsv \\
        --test benchmarks/corpora/data/webui/test.tsv --out benchmarks/results/shortlist

- **Quality** (``--bundle``, which must hold a shortlist): every sentence of each ``--test`` through
  ``Translator`` (ct2 int8, its token batches), greedy and beam 4, with and without the shortlist: BLEU/chrF
  against the references and the share of identical outputs; the candidates a sentence and 32 consecutive
  sentences get; and, on the first ``--alone`` sentences of the first test set, each sentence translated alone
  (what an interactive app does) against the full vocabulary, and alone against batched (the shortlist makes
  outputs depend on the batch).
- **Speed** at opus-mt-en-de's shape (the bench's synthetic bundle: random weights, 58,101 tokens, forced 32
  target tokens): raw CTranslate2 int8 with a shortlist of ``k`` random tokens kept for everyone (``--sizes``)
  against the full vocabulary, batch 32 beam 4 tok/s and batch-1 greedy ms per step, ``--rounds`` rounds in
  rotated order, each model loaded afresh. Random tokens because the synthetic tokenizer has 2,000 real pieces:
  a list built from text through it could name no others. The quality part reports the ``k`` a real list gives.
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


def quality(bundle: Path, tests: list[Path], threads: int, alone: int) -> dict:
    import sacrebleu

    from mtedge import Translator
    from mtedge.bundle import SHORTLIST_FILE, Bundle
    from mtedge.convert.shortlist import VocabularyMap

    opened = Bundle.open(bundle)
    vmap = VocabularyMap.read(opened.engine_dir("ct2", "int8") / SHORTLIST_FILE)
    always, rules = set(vmap.always), vmap.candidates
    full = Translator(opened, engine="ct2", precision="int8", threads=threads)
    short = Translator(opened, engine="ct2", precision="int8", threads=threads, shortlist=True)
    tok = full.tokenizer
    out = {"shortlist": opened.manifest.get("shortlist"), "sets": {}}
    for index, test in enumerate(tests):
        sources, references = _pairs(test)
        candidates = [always.union(*[rules.get(p, []) for p in tok.source_tokens(s)]) for s in sources]
        record = {"sentences": len(sources), "vocabulary": len(tok.pieces),
                  # + unk, bos and eos, which CTranslate2 always keeps
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
        out["sets"][test.parent.name] = record
        print(f"[shortlist] quality {test}: {json.dumps(record)}", flush=True)
    full.close()
    short.close()
    return out


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


def speed(work_dir: Path, sizes: list[int], rounds: int, threads: int) -> dict:
    import ctranslate2

    from mtedge.bench.synthetic import synthetic_bundle
    from mtedge.bench.testset import synthetic_sources
    from mtedge.bundle import Bundle
    from mtedge.tokenizer import BundleTokenizer

    bundle = Bundle.open(synthetic_bundle(SYNTHETIC, work_dir))
    tok = BundleTokenizer(bundle.tokenizer_dir())
    batch = [tok.source_tokens(s) for s in synthetic_sources(32)]
    steps = 31   # 32 tokens with the forced </s>, as the bench forces them (mtedge/DESIGN.md §4.2)
    models = {k: _model_with_shortlist(bundle.engine_dir("ct2", "int8"), work_dir / "shortlist-speed", k, seed=k)
              for k in [0, *sizes]}
    samples: dict[int, list[dict]] = {k: [] for k in models}
    order = list(models)
    for round_index in range(rounds):
        shift = round_index % len(order)
        for k in order[shift:] + order[:shift]:
            translator = ctranslate2.Translator(str(models[k]), device="cpu", compute_type="int8",
                                                intra_threads=threads, inter_threads=1)
            options = dict(use_vmap=bool(k), max_input_length=0, max_decoding_length=steps,
                           min_decoding_length=steps)
            translator.translate_batch(batch, beam_size=4, **options)   # warm-up
            start = time.perf_counter()
            passes = 0
            while passes < 2 or time.perf_counter() - start < 3.0:
                translator.translate_batch(batch, beam_size=4, **options)
                passes += 1
            tok_s = passes * len(batch) * (steps + 1) / (time.perf_counter() - start)
            one = []
            for sentence in batch[:8]:
                t = time.perf_counter()
                translator.translate_batch([sentence], beam_size=1, **options)
                one.append((time.perf_counter() - t) * 1000 / steps)
            samples[k].append({"b32_beam4_tok_s": tok_s, "b1_greedy_ms_per_step": statistics.median(one)})
            del translator
            print(f"[shortlist] speed round {round_index + 1} k={k or 'full'}: {samples[k][-1]}", flush=True)
    result = {"model": SYNTHETIC, "threads": threads, "rounds": rounds, "sentences": len(batch),
              "forced_tokens": steps + 1, "sizes": {}}
    for k in models:
        row = {key: statistics.median(s[key] for s in samples[k]) for key in samples[k][0]}
        if k:
            ratios = [s["b32_beam4_tok_s"] / f["b32_beam4_tok_s"] for s, f in zip(samples[k], samples[0])]
            faster = [f["b1_greedy_ms_per_step"] / s["b1_greedy_ms_per_step"] for s, f in zip(samples[k], samples[0])]
            row.update(b32_ratio_median=statistics.median(ratios), b32_ratio_range=[min(ratios), max(ratios)],
                       b1_speedup_median=statistics.median(faster), b1_speedup_range=[min(faster), max(faster)])
        result["sizes"][str(k or "full")] = row
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
        lines += ["## Quality (ct2 int8, every test sentence through `Translator`)", "",
                  f"Shortlist: {s.get('per_token')} per source token, {s.get('always')} always, from "
                  f"{s.get('pairs')} pairs of {', '.join(f'`{d}`' for d in s.get('data') or [])}.", "",
                  "| test set | sentences | candidates (sentence / 32 sentences, of the vocabulary) | beam | "
                  "BLEU full → shortlist | chrF full → shortlist | identical |",
                  "|---|---:|---|---:|---|---|---:|"]
        for name, r in q["sets"].items():
            for beam in (1, 4):
                b = r[f"beam{beam}"]
                lines.append(f"| {name} | {r['sentences']} | {r['candidates_per_sentence_median']:.0f} / "
                             f"{r['candidates_per_32_median']:.0f} of {r['vocabulary']} | {beam} | "
                             f"{b['full']['bleu']:.2f} → {b['shortlist']['bleu']:.2f} | "
                             f"{b['full']['chrf']:.2f} → {b['shortlist']['chrf']:.2f} | {b['identical']:.1%} |")
        for name, r in q["sets"].items():
            if "alone" in r:
                a = r["alone"]
                lines += ["", f"One sentence at a time ({name}, first {a['sentences']} sentences): the shortlist "
                              "keeps only that sentence's candidates.", "",
                          "| beam | BLEU full (batched) | BLEU shortlist alone | identical to full | "
                          "alone differs from batched |", "|---:|---:|---:|---:|---:|"]
                for beam in (1, 4):
                    b = a[f"beam{beam}"]
                    lines.append(f"| {beam} | {b['bleu_full']:.2f} | {b['bleu_shortlist_alone']:.2f} | "
                                 f"{b['identical_to_full']:.1%} | {b['alone_differs_from_batched']:.1%} |")
        lines.append("")
    sp = report.get("speed")
    if sp:
        lines += [f"## Speed at {sp['model']}'s shape (raw CTranslate2 int8, {sp['threads']} threads, "
                  f"{sp['sentences']} synthetic sentences, forced {sp['forced_tokens']} tokens, {sp['rounds']} rounds)",
                  "", "| kept tokens | b32 beam 4 tok/s | vs full (median, min–max) | b1 greedy ms/step | "
                  "b1 speed-up (median, min–max) |", "|---|---:|---|---:|---|"]
        for k, r in sp["sizes"].items():
            ratio = (f"{r['b32_ratio_median']:.2f}x ({r['b32_ratio_range'][0]:.2f}–{r['b32_ratio_range'][1]:.2f})"
                     if "b32_ratio_median" in r else "1.00x")
            b1 = (f"{r['b1_speedup_median']:.2f}x ({r['b1_speedup_range'][0]:.2f}–{r['b1_speedup_range'][1]:.2f})"
                  if "b1_speedup_median" in r else "1.00x")
            lines.append(f"| {k} | {r['b32_beam4_tok_s']:.0f} | {ratio} | {r['b1_greedy_ms_per_step']:.2f} | {b1} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle with a shortlist (quality); none: speed only")
    parser.add_argument("--test", type=Path, action="append", default=[], help="a test TSV (repeatable)")
    parser.add_argument("--alone", type=int, default=400, help="sentences translated one at a time")
    parser.add_argument("--sizes", default="1500,4000,8000", help="kept-token counts for the speed part")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=Path("benchmarks/results/tmp"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from mtedge.bench.machine import describe_machine

    words = argv if argv is not None else sys.argv[1:]
    report = {"machine": describe_machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "python -m benchmarks.suites.shortlist " + " ".join(words)}
    if args.bundle:
        report["quality"] = quality(args.bundle, args.test, args.threads, args.alone)
    if not args.no_speed:
        report["speed"] = speed(args.work_dir, [int(k) for k in args.sizes.split(",")], args.rounds, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(args.out, report, markdown(report))
    print(f"[shortlist] wrote {args.out}/report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
