"""The self-attention cache kept in place: one buffer per layer that each step writes one position into, and a
small table that says which beam holds each position, instead of two copies of the whole cache a step.

With ``past`` in and ``present`` out, a beam step copies the self-attention cache twice per layer: the beam
reorder gathers the rows the surviving beams continue, and ``MultiHeadAttention`` concatenates past and the new
position into ``present``. In a later step the lean decoder (``mtedge/convert/lean_decoder.py``) can run each
layer's self-attention, when :data:`IN_PLACE_INPUT` says so, as onnxruntime's
``com.microsoft.DecoderMaskedMultiHeadAttention`` with ``past_present_share_buffer``: ``past`` and ``present``
are the same [rows, heads, capacity, head_dim] buffer (bound to one ``OrtValue`` by IO binding), the step
writes position :data:`PAST_LENGTH_INPUT` of each row, and reads earlier positions of row ``(sentence, beam)``
from row ``(sentence, indirection[sentence, beam, position])``, so a reorder rewrites the int32 table, not the
cache (ORT's own BeamSearch op keeps its cache this way). Finished sentences leave by whole blocks of rows:
the blocks that take their places are copied inside the same buffers (the beam search fills them with the last
live sentences); anything else (the first expansion to the beams, a layout that is not equal blocks) resolves
the table into a fresh buffer.

The inputs carry defaults (graph initializers) that select ``MultiHeadAttention``, so optimum's
``ORTModelForSeq2SeqLM`` and any runtime that feeds only optimum's contract runs the same file; onnxruntime
1.32's IO binding takes such inputs from ``bind_ortvalue_input`` (``bind_cpu_input`` refuses them).

This module is the contract and the bookkeeping (numpy only); the engine binds and runs.
"""

from __future__ import annotations

import numpy as np

IN_PLACE_INPUT = "cache_in_place"             # bool [1]: True selects the in-place self-attention (default False)
PAST_LENGTH_INPUT = "past_sequence_length"    # int32 [1]: positions the buffers hold
BEAM_WIDTH_INPUT = "beam_width"               # int32 [1]: rows per block (one sentence's beams)
INDIRECTION_INPUT = "cache_indirection"       # int32 [blocks, beam_width, capacity]
INPUTS = (IN_PLACE_INPUT, PAST_LENGTH_INPUT, BEAM_WIDTH_INPUT, INDIRECTION_INPUT)
METADATA = "mtedge_self_attention_cache"      # graph metadata of a decoder that has the in-place body
IN_PLACE = "in_place"
# Positions a buffer holds at first; it doubles when full. Sizing it for max_length up front would hold
# b32 beam 4 at 256 tokens' cache (~0.8 GB at opus-mt's shape) from the first step, and fresh memory is slow
# to touch (sizing them from the source lost: mtedge/DESIGN.md §4.14).
FIRST_CAPACITY = 16


