"""The engine-agnostic searches (mtedge.decoding) on a hand-made deterministic decoder, independent of ONNX.

``MarkovModel``'s next-token logits depend only on (source sentence, position, last token), so
every sequence's score can be computed directly and small vocabularies can be enumerated.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mtedge.decoding import TokenRules, decode
from mtedge.types import DecodeOptions
from mtedge.errors import UserError

EOS, START = 0, 5          # START is the decoder start (like Marian's <pad>), a banned output token


class MarkovModel:
    """A :class:`mtedge.decoding.StepModel`: logits = table[source, position, last token]."""

    def __init__(self, num_sources: int, vocab: int, max_positions: int, seed: int, scale: float = 2.0):
        rng = np.random.default_rng(seed)
        table = rng.standard_normal((num_sources, max_positions, vocab + 1, vocab)) * scale
        # </s> gets likelier with the position, so sentences end at different lengths
        table[:, :, :, EOS] += np.linspace(-scale, 2 * scale, max_positions)[None, :, None]
        self.table = table.astype(np.float32)
        self.calls: list[tuple[int, int]] = []     # (rows, tokens per row) of every logits call
        self.rows_last = self.rows_pos = self.rows_src = None

    def logits(self, tokens):
        tokens = np.asarray(tokens)
        self.calls.append(tokens.shape)
        if self.rows_last is None:                  # first call: one row per source
            self.rows_src = np.arange(tokens.shape[0])
            self.rows_pos = np.zeros(tokens.shape[0], dtype=np.int64)
        else:
            assert tokens.shape == (len(self.rows_last), 1), "row count out of step with select()"
        self.rows_pos = self.rows_pos + tokens.shape[1]
        self.rows_last = tokens[:, -1]
        return self.table[self.rows_src, self.rows_pos - 1, self.rows_last].copy()

    def select(self, rows, sources):
        rows = np.asarray(rows)
        assert rows.max(initial=-1) < len(self.rows_last)
        assert np.array_equal(self.rows_src[rows], sources), "a row moved to another sentence"
        self.rows_last, self.rows_pos = self.rows_last[rows], self.rows_pos[rows]
        self.rows_src = np.asarray(sources)

    # -- reference scoring ------------------------------------------------------------------
    def step_log_probs(self, source, position, last, bans, renormalize):
        row = self.table[source, position, last].astype(np.float64)
        banned = np.zeros_like(row, dtype=bool)
        banned[list(bans)] = True
        base = np.where(banned, -np.inf, row) if renormalize else row
        log_probs = base - (base.max() + math.log(np.exp(base - base.max()).sum()))
        return np.where(banned, -np.inf, log_probs)


def _log_prob_of(model, source, seq, rules, options, bans_single):
    """Sum of HF-processed log-probs of the generated tokens ``seq`` (forced ones score 0)."""
    total, last = 0.0, rules.decoder_start_id
    for position, token in enumerate(seq):
        if position < len(rules.prefix_ids):
            assert token == rules.prefix_ids[position]
        elif rules.forced_eos_id is not None and position == options.max_length - 1:
            assert token == rules.forced_eos_id
        else:
            bans = set(bans_single) | ({EOS} if position < options.min_length - 1 else set())
            total += model.step_log_probs(source, position, last, bans, rules.renormalize)[token]
        last = token
    return total


def exhaustive_nbest(model, source, vocab, rules, options):
    """Every finished sequence (ends in </s>, or reaches max_length), best HF score first."""
    bans = {w[0] for w in rules.bad_words_ids if len(w) == 1}
    scored = []
    for length in range(1, options.max_length + 1):
        for tail in itertools.product(range(vocab), repeat=length):
            if EOS in tail[:-1] or (tail[-1] != EOS and length < options.max_length):
                continue
            total = _log_prob_of(model, source, tail, rules, options, bans)
            if math.isfinite(total):
                scored.append((total / length ** options.length_penalty, list(tail)))
    scored.sort(key=lambda item: -item[0])
    return scored


def _strip(seq, rules):
    seq = list(seq)
    if seq and seq[-1] == EOS:
        seq = seq[:-1]
    return seq[len(rules.prefix_ids):]


VOCAB = 6  # ids 0..5: 0 = </s>, 5 = decoder start (banned as output)
RULES = TokenRules(decoder_start_id=START, eos_id=EOS, bad_words_ids=((START,),), forced_eos_id=EOS)


@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("forced_eos", [EOS, None])
def test_greedy_matches_step_by_step_argmax(renormalize, forced_eos):
    rules = TokenRules(START, EOS, bad_words_ids=((START,),), forced_eos_id=forced_eos, renormalize=renormalize)
    options = DecodeOptions(beam_size=1, max_length=6, return_scores=True)
    model = MarkovModel(num_sources=5, vocab=VOCAB, max_positions=8, seed=1)
    out = decode(model, 5, rules, options)
    for source, (hyp,) in enumerate(out):
        seq, last = [], START
        while len(seq) < options.max_length:
            if forced_eos is not None and len(seq) == options.max_length - 1:
                seq.append(EOS)
                break
            seq.append(int(np.argmax(model.step_log_probs(source, len(seq), last, {START}, renormalize))))
            last = seq[-1]
            if last == EOS:
                break
        assert hyp.ids == _strip(seq, rules)
        expected = _log_prob_of(model, source, seq, rules, options, {START}) / len(seq)
        assert hyp.score == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("num_hypotheses", [1, 3])
@pytest.mark.parametrize("renormalize", [False, True])
def test_wide_beam_equals_exhaustive_search(num_hypotheses, renormalize):
    """With length_penalty 0 and a beam wider than all prefixes, HF beam search is exact."""
    vocab, max_length = 5, 4
    rules = TokenRules(decoder_start_id=4, eos_id=EOS, bad_words_ids=((4,),), forced_eos_id=None,
                       renormalize=renormalize)
    options = DecodeOptions(beam_size=vocab ** (max_length - 1), max_length=max_length, length_penalty=0.0,
                            num_hypotheses=num_hypotheses, return_scores=True)
    model = MarkovModel(num_sources=3, vocab=vocab, max_positions=max_length, seed=7, scale=1.5)
    out = decode(model, 3, rules, options)
    for source, hyps in enumerate(out):
        expected = exhaustive_nbest(model, source, vocab, rules, options)[:num_hypotheses]
        assert [h.ids for h in hyps] == [_strip(seq, rules) for _, seq in expected]
        assert [h.score for h in hyps] == pytest.approx([s for s, _ in expected], abs=1e-4)


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("length_penalty", [0.6, 1.0, 2.0])
def test_batch_gives_each_sentence_what_it_gets_alone(early_stopping, length_penalty):
    """Finished sentences leave the batch and the decoder state is re-gathered: the other
    sentences must not notice."""
    options = DecodeOptions(beam_size=3, max_length=7, length_penalty=length_penalty, num_hypotheses=2,
                            early_stopping=early_stopping, return_scores=True)
    model = MarkovModel(num_sources=6, vocab=VOCAB, max_positions=8, seed=3)
    together = decode(model, 6, RULES, options)
    for source in range(6):
        alone = MarkovModel(num_sources=1, vocab=VOCAB, max_positions=8, seed=0)
        alone.table = model.table[source:source + 1]
        (hyps,) = decode(alone, 1, RULES, options)
        assert [(h.ids, h.score) for h in hyps] == [(h.ids, h.score) for h in together[source]]
    # a sentence that is done leaves: later calls have fewer rows than 6 sources x 3 beams
    assert min(rows for rows, _ in model.calls[1:]) < 18


def test_beam_scores_are_length_penalised_log_probs():
    options = DecodeOptions(beam_size=4, max_length=8, length_penalty=0.6, num_hypotheses=4, return_scores=True)
    model = MarkovModel(num_sources=2, vocab=VOCAB, max_positions=9, seed=11)
    for source, hyps in enumerate(decode(model, 2, RULES, options)):
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for hyp in hyps:
            seq = hyp.ids + [EOS]
            expected = _log_prob_of(model, source, seq, RULES, options, {START}) / len(seq) ** 0.6
            assert hyp.score == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("beam_size", [1, 3])
@pytest.mark.parametrize("forced_eos", [EOS, None])
def test_min_length_equal_to_max_length_forces_the_length(beam_size, forced_eos):
    rules = TokenRules(START, EOS, bad_words_ids=((START,),), forced_eos_id=forced_eos)
    options = DecodeOptions(beam_size=beam_size, max_length=5, min_length=5)
    out = decode(MarkovModel(num_sources=8, vocab=VOCAB, max_positions=6, seed=5), 8, rules, options)
    for (hyp,) in out:
        # 5 generated tokens incl. </s>: 4 ids + the forced </s>; without forced EOS, 5 ids or 4 + </s>
        assert len(hyp.ids) in ((4,) if forced_eos is not None else (4, 5))
        assert EOS not in hyp.ids


@pytest.mark.parametrize("beam_size", [1, 4])
def test_max_length_one_gives_just_eos_without_running_the_model(beam_size):
    model = MarkovModel(num_sources=3, vocab=VOCAB, max_positions=2, seed=2)
    out = decode(model, 3, RULES, DecodeOptions(beam_size=beam_size, max_length=1, return_scores=True))
    assert [[h.ids for h in hyps] for hyps in out] == [[[]]] * 3
    assert [h.score for hyps in out for h in hyps] == [0.0] * 3
    assert model.calls == []


def test_max_length_one_without_forced_eos_is_one_token():
    rules = TokenRules(START, EOS, bad_words_ids=((START,),), forced_eos_id=None)
    model = MarkovModel(num_sources=3, vocab=VOCAB, max_positions=2, seed=2)
    out = decode(model, 3, rules, DecodeOptions(beam_size=1, max_length=1))
    for source, (hyp,) in enumerate(out):
        best = int(np.argmax(model.step_log_probs(source, 0, START, {START}, False)))
        assert hyp.ids == ([] if best == EOS else [best])


@pytest.mark.parametrize("beam_size", [1, 3])
def test_forced_prefix_is_fed_first_and_left_out_of_the_ids(beam_size):
    prefix = (3,)
    rules = TokenRules(START, EOS, prefix_ids=prefix, bad_words_ids=((START,),), forced_eos_id=EOS)
    options = DecodeOptions(beam_size=beam_size, max_length=6, return_scores=True)
    model = MarkovModel(num_sources=4, vocab=VOCAB, max_positions=8, seed=9)
    out = decode(model, 4, rules, options)
    assert model.calls[0] == (4, 2)   # decoder start + prefix in one call, one row per source
    for source, hyps in enumerate(out):
        seq = list(prefix) + hyps[0].ids + [EOS]
        seq = seq[:options.max_length]
        expected = _log_prob_of(model, source, seq, rules, options, {START}) / len(seq)
        assert hyps[0].score == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_forced_prefix_longer_than_max_length(beam_size):
    rules = TokenRules(START, EOS, prefix_ids=(3, 4), forced_eos_id=EOS)
    model = MarkovModel(num_sources=2, vocab=VOCAB, max_positions=4, seed=9)
    out = decode(model, 2, rules, DecodeOptions(beam_size=beam_size, max_length=2, return_scores=True))
    assert [hyps[0].ids for hyps in out] == [[], []]
    assert [hyps[0].score for hyps in out] == [0.0, 0.0]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_bad_words_never_appear(beam_size):
    options = DecodeOptions(beam_size=beam_size, max_length=8)
    model = MarkovModel(num_sources=6, vocab=VOCAB, max_positions=9, seed=4)
    free = decode(model, 6, TokenRules(START, EOS, forced_eos_id=EOS), options)
    single = free[0][0].ids[0]
    pairs = [tuple(h.ids[i:i + 2]) for hyps in free for h in hyps for i in range(len(h.ids) - 1)]
    pair = max(set(pairs), key=pairs.count)
    rules = TokenRules(START, EOS, bad_words_ids=((single,), pair, (EOS,)), forced_eos_id=EOS)
    banned = decode(MarkovModel(num_sources=6, vocab=VOCAB, max_positions=9, seed=4), 6, rules, options)
    for hyps in banned:
        for hyp in hyps:
            assert single not in hyp.ids
            assert pair not in {tuple(hyp.ids[i:i + 2]) for i in range(len(hyp.ids) - 1)}
    # [eos] as a bad word is ignored, as in HF: sentences still end before max_length
    assert any(len(h.ids) < options.max_length - 1 for hyps in banned for h in hyps)


def test_bad_word_longer_than_the_sequence_is_skipped_as_in_hf():
    """HF's NoBadWordsLogitsProcessor skips a bad word longer than input_ids (decoder start included),
    so (start, x) never bans a first token x."""
    model = MarkovModel(num_sources=3, vocab=VOCAB, max_positions=8, seed=6)
    options = DecodeOptions(beam_size=1, max_length=6)
    free = decode(model, 3, RULES, options)
    first = free[0][0].ids[0]
    rules = TokenRules(START, EOS, bad_words_ids=((START,), (START, first)), forced_eos_id=EOS)
    out = decode(MarkovModel(num_sources=3, vocab=VOCAB, max_positions=8, seed=6), 3, rules, options)
    assert out == free


def test_empty_batch_and_bad_options():
    model = MarkovModel(num_sources=1, vocab=VOCAB, max_positions=4, seed=0)
    assert decode(model, 0, RULES, DecodeOptions(beam_size=2)) == []
    with pytest.raises(UserError, match="num_hypotheses"):
        decode(model, 1, RULES, DecodeOptions(beam_size=2, num_hypotheses=3))
    with pytest.raises(UserError, match="max_length"):
        decode(model, 1, RULES, DecodeOptions(beam_size=2, max_length=0))
