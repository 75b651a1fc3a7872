"""Token-budget batches for training: pairs of similar length together, a fixed budget of padded tokens.

Deterministic for a seed and an epoch, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import random

from mtedge.text.batching import token_budget_batches


def pair_batches(lengths: list[tuple[int, int]], batch_tokens: int, max_batch_size: int = 512) -> list[list[int]]:
    """Group indices so that ``batch size * (longest source + longest target)`` stays within
    ``batch_tokens`` (padding counted: that is what the forward pass costs); shortest first, so a
    resumed run with the same data sees the same batches."""
    return token_budget_batches([src + tgt for src, tgt in lengths], batch_tokens, max_batch_size,
                                longest_first=False)


def epoch_order(n_batches: int, seed: int, epoch: int) -> list[int]:
    """The order batches are visited in one epoch (shuffled, reproducible)."""
    order = list(range(n_batches))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order
