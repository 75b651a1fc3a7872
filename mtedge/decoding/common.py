"""Pieces both searches share: length penalty, turning sequences into hypotheses."""

from __future__ import annotations

import numpy as np


# HF beam search marks impossible beams with this score (``_beam_search``: ``-1e9``, float32).
DEAD_SCORE = np.float32(-1.0e9)


def length_divisor(length: int, length_penalty: float) -> np.float32:
    """HF divides by ``length ** length_penalty`` (a Python float, applied to float32 scores)."""
    return np.float32(float(length) ** float(length_penalty))


def output_ids(generated, prefix: tuple[int, ...], eos_id: int) -> list[int]:
    """Generated tokens → ``Hypothesis.ids``: without the forced prefix and the final ``</s>``."""
    ids = [int(t) for t in generated]
    if ids and ids[-1] == eos_id:
        ids.pop()
    forced = min(len(prefix), len(ids))
    if forced and tuple(ids[:forced]) == prefix[:forced]:
        ids = ids[forced:]
    return ids
