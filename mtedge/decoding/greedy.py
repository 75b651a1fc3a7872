"""Greedy search, token for token what HF ``generate(num_beams=1, do_sample=False)`` picks.

HF keeps finished sentences in the batch and feeds them padding; here a sentence leaves the batch
as soon as it emits ``</s>``, so later steps cost less. Rows are independent, so the ids are the same.

Scores: HF greedy has no sequence score; ours is the beam-search formula, so that scores compare
across beam sizes: the sum of the chosen tokens' log-probs (as processed, see ``logits.py``; a
forced token scores 0) divided by ``length ** length_penalty``, length counting ``</s>`` and the
forced prefix.
"""

from __future__ import annotations

import numpy as np

from mtedge.decoding.common import length_divisor, output_ids
from mtedge.decoding.logits import LogitsProcessor, TokenRules
from mtedge.decoding.model import StepModel
from mtedge.types import DecodeOptions, Hypothesis


def greedy_search(model: StepModel, num_sources: int, rules: TokenRules,
                  options: DecodeOptions) -> list[list[Hypothesis]]:
    max_length, prefix = options.max_length, rules.prefix_ids
    want_scores = options.return_scores
    results: list[list[Hypothesis]] = [[] for _ in range(num_sources)]
    if num_sources == 0:
        return results
    if max_length <= len(prefix):  # the length limit falls inside the forced prefix: nothing to search
        return [[Hypothesis([], 0.0 if want_scores else None)] for _ in range(num_sources)]

    processor = LogitsProcessor(rules, options.min_length)
    head = processor.uses_search_head(model)   # top-1 and its log-prob come from the model's graph
    # every row's tokens so far, decoder start first (HF input_ids)
    histories = np.empty((num_sources, 1 + max_length), dtype=np.int64)
    histories[:, 0] = rules.decoder_start_id
    histories[:, 1:1 + len(prefix)] = prefix
    sums = np.zeros(num_sources, dtype=np.float32)
    alive = np.arange(num_sources)              # original index of each row
    generated = len(prefix)
    tokens = np.ascontiguousarray(histories[:, :1 + generated])

    while True:
        if rules.forced_eos_id is not None and generated == max_length - 1:
            # HF ForcedEOSTokenLogitsProcessor: the last allowed token is </s>, log-prob 0; no model call
            chosen = np.full(len(alive), rules.forced_eos_id, dtype=np.int64)
        elif head:
            past = histories[:, :1 + generated] if processor.needs_histories else None
            ids, log_probs = processor.step_candidates(model, tokens, past, generated, 1)
            chosen = ids[:, 0]
            sums += log_probs[:, 0]
        else:
            logits = model.logits(tokens)
            past = histories[:, :1 + generated] if processor.needs_histories else None
            if want_scores:
                normalizer = processor.process(logits, past, generated)
            else:
                processor.apply_bans(logits, past, generated)
            chosen = logits.argmax(axis=1)      # first maximum on ties, like torch.argmax
            if want_scores:
                picked = np.take_along_axis(logits, chosen[:, None], axis=1)
                sums += normalizer.log_probs(picked)[:, 0]
        histories[:, 1 + generated] = chosen
        generated += 1

        finished = (chosen == rules.eos_id) | (generated >= max_length)
        if finished.any():
            divisor = length_divisor(generated, options.length_penalty)
            for row in np.flatnonzero(finished):
                score = float(sums[row] / divisor) if want_scores else None
                ids = output_ids(histories[row, 1:1 + generated], prefix, rules.eos_id)
                results[alive[row]] = [Hypothesis(ids, score)]
            keep = np.flatnonzero(~finished)
            if keep.size == 0:
                return results
            histories, sums, alive, chosen = histories[keep], sums[keep], alive[keep], chosen[keep]
            model.select(keep, alive)
        tokens = chosen[:, None]
