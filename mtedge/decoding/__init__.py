"""Engine-agnostic decoding: greedy and beam search over a :class:`StepModel` (numpy only).

An engine supplies a decoder that returns next-token logits for a set of rows and can re-arrange
them (``StepModel.logits`` / ``StepModel.select``); everything else — length limits, bans, forced
tokens, scores, n-best — is here and matches Hugging Face ``generate`` (transformers 4.57).
"""

from __future__ import annotations

from mtedge.decoding.beam import beam_search
from mtedge.decoding.greedy import greedy_search
from mtedge.decoding.logits import LogitsProcessor, TokenRules
from mtedge.decoding.model import StepModel
from mtedge.types import DecodeOptions, Hypothesis

__all__ = ["StepModel", "TokenRules", "LogitsProcessor", "decode", "greedy_search", "beam_search"]


def decode(model: StepModel, num_sources: int, rules: TokenRules,
           options: DecodeOptions) -> list[list[Hypothesis]]:
    """n-best hypotheses for each of ``num_sources`` sentences: greedy when ``beam_size == 1``
    (HF ``num_beams=1``), beam search otherwise."""
    options.check()
    if options.beam_size == 1:
        return greedy_search(model, num_sources, rules, options)
    return beam_search(model, num_sources, rules, options)
