"""What a search needs from an engine: a decoder that scores the next token of many rows at once.

The searches in this package are engine-agnostic; an engine (ONNX Runtime here, anything else
later) provides one :class:`StepModel` per batch. Rows are hypotheses: at first one row per source
sentence; the search then asks the model to re-arrange them with :meth:`StepModel.select`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class StepModel(Protocol):
    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """Feed ``tokens`` [rows, t] int64 and return the next-token logits [rows, vocab] float32.

        The first call gets one row per source (in batch order) holding the decoder start and
        the forced target prefix (``t = 1 + len(prefix)``); later calls get the one token each
        row chose (``t = 1``). The search may modify the returned array in place.
        """

    def select(self, rows: np.ndarray, sources: np.ndarray) -> None:
        """Re-arrange the decoder state: new row ``i`` continues old row ``rows[i]`` and belongs to
        source sentence ``sources[i]`` (an index into the original batch).

        One call covers a beam reorder (rows repeat or move within a sentence), finished sentences
        leaving (their rows disappear) and the first expansion from one row per source to
        ``beam_size`` rows. ``sources`` lets an engine keep per-source data (the encoder output,
        the cross-attention cache) and re-gather it only when the set of sentences changes.
        """

    # Optional, for an engine that can take the bans, the top k and the log-softmax in its own graph (the ONNX
    # engine's search head); the searches call them only when ``supports_top_k(renormalize)`` says True:
    #   supports_top_k(renormalize: bool) -> bool
    #   vocab_size: int
    #   top_k(tokens, bias [1 or rows, vocab] float32 of 0 / -inf, k) -> (ids [rows, k], log_probs [rows, k]):
    #       the same call as ``logits`` (it feeds ``tokens`` and keeps the state), returning the k best ids of
    #       ``logits + bias`` and their scores as ``mtedge.decoding.logits`` computes them
