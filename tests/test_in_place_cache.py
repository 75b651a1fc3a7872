"""The in-place self-attention cache's bookkeeping (mtedge/engines/in_place_cache.py) against the plain cache it
stands for: after every step and every re-arrangement a search makes (beam reorders, sentences leaving, the
first expansion to the beams, rows that leave their block), the buffers read through the indirection table
must be exactly the rows a past/present decoder would hold."""

from __future__ import annotations

import numpy as np
import pytest

from mtedge.decoding.beam import _survivors
from mtedge.engines.in_place_cache import FIRST_CAPACITY, InPlaceCache

HEADS, HEAD_DIM = 2, 3


class _Reference:
    """The plain cache (what MultiHeadAttention's past/present holds) next to the in-place one."""

    def __init__(self, rng, sources: int, prefix: int):
        self.rng = rng
        self.plain = [rng.standard_normal((sources, HEADS, prefix, HEAD_DIM)).astype(np.float32) for _ in range(2)]
        self.cache = InPlaceCache([p.copy() for p in self.plain])

    def step(self):
        """What the graph does: each row writes its new position into its own row of the buffers."""
        self.cache.reserve()
        for i, buffer in enumerate(self.cache.buffers):
            new = self.rng.standard_normal((self.cache.rows, HEADS, 1, HEAD_DIM)).astype(np.float32)
            buffer[:, :, self.cache.length] = new[:, :, 0]
            self.plain[i] = np.concatenate([self.plain[i], new], axis=2)
        self.cache.advance()
        self.check()

    def select(self, rows, width):
        rows = np.asarray(rows)
        self.plain = [p[rows] for p in self.plain]
        self.cache.select(rows, width)
        self.check()

    def check(self):
        for plain, buffer in zip(self.plain, self.cache.buffers):
            np.testing.assert_array_equal(self.cache.logical(buffer), plain)
        assert self.cache.indirection.shape == (self.cache.rows // self.cache.width, self.cache.width,
                                                self.cache.capacity)


def _beam_reorder(rng, sentences: int, beams: int) -> np.ndarray:
    """Each new beam continues some beam of its own sentence, as the beam search picks them."""
    return (np.arange(sentences)[:, None] * beams + rng.integers(0, beams, (sentences, beams))).reshape(-1)


@pytest.mark.parametrize("seed", range(4))
def test_a_beam_search_worth_of_rearrangements_reads_the_plain_cache(seed):
    rng = np.random.default_rng(seed)
    sentences, beams = 5, 3
    ref = _Reference(rng, sentences, prefix=2)
    ref.select(np.repeat(np.arange(sentences), beams), beams)   # the first expansion: one row per source -> beams
    for step in range(2 * FIRST_CAPACITY + 3):                  # the buffers grow twice
        ref.step()
        rows = _beam_reorder(rng, sentences, beams)
        if step in (5, 11, 20) and sentences > 1:                # a sentence finishes: its block leaves
            keep = np.sort(rng.choice(sentences, sentences - 1, replace=False))
            rows = rows.reshape(sentences, beams)[keep].reshape(-1)
            sentences -= 1
        ref.select(rows, beams)
    assert ref.cache.capacity >= 2 * FIRST_CAPACITY


def test_greedy_rows_leaving_and_layouts_that_are_not_blocks():
    rng = np.random.default_rng(7)
    ref = _Reference(rng, 6, prefix=1)
    for _ in range(3):
        ref.step()
    ref.select(np.array([0, 2, 3, 5]), 1)                        # greedy: finished rows leave
    ref.step()
    ref.select(np.array([0, 0, 1, 1, 2, 2, 3, 3]), 2)            # a new block layout: resolved into fresh rows
    ref.step()
    ref.select(np.array([1, 0, 3, 3, 5, 4, 6, 7]), 2)            # in-block reorder: only the table changes
    buffers = [b.copy() for b in ref.cache.buffers]
    ref.step()
    ref.select(np.array([2, 0, 7, 1]), 1)                        # rows taken across blocks: resolved
    ref.step()
    assert all(b.shape[0] == 4 for b in ref.cache.buffers) and buffers[0].shape[0] == 8


def test_an_in_block_reorder_moves_no_cache_row():
    rng = np.random.default_rng(3)
    ref = _Reference(rng, 2, prefix=1)
    ref.select(np.array([0, 0, 1, 1]), 2)
    ref.step()
    before = [b.copy() for b in ref.cache.buffers]
    ref.select(np.array([1, 1, 2, 3]), 2)
    for old, new in zip(before, ref.cache.buffers):
        np.testing.assert_array_equal(old, new)                   # the reorder is the table's alone


def _finish(rows: np.ndarray, sentences: int, beams: int, done: np.ndarray):
    """The rows after the ``done`` sentences leave, the survivors placed as the beam search places them."""
    survivors = _survivors(done)
    return rows.reshape(sentences, beams)[survivors].reshape(-1), len(survivors)


@pytest.mark.parametrize("seed", range(4))
def test_finished_sentences_leave_inside_the_same_buffers(seed):
    """The beam search fills a finished sentence's place with the last live one, so its block is copied over
    the finished one and the buffers are cut to the live rows: the same memory, still the plain cache."""
    rng = np.random.default_rng(seed)
    sentences, beams = 7, 3
    ref = _Reference(rng, sentences, prefix=2)
    ref.select(np.repeat(np.arange(sentences), beams), beams)
    for step in range(12):
        ref.step()
        rows = _beam_reorder(rng, sentences, beams)
        if step in (2, 5, 6, 9):
            done = np.zeros(sentences, dtype=bool)
            done[rng.choice(sentences, 1 + (step == 6), replace=False)] = True   # two at once at step 6
            rows, sentences = _finish(rows, sentences, beams, done)
            buffers = ref.cache.buffers
            ref.select(rows, beams)
            assert all(np.shares_memory(old, new) for old, new in zip(buffers, ref.cache.buffers))
            assert ref.cache.rows == sentences * beams
        else:
            ref.select(rows, beams)


def test_blocks_in_any_other_order_are_gathered_anew():
    rng = np.random.default_rng(5)
    ref = _Reference(rng, 4, prefix=1)
    ref.select(np.repeat(np.arange(4), 2), 2)
    ref.step()
    buffers = ref.cache.buffers
    ref.select(np.array([6, 7, 0, 1, 2, 3]), 2)     # block 3 first, then blocks 0 and 1: moves over live blocks
    assert not any(np.shares_memory(old, new) for old, new in zip(buffers, ref.cache.buffers))
    ref.step()


def test_the_survivors_keep_their_places_and_the_last_fill_the_gaps():
    done = np.array([False, True, False, False, True, False, False])
    np.testing.assert_array_equal(_survivors(done), [0, 5, 2, 3, 6])
    np.testing.assert_array_equal(_survivors(np.array([False, False, True])), [0, 1])
    np.testing.assert_array_equal(_survivors(np.array([True, True])), [])


def test_the_first_expansion_sizes_the_buffers_for_growth_by_doubling():
    rng = np.random.default_rng(11)
    ref = _Reference(rng, 3, prefix=2)
    ref.select(np.repeat(np.arange(3), 2), 2)
    assert ref.cache.capacity == FIRST_CAPACITY                  # not the 3 positions the first step wrote
