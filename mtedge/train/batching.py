"""Token-budget batches for training: pairs of similar length together, a fixed budget of padded tokens.

Deterministic for a seed and an epoch, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import random


def token_budget_batches(lengths: list[tuple[int, int]], batch_tokens: int, max_batch_size: int = 512
                         ) -> list[list[int]]:
    """Group indices so that ``batch size * (longest source + longest target)`` stays within
    ``batch_tokens`` (padding counted: that is what the forward pass costs)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i][0] + lengths[i][1], i))
    batches, current, widest = [], [], 0
    for index in order:
        width = lengths[index][0] + lengths[index][1]
        grown = max(widest, width)
        if current and (grown * (len(current) + 1) > batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current, grown = [], width
        current.append(index)
        widest = grown
    if current:
        batches.append(current)
    return batches


def epoch_order(n_batches: int, seed: int, epoch: int) -> list[int]:
    """The order batches are visited in one epoch (shuffled, reproducible)."""
    order = list(range(n_batches))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order
