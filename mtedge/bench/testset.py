"""The sentences a benchmark translates: a parallel test file, plain sources, or synthetic text."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from mtedge.data import load_pairs
from mtedge.errors import DataError, UserError


@dataclass
class TestSet:
    sources: list[str]
    references: list[str] | None   # None: no references, quality columns are n/a
    origin: str                    # what it was read from, for the report

    __test__ = False  # not a pytest class


def _looks_parallel(path: Path, lines: list[str]) -> bool:
    if path.suffix.lower() in {".jsonl", ".json"}:
        return True
    return any("\t" in line for line in lines)


def load_test_set(path: str | Path, limit: int | None = None) -> TestSet:
    """TSV/JSONL with references (read and cleaned by ``mtedge.data.load_pairs``) or a plain text file of
    sources."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"test file not found: {path}")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from None
    if not lines:
        raise DataError(f"test file {path} is empty")
    if _looks_parallel(path, lines):
        pairs = load_pairs(path)  # raises DataError, naming the file, when no pair is left
        if limit:
            pairs = pairs[:limit]
        return TestSet([s for s, _ in pairs], [t for _, t in pairs], str(path))
    sources = [line.strip() for line in lines]
    return TestSet(sources[:limit] if limit else sources, None, str(path))


_WORDS = ("the time people year way day man thing woman life child world school state family student "
          "group country problem hand part place case week company system program question work "
          "government number night point home water room mother area money story fact month lot "
          "right study book eye job word business issue side kind head house service friend father "
          "power hour game line end member law car city community name president team minute idea "
          "is was has had will can would could should makes takes gives finds tells asks works seems "
          "feels tries leaves calls good new first last long great little own other old right big "
          "high different small large next early young important few public bad same able").split()


def synthetic_sources(n: int, words: int = 20, seed: int = 0) -> list[str]:
    """Deterministic English-like sentences of a fixed word count (speed runs need no meaning)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "." for _ in range(n)]
