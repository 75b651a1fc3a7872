"""A vocabulary shortlist for a bundle: which target tokens each source token may bring, from parallel data.

A decoder step computes one logit per vocabulary entry; at batch 1 the output layer is most of the bytes a
step reads (opus-mt's shape: 30 of 51 MB at int8), and at batch 32 beam 4 it is the largest GEMM. A
shortlist limits the output layer to the tokens a sentence can plausibly need: the ``always`` most frequent
target tokens, plus, for every token of the batch's sources, the ``per_token`` target tokens that most often
appear in the translations of sentences containing it. This is CTranslate2's "vocabulary mapping" (its
``use_vmap`` option, the file ``vmap.txt`` in the model directory, one ``source<TAB>target target ...`` line per
source token; the line with an empty source lists the tokens always kept; the ONNX engine reads the same file,
mtedge/engines/shortlist.py) and, in spirit, Marian's lexical
shortlist, which ranks by word-alignment probabilities; here the ranking is by co-occurrence,
P(t in target | s in source), counted over sentence pairs, which needs no aligner. The tokens kept for
everyone are not ranked again per source token, so each token's list holds what is specific to it.

Measured on the reference model (mtedge/DESIGN.md §4.19): with 100 per token and 500 always, greedy output
was identical to the full vocabulary's for 99.3-100% of the test sentences, and BLEU moved by -0.27 to +0.10.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mtedge.bundle import SHORTLIST_FILE, Bundle, describe_files, sha256_file, write_manifest
from mtedge.engines.shortlist import VocabularyMap
from mtedge.errors import DataError, UserError

DEFAULT_PER_TOKEN = 100
DEFAULT_ALWAYS = 500
DEFAULT_MIN_COUNT = 2   # a pair seen once is as likely noise as a translation
_MERGE_EVERY = 4_000_000   # (source, target) codes held before they are summed (memory stays bounded)


def _writable(piece: str) -> bool:
    # the file separates pieces by spaces and sources from targets by a tab (sentencepiece writes a space
    # as U+2581, so no real piece has one; a user-defined symbol might)
    return bool(piece) and not any(ch.isspace() for ch in piece)


class _PairCounter:
    """Sentence-level counts: how many pairs hold target piece t, and source piece s with t (sparse)."""

    def __init__(self, vocab_size: int):
        self.size = vocab_size
        self.target = np.zeros(vocab_size, np.int64)
        self.pending: list[np.ndarray] = []
        self.pending_size = 0
        self.codes = np.zeros(0, np.int64)    # s * size + t, sorted, with
        self.counts = np.zeros(0, np.int64)   # how many pairs hold both
        self.pairs = 0

    def add(self, source_ids: np.ndarray, target_ids: np.ndarray) -> None:
        s, t = np.unique(source_ids), np.unique(target_ids)
        if not s.size or not t.size:
            return
        self.pairs += 1
        self.target[t] += 1
        self.pending.append((s[:, None] * self.size + t[None, :]).ravel())
        self.pending_size += s.size * t.size
        if self.pending_size >= _MERGE_EVERY:
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        new, counts = np.unique(np.concatenate(self.pending), return_counts=True)
        self.pending, self.pending_size = [], 0
        # into the sorted codes held so far: add to the codes seen before, insert the others (no re-sort)
        at = np.searchsorted(self.codes, new)
        seen = at < self.codes.size
        seen[seen] = self.codes[at[seen]] == new[seen]
        self.counts[at[seen]] += counts[seen]
        self.codes = np.insert(self.codes, at[~seen], new[~seen])
        self.counts = np.insert(self.counts, at[~seen], counts[~seen])

    def joint(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(source ids, target ids, counts)`` of every pair of pieces seen together."""
        self._merge()
        return self.codes // self.size, self.codes % self.size, self.counts


