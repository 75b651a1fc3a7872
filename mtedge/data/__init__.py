"""Parallel data: read (TSV, JSONL, gettext .po/.mo, aligned text), clean, split, write.

Stdlib only (polib for gettext). No torch: the CLI and the bench load data through here.
"""

from __future__ import annotations

from pathlib import Path

from mtedge.data.clean import CleanStats, clean_pairs, clean_pairs_with_stats, normalize_text
from mtedge.data.pairs import Pair
from mtedge.data.readers import FORMATS, detect_format, read_eval_pairs, read_pairs, read_tsv, write_tsv
from mtedge.data.split import Splits, split_pairs
from mtedge.errors import DataError

__all__ = [
    "FORMATS", "CleanStats", "DataError", "Pair", "Splits", "clean_pairs", "clean_pairs_with_stats",
    "detect_format", "load_pairs", "normalize_text", "read_eval_pairs", "read_pairs", "read_tsv", "split_pairs",
    "write_tsv",
]

_CLEAN_OPTIONS = ("min_words", "max_words", "max_ratio", "dedupe")


def load_pairs(path: str | Path, **kw) -> list[Pair]:
    """:func:`read_pairs` then :func:`clean_pairs`; keyword options go to whichever takes them.

    Raises :class:`DataError` when nothing is left, saying how many pairs were read and what dropped them.
    """
    clean_kw = {k: kw.pop(k) for k in _CLEAN_OPTIONS if k in kw}
    raw = read_pairs(path, **kw)
    pairs, stats = clean_pairs_with_stats(raw, **clean_kw)
    if not pairs:
        where = f"{path} + {kw['target_path']}" if kw.get("target_path") else str(path)
        if not stats.read:
            # say so plainly rather than "the filters dropped 0"
            raise DataError(f"no pairs in {where}: an empty file, or a catalog with no translated entries")
        raise DataError(
            f"no usable pairs in {where}: read {stats.read}, the filters dropped {stats.dropped} "
            f"({stats.describe()})"
        )
    return pairs
