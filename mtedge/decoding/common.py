"""Pieces both searches share: option checks, length penalty, turning sequences into hypotheses."""

from __future__ import annotations

import numpy as np

from mtedge.engines.base import DecodeOptions
from mtedge.errors import UserError

# HF beam search marks impossible beams with this score (``_beam_search``: ``-1e9``, float32).
DEAD_SCORE = np.float32(-1.0e9)


def check_options(options: DecodeOptions) -> None:
    if options.beam_size < 1:
        raise UserError(f"beam_size must be at least 1, got {options.beam_size}")
    if options.max_length < 1:
        raise UserError(f"max_length must be at least 1 (it counts </s>), got {options.max_length}")
    if options.min_length < 0:
        raise UserError(f"min_length must not be negative, got {options.min_length}")
    if options.num_hypotheses < 1:
        raise UserError(f"num_hypotheses must be at least 1, got {options.num_hypotheses}")
    if options.num_hypotheses > options.beam_size:
        raise UserError(f"num_hypotheses ({options.num_hypotheses}) cannot exceed beam_size "
                        f"({options.beam_size})")


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
