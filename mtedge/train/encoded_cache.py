"""The training pairs' token ids, kept in the run directory so that a resumed run does not tokenize again.

Encoding 352k pairs with the slow (sentencepiece) Marian tokenizer took ~5 minutes on a 2-core AMD EPYC,
at every start and every resume of the reference model's run. The cache is keyed by what decides the ids —
the pairs themselves, the tokenizer's files and the length limits — so a changed corpus, tokenizer or
limit re-encodes instead of training on stale ids. A missing or unreadable cache is simply rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

CACHE_NAME = "encoded_train.npz"


def fingerprint(pairs: list[tuple[str, str]], tokenizer_files: list[Path], limits: tuple[int, int]) -> str:
    digest = hashlib.sha256(json.dumps(limits).encode())
    for path in sorted(tokenizer_files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for src, tgt in pairs:
        digest.update(src.encode("utf-8", "surrogatepass") + b"\t" + tgt.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")  # beside a tokenizer in a model dir; not its files


def tokenizer_files(tokenizer) -> list[Path]:
    """The files a Hugging Face tokenizer was loaded from (its directory), or none when it has no directory."""
    directory = Path(getattr(tokenizer, "name_or_path", "") or "")
    if not directory.is_dir():
        return []
    return [p for p in directory.iterdir() if p.is_file() and not p.name.endswith(WEIGHT_SUFFIXES)]


def load_or_encode(cache_dir: Path, pairs: list[tuple[str, str]], tokenizer, limits: tuple[int, int],
                   encode: Callable[[], list[tuple[list[int], list[int]]]]) -> list[tuple[list[int], list[int]]]:
    """The ids of ``pairs`` from ``cache_dir/encoded_train.npz`` when it was written for exactly these pairs,
    tokenizer files and ``limits``; otherwise ``encode()`` them and write the cache."""
    import numpy as np

    files = tokenizer_files(tokenizer)
    if not files:  # nothing to key the cache on: never reuse ids of an unknown tokenizer
        return encode()
    key = fingerprint(pairs, files, limits)
    path = Path(cache_dir) / CACHE_NAME
    try:
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["key"]) == key:
                return _unpack(cached)
    except (OSError, KeyError, ValueError):
        pass
    encoded = encode()
    _write(path, key, encoded)
    return encoded


def _unpack(cached) -> list[tuple[list[int], list[int]]]:
    ids, src_len, tgt_len = cached["ids"].tolist(), cached["src_len"].tolist(), cached["tgt_len"].tolist()
    out, at = [], 0
    for s, t in zip(src_len, tgt_len):
        out.append((ids[at:at + s], ids[at + s:at + s + t]))
        at += s + t
    return out


def _write(path: Path, key: str, encoded: list[tuple[list[int], list[int]]]) -> None:
    import numpy as np

    flat = [i for src, tgt in encoded for i in (*src, *tgt)]
    dtype = np.uint16 if flat and max(flat) < 2**16 and min(flat) >= 0 else np.int64
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")  # np.savez adds .npz to names without it
    np.savez(partial, key=np.array(key), ids=np.array(flat, dtype=dtype),
             src_len=np.array([len(s) for s, _ in encoded], dtype=np.int32),
             tgt_len=np.array([len(t) for _, t in encoded], dtype=np.int32))
    partial.replace(path)
