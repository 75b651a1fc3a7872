"""Shared by the gettext recipes: pairs from a set of catalog files, in a stable order."""

from __future__ import annotations

from pathlib import Path

from benchmarks.corpora.common import sha256_file
from mtedge.data import Pair, read_pairs


def catalog_pairs(files: list[tuple[str, Path]]) -> tuple[list[Pair], list[dict]]:
    """Pairs of every catalog, ordered by its label; plus a record (label, pairs, sha256) per catalog."""
    pairs: list[Pair] = []
    records = []
    for label, path in sorted(files, key=lambda item: item[0]):
        found = read_pairs(path)
        pairs.extend(found)
        records.append({"file": label, "pairs": len(found), "sha256": sha256_file(path)})
    return pairs, records
