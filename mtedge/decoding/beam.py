"""Beam search that reproduces HF ``generate(num_beams=k)`` (transformers 4.57 ``_beam_search``).

HF's algorithm, per source sentence, with ``K = 2k`` (one EOS id):
  a. score every (beam, token) continuation: running score + processed log-prob;
  b. keep the top ``K`` of all ``k * vocab`` continuations (``_get_top_k_continuations``);
  c. those that end in ``</s>`` or reach the length limit "hit"; the best ``k`` that did not hit
     run on (a hit one gets ``-1e9`` so it only runs on if fewer than ``k`` did not hit);
  d. hits among the top ``k`` of the ``K`` become finished hypotheses, scored
     ``sum / length ** length_penalty`` (length = generated tokens incl. </s> and the forced prefix),
     and the best ``k`` finished so far are kept (``_update_finished_beams``);
  e. a sentence is done when its best running beam cannot beat its worst finished one by HF's
     heuristic ``best_running / current_length ** lp <= worst_finished`` (once all ``k`` finished
     slots are full), or, with ``early_stopping=True``, as soon as all ``k`` slots are full.
At the start only beam 0 is live (the others score ``-1e9``), so identical beams never compete.

Differences that do not change results: a done sentence leaves the batch (HF keeps computing it,
but nothing it computes can enter its finished set), and the forced target prefix is fed in the
first model call instead of one token per step (every beam takes the forced token with log-prob 0,
so HF's state after those steps equals the initial one); when sentences finish, the last live ones take
their places (:func:`_survivors`), as nothing in a sentence's search depends on its row. Candidates are
taken per row (the top ``K`` of a row are the only ones of that row that can be in the sentence's top ``K``).
Ties, which ``torch.topk`` orders arbitrarily, go to the lower (beam, token) index.
"""

from __future__ import annotations

import numpy as np

from mtedge.decoding.common import DEAD_SCORE, length_divisor, output_ids
from mtedge.decoding.logits import NEG_INF, LogitsProcessor, TokenRules
from mtedge.decoding.model import StepModel
from mtedge.types import DecodeOptions, Hypothesis