class InPlaceCache:
    """The self-attention buffers of one batch (``buffers``: ``[rows, heads, capacity, head_dim]`` float
    arrays, one per cache input) and the table that maps each row's positions to the row that holds them.

    Start from the first step's ``present`` arrays (one row per source, every position its own). Before a
    step, :meth:`reserve`; after it, :meth:`advance`; between steps, :meth:`select` as the search reorders."""

    def __init__(self, present: list[np.ndarray], take=None):
        """``take(values, rows)``: the rows ``values[rows]`` of a buffer (the engine's onnxruntime row gather,
        mtedge/engines/row_gather.py, which copies rows at about twice numpy's speed); numpy's by default."""
        self.take = take or (lambda values, rows: np.take(values, rows, axis=0))
        self.length = present[0].shape[2]
        self.width = 1
        self.buffers = [np.ascontiguousarray(p) for p in present]
        self.indirection = np.zeros((len(present[0]), 1, self.length), dtype=np.int32)

    @property
    def rows(self) -> int:
        return len(self.buffers[0])

    @property
    def capacity(self) -> int:
        return self.buffers[0].shape[2]

    def reserve(self) -> bool:
        """Make room for one more position; True when the buffers were replaced (to be bound again)."""
        if self.length < self.capacity:
            return False
        self._reallocate(max(FIRST_CAPACITY, 2 * self.capacity))
        return True

    def advance(self) -> None:
        """After a step: each row wrote position ``length`` into its own row."""
        self.indirection[:, :, self.length] = np.arange(self.width, dtype=np.int32)
        self.length += 1

    def select(self, rows: np.ndarray, width: int) -> None:
        """New row ``i`` continues old row ``rows[i]``; the new rows come in blocks of ``width`` (one
        sentence's beams; 1 when they do not)."""
        rows = np.asarray(rows, dtype=np.int64)
        blocks = len(rows) // width
        parent_blocks = (rows // self.width).reshape(blocks, width)
        kept = parent_blocks[:, 0]
        if width == self.width and (parent_blocks == kept[:, None]).all() and len(np.unique(kept)) == blocks:
            if not np.array_equal(kept, np.arange(len(self.indirection))):   # sentences left: drop their blocks
                self._drop_blocks(kept)
            beams = (rows % width).reshape(blocks, width, 1)
            used = self.indirection[:, :, :self.length]
            self.indirection[:, :, :self.length] = np.take_along_axis(used, beams, axis=1)
            return
        self._resolve(rows, width)

    def physical_rows(self, rows: np.ndarray) -> np.ndarray:
        """[len(rows), length]: the buffer row that holds each position of the rows ``rows``."""
        blocks, beams = np.divmod(np.asarray(rows, dtype=np.int64), self.width)
        return blocks[:, None] * self.width + self.indirection[blocks, beams, :self.length]

    def logical(self, buffer: np.ndarray) -> np.ndarray:
        """``buffer`` as the plain cache ``[rows, heads, length, head_dim]`` it stands for (tests, debugging)."""
        return self._gather(buffer, self.physical_rows(np.arange(self.rows)))

    # -- internals --------------------------------------------------------------------------
    def _drop_blocks(self, kept: np.ndarray) -> None:
        """Block ``kept[i]`` becomes block ``i``; the others leave. When every block that moves comes from past
        the new end (the beam search fills the places of finished sentences with the last live ones), it is
        copied over a finished one inside the same buffers, which are then cut to the live rows: nothing is
        allocated and only the moved blocks' positions are copied. Any other order is gathered anew."""
        width, blocks = self.width, len(kept)
        moved = np.flatnonzero(kept != np.arange(blocks))
        if (kept[moved] >= blocks).all():
            used = slice(0, self.length)
            for buffer in self.buffers:
                for block in moved:
                    source = kept[block] * width
                    buffer[block * width:(block + 1) * width, :, used] = buffer[source:source + width, :, used]
            self.buffers = [buffer[:blocks * width] for buffer in self.buffers]   # leading rows: still contiguous
        else:
            physical = (kept[:, None] * width + np.arange(width)).reshape(-1)
            self.buffers = [self.take(buffer, physical) for buffer in self.buffers]
        self.indirection = self.indirection[kept]

    def _resolve(self, rows: np.ndarray, width: int) -> None:
        """Copy each new row's positions into a row of its own, in blocks of ``width``."""
        physical = self.physical_rows(rows)
        # the first expansion starts the buffers at FIRST_CAPACITY (not at the first step's 1 + prefix, to be
        # grown to it at once by the next step)
        capacity = max(self.capacity, FIRST_CAPACITY, self.length + 1)
        resolved = []
        for buffer in self.buffers:
            fresh = np.zeros((len(rows),) + buffer.shape[1:2] + (capacity,) + buffer.shape[3:], buffer.dtype)
            fresh[:, :, :self.length] = self._gather(buffer, physical)
            resolved.append(fresh)
        self.buffers, self.width = resolved, width
        self.indirection = np.zeros((len(rows) // width, width, capacity), dtype=np.int32)
        self.indirection[:] = np.arange(width, dtype=np.int32)[:, None]

    def _gather(self, buffer: np.ndarray, physical: np.ndarray) -> np.ndarray:
        if (physical == physical[:, :1]).all():   # every row's positions in one row: a plain row gather
            return np.take(buffer[:, :, :self.length], physical[:, 0], axis=0)
        positions = np.arange(self.length)[None, :]
        # advanced indices first: [rows, length, heads, head_dim] → [rows, heads, length, head_dim]
        return buffer[physical, :, positions, :].transpose(0, 2, 1, 3)

    def _reallocate(self, capacity: int) -> None:
        grown = []
        for buffer in self.buffers:
            fresh = np.zeros(buffer.shape[:2] + (capacity,) + buffer.shape[3:], buffer.dtype)
            fresh[:, :, :self.length] = buffer[:, :, :self.length]
            grown.append(fresh)
        self.buffers = grown
        table = np.zeros(self.indirection.shape[:2] + (capacity,), dtype=np.int32)
        table[:, :, :self.length] = self.indirection[:, :, :self.length]
        self.indirection = table
