"""The vocabulary shortlist at run time: the file that says which target tokens each source token may bring
(CTranslate2's ``vmap.txt``, built by ``mtedge shortlist``: mtedge/convert/shortlist.py), and the ONNX engine's
side of it.

CTranslate2 reads the file itself (``use_vmap``). For the ONNX engine the lean decoder carries a second output
layer, chosen per call by :data:`MODE_INPUT` (mtedge/convert/lean_decoder.py): the logits of the batch's
candidate ids only (:data:`ROWS_INPUT`, ascending), from those rows of the output layer, which the first step
gathers once (:data:`HEAD_OUTPUT`) and every later step reads back (:data:`HEAD_INPUT`), then
the search head (bans, top k, log-softmax) over those columns. Unlike CTranslate2, which scores the union of
the batch's candidates for every sentence, each row is limited to its own sentence's candidates by a 0/-inf
:data:`MASK_INPUT` added before the log-softmax, so a sentence translates the same alone and in any batch.

The runtime path: numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtedge.errors import BundleError

MODE_INPUT = "shortlist_mode"            # bool [1]: score the candidates only (default False: every id)
ROWS_INPUT = "shortlist_rows"            # int64 [k]: the batch's candidate ids, ascending (the columns scored)
HEAD_INPUT = "shortlist_head"            # [d, k]: the output layer's rows of those ids (int8 in the 8-bit GEMM
                                         # graph, mtedge/convert/rowwise_int8.py; float32 elsewhere)
HEAD_OUTPUT = "present.shortlist_head"   # the same, computed by the first step (fed back as HEAD_INPUT)
MASK_INPUT = "shortlist_mask"            # float32 [1 or rows, k]: 0, or -inf where a row's sentence lacks the id
INPUTS = (MODE_INPUT, ROWS_INPUT, HEAD_INPUT, MASK_INPUT)
NEG_INF = np.float32(-np.inf)


@dataclass
class VocabularyMap:
    """What a shortlist keeps: ``always`` (target pieces) and ``candidates`` (source piece -> target pieces,
    best first), with the settings it was built with."""

    always: list[str]
    candidates: dict[str, list[str]]
    settings: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        """CTranslate2's ``vmap.txt``: the always-kept tokens on the line with an empty source, then one line
        per source token."""
        out = ["\t" + " ".join(self.always)]
        out += [f"{source}\t{' '.join(targets)}" for source, targets in self.candidates.items()]
        return out

    def write(self, path: Path) -> None:
        path.write_text("\n".join(self.lines()) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> "VocabularyMap":
        """A ``vmap.txt`` as :meth:`write` writes it (the settings are in the manifest, not the file)."""
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        always = lines[0].split("\t")[1].split(" ") if lines and lines[0].startswith("\t") else []
        rules = (line.split("\t") for line in lines[1:] if "\t" in line)
        return cls(always, {source: targets.split(" ") for source, targets in rules})


class CandidateTable:
    """A vocabulary map in token ids: the ids every sentence keeps (the map's ``always`` line plus ``keep``:
    the ids a search may be forced to produce, such as ``</s>``) and, per source id, its candidate ids."""

    def __init__(self, vmap: VocabularyMap, vocab: dict[str, int], keep: Iterable[int] = ()):
        def ids(pieces: Iterable[str]) -> np.ndarray:
            return np.array(sorted({vocab[piece] for piece in pieces if piece in vocab}), np.int64)

        self.always = np.union1d(ids(vmap.always), np.asarray(list(keep), np.int64))
        self.by_source = {vocab[source]: ids(targets) for source, targets in vmap.candidates.items()
                          if source in vocab}
        self.vocab_size = len(vocab)

    @classmethod
    def load(cls, path: Path, vocab: dict[str, int], keep: Iterable[int] = ()) -> "CandidateTable":
        try:
            return cls(VocabularyMap.read(path), vocab, keep)
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise BundleError(f"cannot read the vocabulary shortlist {path}: {exc}") from None

    def candidates(self, source_ids: Iterable[int]) -> np.ndarray:
        """The ids a sentence with these source ids may generate, ascending."""
        lists = [self.by_source[i] for i in set(source_ids) if i in self.by_source]
        return np.unique(np.concatenate([self.always, *lists])) if lists else self.always


class BatchShortlist:
    """One batch's shortlist on the ONNX engine: the columns scored (every sentence's candidates together, at
    least ``min_columns`` of them: the search's top k must exist), each sentence's mask over them, the output
    layer's rows once the first step has gathered them, and the mapping of the search's bias and of the
    chosen columns between ids and columns."""

    def __init__(self, table: CandidateTable, sources: Sequence[Sequence[int]], min_columns: int):
        own = [table.candidates(ids) for ids in sources]
        columns = np.unique(np.concatenate(own))
        if columns.size < min_columns:   # a tiny map: fill with the lowest ids it lacks
            spare = np.setdiff1d(np.arange(min(table.vocab_size, min_columns + columns.size)), columns)
            columns = np.union1d(columns, spare[:min_columns - columns.size])
        self.columns = columns
        self.head: np.ndarray | None = None
        self.source_mask = None   # [sources, k]; None when every sentence keeps every column
        if any(ids.size != columns.size for ids in own):
            self.source_mask = np.full((len(own), columns.size), NEG_INF, np.float32)
            for source, ids in enumerate(own):
                self.source_mask[source, np.searchsorted(columns, ids)] = 0.0
        self._row_mask: tuple[np.ndarray, np.ndarray] | None = None   # (row sources, mask) of the last step
        self._bias: tuple[np.ndarray, np.ndarray] | None = None        # (the search's bias, its columns)
        self._mode = np.array([True])

    def feeds(self, row_sources: np.ndarray) -> dict:
        """The shortlist inputs of a step whose rows belong to ``row_sources``."""
        feeds = {MODE_INPUT: self._mode, ROWS_INPUT: self.columns}
        if self.head is not None:
            feeds[HEAD_INPUT] = self.head
        if self.source_mask is not None:
            if self._row_mask is None or not np.array_equal(self._row_mask[0], row_sources):
                # one array while the rows' sentences stay the same: a bound input is not bound again
                self._row_mask = (np.array(row_sources), self.source_mask[row_sources])
            feeds[MASK_INPUT] = self._row_mask[1]
        return feeds

    def bias(self, bias: np.ndarray) -> np.ndarray:
        """The search's bias [1 or rows, vocab] at the scored columns; the same array for the same bias (the
        search keeps its shared bias between steps)."""
        if self._bias is None or self._bias[0] is not bias:
            self._bias = (bias, np.ascontiguousarray(bias[:, self.columns]))
        return self._bias[1]

    def ids(self, chosen_columns: np.ndarray) -> np.ndarray:
        return self.columns[chosen_columns]
