"""Normalization and filtering of parallel pairs.

Order: normalize both sides (Unicode NFC, control characters removed, whitespace collapsed), drop pairs
with an empty side, drop pairs outside the word-count window or with a too-uneven length ratio, then drop
exact duplicates (keeping the first occurrence, so the input order decides).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Iterable

from mtedge.data.pairs import Pair

# Invisible format characters that only get in the tokenizer's way: BOM, zero-width space, soft hyphen,
# word joiner. (ZWJ/ZWNJ stay: they change how some scripts and emoji render.)
_INVISIBLE = {"\ufeff", "\u200b", "\u00ad", "\u2060"}


def normalize_text(text: str) -> str:
    """NFC, every whitespace run (tabs, newlines, NBSP...) -> one space, control characters dropped, stripped."""
    text = unicodedata.normalize("NFC", text)
    out = []
    for ch in text:
        if ch.isspace():
            out.append(" ")
        elif ch in _INVISIBLE or unicodedata.category(ch) == "Cc":
            continue
        else:
            out.append(ch)
    return " ".join("".join(out).split())


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