def build_vocabulary_map(pairs: Iterable[tuple[str, str]], tokenizer, *, per_token: int = DEFAULT_PER_TOKEN,
                         always: int = DEFAULT_ALWAYS, min_count: int = DEFAULT_MIN_COUNT) -> VocabularyMap:
    """Count ``pairs`` (source, target text) through the bundle ``tokenizer`` and keep, per source piece, the
    ``per_token`` target pieces with the highest P(t | s) seen in at least ``min_count`` pairs (the ``always``
    most frequent target pieces apart, which every batch keeps)."""
    for name, value, least in (("per_token", per_token, 1), ("always", always, 0), ("min_count", min_count, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise UserError(f"{name} must be an integer >= {least}, got {value!r}")
    size = len(tokenizer.pieces)
    counter = _PairCounter(size)
    for source, target in pairs:
        counter.add(np.asarray(tokenizer.encode(source), np.int64),
                    np.asarray(tokenizer.pieces_to_ids(tokenizer.target_pieces(target)), np.int64))
    if not counter.pairs:
        raise DataError("no sentence pairs to count: a shortlist needs parallel data")
    pieces = tokenizer.pieces
    unknown = tokenizer.unk_id
    writable = np.array([_writable(piece) for piece in pieces])
    frequent = [int(i) for i in np.argsort(-counter.target, kind="stable")
                if counter.target[i] > 0 and i != unknown and writable[i]][:always]
    kept = np.zeros(size, bool)
    kept[frequent] = True
    s, t, both = counter.joint()
    useful = (both >= min_count) & ~kept[t] & (t != unknown) & writable[t] & writable[s]
    s, t, both = s[useful], t[useful], both[useful]
    # best first within each source piece: by P(t|s) = both / count(s), i.e. by `both`; ties by target id
    order = np.lexsort((t, -both, s))
    s, t = s[order], t[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if s.size else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], s.size]
    candidates = {}
    for start, end in zip(starts, ends):
        candidates[pieces[s[start]]] = [pieces[i] for i in t[start:min(end, start + per_token)]]
    settings = {"per_token": per_token, "always": always, "min_count": min_count, "pairs": counter.pairs,
                "source_tokens_mapped": len(candidates)}
    return VocabularyMap([pieces[i] for i in frequent], candidates, settings)


def coverage(vmap: VocabularyMap, pairs: Iterable[tuple[str, str]], tokenizer) -> dict:
    """How well ``vmap`` covers held-out ``pairs``: the share of their reference target tokens that are in their
    own sentence's candidates (what that sentence alone may generate; a batch only adds to it), and the share of
    sentences whose every reference token is. Reference pieces the vocabulary lacks are not counted (no list
    can hold them)."""
    pieces = tokenizer.pieces
    base = set(vmap.always) | {pieces[tokenizer.eos_id], pieces[tokenizer.unk_id]}
    known = set(tokenizer.vocab)
    tokens = hits = sentences = whole = 0
    for source, target in pairs:
        kept = base.union(*(vmap.candidates.get(piece, ()) for piece in tokenizer.source_tokens(source)))
        wanted = [piece for piece in tokenizer.target_pieces(target) if piece in known]
        found = sum(piece in kept for piece in wanted)
        tokens, hits = tokens + len(wanted), hits + found
        sentences, whole = sentences + 1, whole + (found == len(wanted))
    if not sentences:
        raise DataError("no sentence pairs to check the shortlist against")
    return {"pairs": sentences, "token_coverage": round(hits / max(tokens, 1), 4),
            "sentences_covered": round(whole / sentences, 4)}


def shortlist_readers(manifest: dict) -> list[tuple[str, str]]:
    """The ``(engine, precision)`` directories of a bundle whose engine reads a shortlist: every CTranslate2 one,
    and the ONNX ones whose decoder has the shortlist's output layer (mtedge/engines/shortlist.py)."""
    engines = manifest.get("engines") or {}
    return [("ct2", precision) for precision in engines.get("ct2") or {}] + \
        [("onnx", precision) for precision, record in (engines.get("onnx") or {}).items()
         if (record.get("options") or {}).get("shortlist_head")]


def add_shortlist(bundle_path: str | Path, data: str | Path | Sequence[str | Path], *,
                  per_token: int = DEFAULT_PER_TOKEN, always: int = DEFAULT_ALWAYS, min_count: int = DEFAULT_MIN_COUNT,
                  check: str | Path | None = None, log=print) -> dict:
    """Build a shortlist from the parallel file(s) ``data`` and write it into every engine directory that reads
    one (``vmap.txt``, where CTranslate2 looks for it: :func:`shortlist_readers`); the manifest lists the file in
    those directories and records how it was built under ``shortlist`` (with its :func:`coverage` of the
    held-out pairs ``check``). Returns that record."""
    from mtedge.data import read_pairs
    from mtedge.tokenizer import BundleTokenizer

    bundle = Bundle.open(bundle_path)
    readers = shortlist_readers(bundle.manifest)
    if not readers:
        raise UserError(f"bundle {bundle.name} has no engine that reads a shortlist: it has "
                        f"{', '.join(bundle.engines())}, and a shortlist needs CTranslate2 or mtedge's lean ONNX "
                        f"decoder (re-export with --engines ct2, or with this mtedge's ONNX export)")
    tokenizer = BundleTokenizer(bundle.tokenizer_dir())
    files = [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
    if not files:
        raise UserError("a shortlist needs parallel data: give at least one file")
    pairs = [pair for path in files for pair in read_pairs(path)]
    log(f"[shortlist] counting {len(pairs)} sentence pairs of {', '.join(map(str, files))}")
    vmap = build_vocabulary_map(pairs, tokenizer, per_token=per_token,
                                always=always, min_count=min_count)
    checked = None
    if check is not None:   # before anything is written: a bad file leaves the bundle as it was
        checked = {"data": str(check), **coverage(vmap, read_pairs(check), tokenizer)}
        log(f"[shortlist] {check}: {checked['token_coverage']:.1%} of the reference tokens are in their sentence's "
            f"list; every token of {checked['sentences_covered']:.1%} of the {checked['pairs']} sentences")
    for engine, precision in readers:   # names a broken directory before anything is written into one
        bundle.engine_dir(engine, precision)
    manifest = json.loads(bundle.manifest_path.read_text(encoding="utf-8"))
    for engine, precision in readers:
        record = manifest["engines"][engine][precision]
        directory = bundle.path / record["dir"]
        vmap.write(directory / SHORTLIST_FILE)
        record["files"] = describe_files(directory)
        record["size_bytes"] = sum(f["size"] for f in record["files"].values())
        log(f"[shortlist] wrote {record['dir']}/{SHORTLIST_FILE}")
    manifest["shortlist"] = {"file": SHORTLIST_FILE, "engines": sorted({engine for engine, _ in readers}),
                             "data": [str(path) for path in files],
                             "data_sha256": [sha256_file(path) for path in files], **vmap.settings}
    if checked:
        manifest["shortlist"]["check"] = checked
    write_manifest(bundle.path, manifest)
    return manifest["shortlist"]
