"""The unit of parallel data: one source sentence and its translation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    """A source sentence and its reference translation."""

    src: str
    tgt: str
