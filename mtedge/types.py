"""The values that cross the runtime's floors: decode options in, hypotheses out, and the target-side ids.

They live on the lowest floor so that ``decoding/``, ``tokenizer.py``, the engines and the server all import
them downward. No imports beyond the standard library.

Length convention (mtedge/DESIGN.md §4.2): ``max_length`` counts generated target tokens INCLUDING the final
``</s>`` (Hugging Face ``max_new_tokens``), and ``min_length`` likewise (HF ``min_new_tokens``).
The forced target prefix (M2M100/mBART language token) counts as generated, as in HF ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mtedge.errors import UserError


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 4
    max_length: int = 256          # generated tokens incl. </s> (HF max_new_tokens)
    min_length: int = 0            # generated tokens incl. </s> (HF min_new_tokens)
    length_penalty: float = 1.0    # HF: score = sum(logprobs) / length ** length_penalty
    num_hypotheses: int = 1
    early_stopping: bool = False   # HF beam-search early_stopping (False: HF's heuristic)
    return_scores: bool = False

    def check(self, name=lambda key: key) -> "DecodeOptions":
        """Raise a one-line UserError for options no model can decode with (the model-specific limits are
        the Translator's); ``name`` maps a field to what the caller calls it (the CLI: ``--beam``)."""
        for key in ("beam_size", "max_length", "num_hypotheses"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                raise UserError(f"{name(key)} must be a positive integer, got {value!r}")
        if not _is_int(self.min_length) or self.min_length < 0:
            raise UserError(f"{name('min_length')} must be a non-negative integer, got {self.min_length!r}")
        if self.min_length > self.max_length:
            raise UserError(f"{name('min_length')} ({self.min_length}) is larger than {name('max_length')} "
                            f"({self.max_length})")
        if self.num_hypotheses > self.beam_size:
            raise UserError(f"{name('num_hypotheses')} ({self.num_hypotheses}) cannot exceed {name('beam_size')} "
                            f"({self.beam_size}); raise {name('beam_size')} to at least {self.num_hypotheses}")
        return self


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Hypothesis:
    ids: list[int]                 # generated target ids: no decoder start, no forced prefix, no </s>
    score: float | None = None     # HF sequence score (length-penalised sum of log-probs)


@dataclass
class TargetSpec:
    """The target-side ids an engine needs, from the bundle tokenizer (mtedge_tokenizer.json)."""

    decoder_start_id: int
    eos_id: int
    pad_id: int
    target_prefix_ids: list[int] = field(default_factory=list)   # forced first tokens (language)
    bad_words_ids: list[list[int]] = field(default_factory=list)
