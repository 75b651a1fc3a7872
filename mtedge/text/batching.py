"""Token-budget batching: group segments so that each batch's padded size stays under a budget.

Segments are sorted by length (longest first, so the first batch shows the worst-case memory at
once), batched while ``longest × count`` stays within ``batch_tokens``; the caller restores the
input order from the returned indices. A segment longer than the budget gets a batch of its own.
"""

from __future__ import annotations


def token_budget_batches(lengths: list[int], batch_tokens: int, max_batch_size: int | None = None, *,
                         longest_first: bool = True) -> list[list[int]]:
    """Indices into ``lengths``, grouped into batches of at most ``batch_tokens`` padded tokens.
    ``longest_first=False`` (training) batches from the shortest up; ties keep the input order."""
    if batch_tokens < 1:
        raise ValueError("batch_tokens must be at least 1")
    sign = -1 if longest_first else 1
    order = sorted(range(len(lengths)), key=lambda i: (sign * lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        width = max(longest, lengths[index], 1)
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (width * (len(current) + 1) > batch_tokens or full):
            batches.append(current)
            current, width = [], max(lengths[index], 1)
        current.append(index)
        longest = width
    if current:
        batches.append(current)
    return batches
