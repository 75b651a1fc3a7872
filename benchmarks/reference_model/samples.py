"""Five test sentences translated by a bundle, each beside its reference: what `make demo` shows first, so
that a newcomer sees at once whether the model translates.

    .venv/bin/python -m benchmarks.reference_model.samples export/demo-lora-webui [--engine ct2]

The sentences are fixed (the first lines of each test split that fit on one line), so runs compare.
Uses the runtime API only (no torch).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "benchmarks" / "corpora" / "data"
# (corpus, how many): the general corpora the reference model was trained for, then the LoRA domain
PICKS = (("bible", 2), ("sysmsg", 2), ("webui", 1))
MAX_WORDS = 14


def sample_pairs(corpora: Path = CORPORA) -> list[tuple[str, str, str]]:
    """(corpus, source, reference) for the fixed picks: the first short pairs of each test split."""
    from mtedge.data import read_pairs

    picked = []
    for name, count in PICKS:
        pairs = [p for p in read_pairs(corpora / name / "test.tsv") if 3 <= len(p.src.split()) <= MAX_WORDS]
        picked.extend((name, p.src, p.tgt) for p in pairs[:count])
    return picked


def main() -> None:
    from mtedge import Translator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--engine", default="ct2")
    parser.add_argument("--beam", type=int, default=4)
    args = parser.parse_args()
    picks = sample_pairs()
    with Translator(args.bundle, engine=args.engine) as translator:
        results = translator.translate([src for _, src, _ in picks], beam_size=args.beam)
    print(f"\nfive test sentences, {args.bundle.name} ({args.engine}, beam {args.beam}):")
    for (corpus, src, ref), result in zip(picks, results):
        print(f"\n  [{corpus}] {src}\n    mtedge:    {result.text}\n    reference: {ref}")
    print()


if __name__ == "__main__":
    main()
