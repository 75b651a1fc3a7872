"""Normalization and filtering of parallel pairs.

Order: normalize both sides (Unicode NFC, control characters removed, whitespace collapsed), drop pairs
with an empty side, drop pairs outside the word-count window or with a too-uneven length ratio, then drop
exact duplicates (keeping the first occurrence, so the input order decides).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Iterable

from mtedge.data.pairs import Pair
from mtedge.text.clean import clean_text

# Invisible format characters that only get in the tokenizer's way: BOM, zero-width space, soft hyphen,
# word joiner. (ZWJ/ZWNJ stay: they change how some scripts and emoji render.)
_INVISIBLE = {"\ufeff", "\u200b", "\u00ad", "\u2060"}


def normalize_text(text: str) -> str:
    """NFC, then the runtime's :func:`mtedge.text.clean_text` (control characters, BOM, lone surrogates),
    then what only training data gets: invisible format characters dropped, every whitespace run (tabs,
    NBSP...) -> one space, stripped. The runtime stops at clean_text because a translation must see the
    text the HF tokenizer would see; training pairs are ours to normalize."""
    text = clean_text(unicodedata.normalize("NFC", text))  # NFC first: a dropped control keeps marks apart
    return " ".join("".join(ch for ch in text if ch not in _INVISIBLE).split())


@dataclass
class CleanStats:
    """How many pairs each filter dropped (in the order the filters run)."""

    read: int = 0
    empty: int = 0
    too_short: int = 0
    too_long: int = 0
    ratio: int = 0
    duplicate: int = 0
    kept: int = 0

    @property
    def dropped(self) -> int:
        return self.read - self.kept

    def describe(self) -> str:
        parts = [f"{n} {name.replace('_', ' ')}" for name, n in self._reasons().items() if n]
        return ", ".join(parts) if parts else "none"

    def _reasons(self) -> dict[str, int]:
        return {"empty": self.empty, "too_short": self.too_short, "too_long": self.too_long,
                "ratio": self.ratio, "duplicate": self.duplicate}


def clean_pairs_with_stats(
    pairs: Iterable[Pair], *, min_words: int = 1, max_words: int = 200, max_ratio: float = 3.0,
    dedupe: bool = True,
) -> tuple[list[Pair], CleanStats]:
    """Like :func:`clean_pairs`, and also say how many pairs each filter dropped."""
    stats = CleanStats()
    seen: set[Pair] = set()
    kept: list[Pair] = []
    for pair in pairs:
        stats.read += 1
        src, tgt = normalize_text(pair.src), normalize_text(pair.tgt)
        if not src or not tgt:
            stats.empty += 1
            continue
        n_src, n_tgt = len(src.split()), len(tgt.split())
        if min(n_src, n_tgt) < min_words:
            stats.too_short += 1
            continue
        if max(n_src, n_tgt) > max_words:
            stats.too_long += 1
            continue
        if max(n_src, n_tgt) / min(n_src, n_tgt) > max_ratio:
            stats.ratio += 1
            continue
        clean = Pair(src, tgt)
        if dedupe:
            if clean in seen:
                stats.duplicate += 1
                continue
            seen.add(clean)
        kept.append(clean)
    stats.kept = len(kept)
    return kept, stats


def clean_pairs(
    pairs: Iterable[Pair], *, min_words: int = 1, max_words: int = 200, max_ratio: float = 3.0,
    dedupe: bool = True,
) -> list[Pair]:
    """Normalize and filter pairs.

    - ``min_words``/``max_words``: bounds on each side's whitespace word count.
    - ``max_ratio``: longest side / shortest side, in words.
    - ``dedupe``: drop exact (normalized) duplicate pairs, keeping the first.
    """
    kept, _ = clean_pairs_with_stats(pairs, min_words=min_words, max_words=max_words,
                                     max_ratio=max_ratio, dedupe=dedupe)
    return kept
