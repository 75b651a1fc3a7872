"""Training and dev data for the training commands: several files per role, cleaned, with provenance."""

from __future__ import annotations

from pathlib import Path

from mtedge.bundle import sha256_file
from mtedge.data import load_pairs
from mtedge.errors import DataError


def load_files(paths, role: str) -> tuple[list[tuple[str, str]], list[dict]]:
    """Pairs from every file (TSV/JSONL/.po/.mo, see ``mtedge.data``) and a record of each file.

    Dev files are interleaved round-robin, so that an evaluation capped at N sentences samples every
    file rather than only the first one.
    """
    if not paths:
        raise DataError(f"no {role} file given")
    per_file, records = [], []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{role} file not found: {path}")
        if path.stat().st_size == 0:
            raise DataError(f"{role} file {path} is empty")
        pairs = [(p.src, p.tgt) for p in load_pairs(path)]
        per_file.append(pairs)
        records.append({"path": str(path), "sha256": sha256_file(path), "pairs": len(pairs)})
    if role == "dev":
        merged = [pairs[i] for i in range(max(len(p) for p in per_file)) for pairs in per_file if i < len(pairs)]
    else:
        merged = [pair for pairs in per_file for pair in pairs]
    return merged, records


def drop_held_out_sources(pairs, held_out_paths) -> tuple[list[tuple[str, str]], dict]:
    """``pairs`` without those whose source sentence occurs in any held-out file, and a record of what went:
    a test sentence seen in training (say, a UI string shared by two catalogs) would flatter its score."""
    held, records = set(), []
    for path in held_out_paths:
        held_pairs, file_records = load_files([path], "excluded")
        held.update(src for src, _ in held_pairs)
        records.extend(file_records)
    kept = [pair for pair in pairs if pair[0] not in held]
    return kept, {"files": records, "dropped_training_pairs": len(pairs) - len(kept)}
