"""The unit of parallel data: one source sentence and its translation."""

from __future__ import annotations

from typing import NamedTuple


class Pair(NamedTuple):
    """A source sentence and its reference translation.

    A named tuple, so callers that want plain ``(src, tgt)`` tuples (the bench, sacrebleu glue) can unpack
    it (``for src, tgt in pairs``) without converting, and it is hashable for deduplication.
    """

    src: str
    tgt: str
