"""Deterministic train/dev/test splits, optionally holding out whole groups (chapters, documents)."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

from mtedge.data.pairs import Pair
from mtedge.errors import DataError


@dataclass(frozen=True)
class Splits:
    """Train/dev/test pairs. Unpacks as ``train, dev, test = splits``.

    ``leaked_from_train``: training pairs dropped because their source sentence is also in dev or test
    (and dev pairs whose source is in test) — a test sentence seen in training would flatter the scores.
    """

    train: list[Pair]
    dev: list[Pair]
    test: list[Pair]
    leaked_from_train: int = field(default=0, compare=False)

    def __iter__(self):
        return iter((self.train, self.dev, self.test))


def _groups_in_order(n: int, group_key: Callable[[int], Hashable] | None) -> list[list[int]]:
    if group_key is None:
        return [[i] for i in range(n)]
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i in range(n):
        groups[group_key(i)].append(i)
    return list(groups.values())  # insertion order: first appearance, so independent of hash seeds


def _assign_groups(groups: list[list[int]], wanted: dict[str, int]) -> dict[str, list[int]]:
    """Fill each held-out split from the shuffled groups.

    First pass: a group joins a split only if it keeps it within 5% over its size (so one 176-verse chapter
    cannot turn a 500-pair dev set into 650). Second pass, for a split still short (few, large groups):
    take the next groups even if they overshoot.
    """
    chosen: dict[str, list[int]] = {name: [] for name in wanted}
    train: list[list[int]] = []
    for group in groups:
        for name, size in wanted.items():
            if len(chosen[name]) < size and len(chosen[name]) + len(group) <= size + size // 20:
                chosen[name].extend(group)
                break
        else:
            train.append(group)
    rest: list[list[int]] = []
    for group in train:
        name = next((n for n, size in wanted.items() if len(chosen[n]) < size), None)
        if name is None:
            rest.append(group)
        else:
            chosen[name].extend(group)
    chosen["train"] = [i for group in rest for i in group]
    return chosen


def split_pairs(
    pairs: Sequence[Pair], *, dev: int, test: int, seed: int = 0,
    group_key: Callable[[int], Hashable] | None = None, drop_leaks: bool = True,
) -> Splits:
    """Split ``pairs`` into train/dev/test, the same way every time for the same ``seed``.

    Without ``group_key`` exactly ``test`` and ``dev`` pairs are drawn at random. With ``group_key``
    (pair index -> group id) whole groups are drawn until each held-out split has its size, within 5% over
    it where the group sizes allow. Each split keeps the input order. With ``drop_leaks`` (the default),
    pairs whose source also occurs in a later held-out split are removed (train vs dev+test, dev vs test).
    """
    if dev < 0 or test < 0:
        raise DataError(f"split sizes must not be negative (dev={dev}, test={test})")
    if dev + test >= len(pairs):
        raise DataError(f"cannot hold out dev={dev} + test={test} pairs from {len(pairs)}: nothing left to train on")
    groups = _groups_in_order(len(pairs), group_key)
    random.Random(seed).shuffle(groups)
    chosen = _assign_groups(groups, {"test": test, "dev": dev})
    if not chosen["train"]:
        raise DataError(f"holding out whole groups for dev={dev}/test={test} left nothing to train on")
    test_pairs = [pairs[i] for i in sorted(chosen["test"])]
    dev_pairs = [pairs[i] for i in sorted(chosen["dev"])]
    train_pairs = [pairs[i] for i in sorted(chosen["train"])]
    leaked = 0
    if drop_leaks:
        test_sources = {p.src for p in test_pairs}
        kept_dev = [p for p in dev_pairs if p.src not in test_sources]
        held_sources = test_sources | {p.src for p in kept_dev}
        kept_train = [p for p in train_pairs if p.src not in held_sources]
        leaked = len(dev_pairs) - len(kept_dev) + len(train_pairs) - len(kept_train)
        dev_pairs, train_pairs = kept_dev, kept_train
    return Splits(train_pairs, dev_pairs, test_pairs, leaked)