def _best(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest per row, best first, lower index first among ties."""
    return np.argsort(-values, axis=1, kind="stable")[:, :k]


def _forced_candidates(rows: int, width: int, token: int) -> tuple[np.ndarray, np.ndarray]:
    """Row candidates when ``token`` is forced: it scores 0, everything else -inf."""
    others = [t for t in range(width + 1) if t != token][:width - 1]
    tokens = np.tile(np.array([token] + others, dtype=np.int64), (rows, 1))
    log_probs = np.full((rows, width), NEG_INF, dtype=np.float32)
    log_probs[:, 0] = 0.0
    return tokens, log_probs


def _prefix_only(num_sources: int, options: DecodeOptions) -> list[list[Hypothesis]]:
    """``max_length`` ends inside the forced prefix: HF's finished set is beam 0's forced sequence
    (score 0) and the ``-1e9`` beams' copies of it."""
    divisor = length_divisor(options.max_length, options.length_penalty)
    scores = [0.0] + [float(DEAD_SCORE / divisor)] * (options.num_hypotheses - 1)
    return [[Hypothesis([], s if options.return_scores else None) for s in scores]
            for _ in range(num_sources)]


def _survivors(done: np.ndarray) -> np.ndarray:
    """The live sentences (old indices, by their new places) once the ``done`` ones leave: a sentence keeps its
    place unless it is past the new end, and those past it fill the places of the finished ones. An engine
    that keeps its cache in place (mtedge/engines/in_place_cache.py) then moves only the blocks that fill the
    holes; keeping the old order would shift every block after the first one that finished."""
    keep = np.flatnonzero(~done)
    order = np.arange(keep.size)
    order[done[:keep.size]] = keep[keep >= keep.size]
    return order


def beam_search(model: StepModel, num_sources: int, rules: TokenRules,
                options: DecodeOptions) -> list[list[Hypothesis]]:
    beams, max_length, prefix = options.beam_size, options.max_length, rules.prefix_ids
    keep_top = 2 * beams                     # HF beams_to_keep = max(2, 1 + n_eos) * num_beams
    early_stopping = bool(options.early_stopping)
    results: list[list[Hypothesis]] = [[] for _ in range(num_sources)]
    if num_sources == 0:
        return results
    if max_length <= len(prefix):
        return _prefix_only(num_sources, options)

    processor = LogitsProcessor(rules, options.min_length)
    width = 1 + max_length                   # decoder start + generated tokens
    sentences = num_sources
    run_seqs = np.empty((sentences, beams, width), dtype=np.int64)
    run_seqs[:, :, 0] = rules.decoder_start_id
    run_seqs[:, :, 1:1 + len(prefix)] = prefix
    run_scores = np.zeros((sentences, beams), dtype=np.float32)
    run_scores[:, 1:] = DEAD_SCORE
    fin_seqs = np.zeros((sentences, beams, width), dtype=np.int64)
    fin_scores = np.full((sentences, beams), DEAD_SCORE, dtype=np.float32)
    fin_done = np.zeros((sentences, beams), dtype=bool)
    fin_lengths = np.zeros((sentences, beams), dtype=np.int64)
    unsatisfied = np.ones(sentences, dtype=bool)   # HF is_early_stop_heuristic_unsatisfied
    sources = np.arange(num_sources)                # original index of each live sentence
    rows_per_sentence = 1                           # until the first select, all beams share row 0
    generated = len(prefix)
    tokens = np.ascontiguousarray(run_seqs[:, 0, :1 + generated])
    top_is_candidate = np.arange(keep_top) < beams  # HF top_num_beam_mask

    while True:
        cur_len = 1 + generated
        rows = sentences * rows_per_sentence
        if rules.forced_eos_id is not None and generated == max_length - 1:
            cand_tokens, cand_log_probs = _forced_candidates(rows, keep_top, rules.forced_eos_id)
        else:
            past = None
            if processor.needs_histories:
                past = run_seqs[:, :rows_per_sentence, :cur_len].reshape(rows, cur_len)
            cand_tokens, cand_log_probs = processor.step_candidates(model, tokens, past, generated, keep_top)

        # a/b. the sentence's top K over all beams' continuations
        per_row = cand_tokens.shape[1]
        shape = (sentences, beams, per_row)
        cand_tokens = np.broadcast_to(cand_tokens.reshape(sentences, rows_per_sentence, per_row), shape)
        cand_log_probs = cand_log_probs.reshape(sentences, rows_per_sentence, per_row)
        totals = (cand_log_probs + run_scores[:, :, None]).reshape(sentences, beams * per_row)
        flat_tokens = cand_tokens.reshape(sentences, beams * per_row)
        flat_beams = np.broadcast_to(np.repeat(np.arange(beams), per_row), flat_tokens.shape)
        order = np.lexsort((flat_tokens, flat_beams, -totals), axis=1)[:, :keep_top]
        top_scores = np.take_along_axis(totals, order, axis=1)
        top_beams = np.take_along_axis(flat_beams, order, axis=1)
        top_tokens = np.take_along_axis(flat_tokens, order, axis=1)
        by_sentence = np.arange(sentences)[:, None]
        top_seqs = run_seqs[by_sentence, top_beams]
        top_seqs[:, :, cur_len] = top_tokens

        # c. the best beams that did not hit a stop run on
        hits = (top_tokens == rules.eos_id) | (generated + 1 >= max_length)
        running = top_scores + hits.astype(np.float32) * DEAD_SCORE
        picks = _best(running, beams)
        run_scores = np.take_along_axis(running, picks, axis=1)
        run_seqs = top_seqs[by_sentence, picks]
        source_beams = np.take_along_axis(top_beams, picks, axis=1)
        next_tokens = np.take_along_axis(top_tokens, picks, axis=1)

        # d. update the finished hypotheses (same float32 steps as HF, so -1e9 ties match)
        just_finished = hits & top_is_candidate
        candidates = top_scores / length_divisor(generated + 1, options.length_penalty)
        if early_stopping:
            candidates += fin_done.all(axis=1, keepdims=True).astype(np.float32) * DEAD_SCORE
        candidates += (~unsatisfied[:, None]).astype(np.float32) * DEAD_SCORE
        candidates += (~just_finished).astype(np.float32) * DEAD_SCORE
        merged = np.concatenate([fin_scores, candidates], axis=1)
        slots = _best(merged, beams)
        fin_scores = np.take_along_axis(merged, slots, axis=1)
        fin_done = np.take_along_axis(np.concatenate([fin_done, just_finished], axis=1), slots, axis=1)
        lengths = np.broadcast_to(np.int64(generated + 1), top_tokens.shape)
        fin_lengths = np.take_along_axis(np.concatenate([fin_lengths, lengths], axis=1), slots, axis=1)
        fin_seqs = np.concatenate([fin_seqs, top_seqs], axis=1)[by_sentence, slots]
        generated += 1

        # e. HF _check_early_stop_heuristic, then who is done
        best_possible = run_scores[:, :1] / length_divisor(generated, options.length_penalty)
        worst_finished = np.where(fin_done, fin_scores.min(axis=1, keepdims=True), DEAD_SCORE)
        unsatisfied &= np.any(best_possible > worst_finished, axis=1)
        done = ~unsatisfied | (generated >= max_length)
        if early_stopping:
            done |= fin_done.all(axis=1)
        if done.any():
            for sentence in np.flatnonzero(done):
                results[sources[sentence]] = _hypotheses(fin_seqs[sentence], fin_scores[sentence],
                                                         fin_lengths[sentence], rules, options)
            keep = _survivors(done)
            if keep.size == 0:
                return results
        else:
            keep = np.arange(sentences)

        # the decoder state follows the surviving beams (and drops done sentences)
        base = keep[:, None] * rows_per_sentence
        state_rows = base + source_beams[keep] if rows_per_sentence > 1 else np.repeat(base, beams, axis=1)
        if keep.size < sentences:
            run_seqs, run_scores, next_tokens = run_seqs[keep], run_scores[keep], next_tokens[keep]
            fin_seqs, fin_scores = fin_seqs[keep], fin_scores[keep]
            fin_done, fin_lengths = fin_done[keep], fin_lengths[keep]
            unsatisfied, sources = unsatisfied[keep], sources[keep]
            sentences = keep.size
        model.select(state_rows.reshape(-1), np.repeat(sources, beams))
        rows_per_sentence = beams
        tokens = np.ascontiguousarray(next_tokens.reshape(-1, 1))


def _hypotheses(seqs: np.ndarray, scores: np.ndarray, lengths: np.ndarray, rules: TokenRules,
                options: DecodeOptions) -> list[Hypothesis]:
    out = []
    for slot in range(options.num_hypotheses):
        ids = output_ids(seqs[slot, 1:1 + lengths[slot]], rules.prefix_ids, rules.eos_id)
        out.append(Hypothesis(ids, float(scores[slot]) if options.return_scores else None))
    return out
