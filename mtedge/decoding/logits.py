"""Token rules and logits processing, as Hugging Face ``generate`` (transformers 4.57) applies them.

HF turns a step's logits into scores like this (``generation/utils.py`` ``_beam_search``):
``log_softmax(logits)`` → processors in order (bad words, min new tokens, forced BOS, forced EOS) →
``log_softmax`` again only when ``renormalize_logits`` is set (``LogitNormalization`` runs last).
The bans only set entries to -inf, so we apply them in place on the raw logits and keep one
per-row normaliser: over the raw logits without renormalisation (HF normalised *before* banning),
over the banned logits with it (``log_softmax(log_softmax(x) + bans) == log_softmax(x + bans)``).
Forced tokens (target prefix, EOS at the length limit) never reach this module: the searches
handle them without looking at logits (a forced token has log-prob exactly 0 in HF either way).

numpy only: this is the runtime path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtedge.types import TargetSpec

NEG_INF = np.float32(-np.inf)


@dataclass(frozen=True)
class TokenRules:
    """The target-side ids a search needs (model constants, not per-call options)."""

    decoder_start_id: int
    eos_id: int
    prefix_ids: tuple[int, ...] = ()                   # forced first generated tokens (language code)
    bad_words_ids: tuple[tuple[int, ...], ...] = ()    # HF bad_words_ids
    forced_eos_id: int | None = None                   # HF forced_eos_token_id: forced at the length limit
    renormalize: bool = False                          # HF renormalize_logits

    @classmethod
    def from_target(cls, target: TargetSpec, *, forced_eos_id: int | None = None,
                    renormalize: bool = False) -> "TokenRules":
        return cls(decoder_start_id=int(target.decoder_start_id), eos_id=int(target.eos_id),
                   prefix_ids=tuple(int(t) for t in target.target_prefix_ids),
                   bad_words_ids=tuple(tuple(int(t) for t in word) for word in target.bad_words_ids if word),
                   forced_eos_id=None if forced_eos_id is None else int(forced_eos_id),
                   renormalize=bool(renormalize))


@dataclass
class Normalizer:
    """Per-row log-softmax constants: ``log_prob = (logit - max) - log_sum`` (torch's order of ops)."""

    row_max: np.ndarray    # [rows, 1] float32
    log_sum: np.ndarray    # [rows, 1] float32

    def log_probs(self, values: np.ndarray) -> np.ndarray:
        return (values - self.row_max) - self.log_sum


def log_normalizer(logits: np.ndarray, scratch: np.ndarray | None = None) -> Normalizer:
    """``scratch``: a float32 buffer of at least ``logits.size`` elements to compute in (a fresh
    [rows, vocab] buffer per step costs page faults at real vocabulary sizes)."""
    row_max = logits.max(axis=1, keepdims=True)
    if scratch is None or scratch.size < logits.size:
        shifted = np.subtract(logits, row_max)
    else:
        shifted = np.subtract(logits, row_max, out=scratch[:logits.size].reshape(logits.shape))
    np.exp(shifted, out=shifted)
    return Normalizer(row_max, np.log(shifted.sum(axis=1, keepdims=True, dtype=np.float32)))


class LogitsProcessor:
    """Bans (bad words, EOS before ``min_length``) and the log-softmax for one search call.

    ``min_length`` counts generated tokens including ``</s>`` (DecodeOptions): EOS is banned while
    fewer than ``min_length - 1`` tokens were generated, i.e. HF ``min_new_tokens = min_length - 1``.
    """

    def __init__(self, rules: TokenRules, min_length: int):
        self.rules = rules
        self.eos_banned_below = max(0, int(min_length) - 1)
        # HF NoBadWordsLogitsProcessor drops a bad word that is exactly [eos].
        words = [w for w in rules.bad_words_ids if w != (rules.eos_id,)]
        self.single_bans = np.array(sorted({w[0] for w in words if len(w) == 1}), dtype=np.int64)
        self.sequence_bans = [(np.array(w[:-1], dtype=np.int64), w[-1]) for w in words if len(w) > 1]
        self._scratch: np.ndarray | None = None   # reused by every step of this search
        self._shared_bias: dict[tuple[int, bool], np.ndarray] = {}

    def apply_bans(self, logits: np.ndarray, histories: np.ndarray | None, generated: int) -> None:
        """Set banned entries of ``logits`` [rows, vocab] to -inf, in place.

        ``histories`` [rows, 1 + generated]: every row's tokens so far, decoder start included (HF
        ``input_ids``; a multi-token bad word may start with the decoder start, as in HF).
        """
        if self.single_bans.size:
            logits[:, self.single_bans] = NEG_INF
        if generated < self.eos_banned_below:
            logits[:, self.rules.eos_id] = NEG_INF
        for prefix, last in self.sequence_bans:
            if histories is None or prefix.size >= histories.shape[1]:
                continue  # HF skips a bad word longer than the sequence so far
            matches = np.all(histories[:, -prefix.size:] == prefix, axis=1)
            logits[matches, last] = NEG_INF

    @property
    def needs_histories(self) -> bool:
        return bool(self.sequence_bans)

    def process(self, logits: np.ndarray, histories: np.ndarray | None, generated: int) -> Normalizer:
        """Apply the bans in place and return the normaliser that turns the banned logits into HF's
        scores (``-inf`` stays ``-inf``)."""
        scratch = self._scratch_for(logits.size)
        if self.rules.renormalize:
            self.apply_bans(logits, histories, generated)
            return log_normalizer(logits, scratch)
        normalizer = log_normalizer(logits, scratch)
        self.apply_bans(logits, histories, generated)
        return normalizer

    def top_candidates(self, logits: np.ndarray, histories: np.ndarray | None, generated: int,
                       k: int) -> tuple[np.ndarray, np.ndarray]:
        """Bans, log-softmax and the ``k`` best tokens of every row: ``(tokens, scores)`` [rows, k]."""
        normalizer = self.process(logits, histories, generated)
        tokens, values = top_k_per_row(logits, k)
        return tokens, normalizer.log_probs(values)

    # -- the model's own search head (StepModel.top_k) ------------------------------------------
    def uses_search_head(self, model) -> bool:
        """Whether ``model`` takes the bans and the top k in its own graph (``StepModel.top_k``), computing the
        scores these rules need."""
        supports = getattr(model, "supports_top_k", None)
        return supports is not None and supports(self.rules.renormalize)

    def bias(self, vocab: int, histories: np.ndarray | None, generated: int) -> np.ndarray:
        """The bans of :meth:`apply_bans` as an additive float32 bias: ``[1, vocab]`` when every row has the
        same bans (kept between steps), ``[rows, vocab]`` when a multi-token bad word matches some row."""
        eos_banned = generated < self.eos_banned_below
        shared = self._shared_bias.get((vocab, eos_banned))
        if shared is None:
            shared = np.zeros((1, vocab), dtype=np.float32)
            if self.single_bans.size:
                shared[:, self.single_bans] = NEG_INF
            if eos_banned:
                shared[:, self.rules.eos_id] = NEG_INF
            self._shared_bias[(vocab, eos_banned)] = shared
        per_row = None
        for prefix, last in self.sequence_bans:
            if histories is None or prefix.size >= histories.shape[1]:
                continue
            matches = np.all(histories[:, -prefix.size:] == prefix, axis=1)
            if matches.any():
                if per_row is None:
                    per_row = np.repeat(shared, histories.shape[0], axis=0)
                per_row[matches, last] = NEG_INF
        return shared if per_row is None else per_row

    def step_candidates(self, model, tokens: np.ndarray, histories: np.ndarray | None, generated: int,
                        k: int) -> tuple[np.ndarray, np.ndarray]:
        """One model call and the ``k`` best tokens of every row with their scores ``(tokens, log_probs)``
        [rows, k]: in the model's graph where it can (the same steps, see ``mtedge/convert/search_head.py``),
        else from its logits here."""
        if self.uses_search_head(model):
            return model.top_k(tokens, self.bias(model.vocab_size, histories, generated), k)
        return self.top_candidates(model.logits(tokens), histories, generated, k)

    def _scratch_for(self, size: int) -> np.ndarray:
        if self._scratch is None or self._scratch.size < size:
            self._scratch = np.empty(size, dtype=np.float32)   # grows once, when beams expand
        return self._scratch


# Large vocabularies: ids are dealt into groups of _GROUP (group g = ids g, g + n, g + 2n, ...; a
# strided view, so the group maxima take one fast pass). The top k entries of a row lie in the k
# groups with the largest maxima, so a full argpartition over [rows, vocab] (3x slower at 58k ids)
# is only needed on k * _GROUP candidates.
_GROUP = 64
_GROUP_OFFSETS = np.arange(_GROUP)


def top_k_per_row(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries of each row: ``(indices, values)`` [rows, k], best first; among equal
    values the lower index first (torch.topk leaves that order unspecified)."""
    rows, vocab = values.shape
    k = min(k, vocab)
    groups = vocab // _GROUP
    if groups >= 4 * k:
        group_max = values[:, :groups * _GROUP].reshape(rows, _GROUP, groups).max(axis=1)
        best_groups = np.argpartition(group_max, groups - k, axis=1)[:, groups - k:]
        part = (best_groups[:, :, None] + _GROUP_OFFSETS * groups).reshape(rows, k * _GROUP)
        if groups * _GROUP < vocab:  # the ids past the last full group are always candidates
            tail = np.arange(groups * _GROUP, vocab)
            part = np.concatenate([part, np.broadcast_to(tail, (rows, tail.size))], axis=1)
    elif vocab > 4 * k:
        part = np.argpartition(values, vocab - k, axis=1)[:, vocab - k:]
    else:
        part = np.broadcast_to(np.arange(vocab), (rows, vocab))
    part_values = np.take_along_axis(values, part, axis=1)
    if part.shape[1] > 4 * k:  # narrow the group candidates down before the (slower) exact sort
        width = part.shape[1]
        keep = np.argpartition(part_values, width - k, axis=1)[:, width - k:]
        part, part_values = np.take_along_axis(part, keep, axis=1), np.take_along_axis(part_values, keep, axis=1)
    order = np.lexsort((part, -part_values), axis=1)[:, :k]
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_values, order, axis=1)
