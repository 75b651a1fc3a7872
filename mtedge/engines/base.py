"""What every engine does: translate batches of source token ids into n-best target token ids.

The engines work on ids; ``mtedge.translator.Translator`` owns text, tokenization, batching and
defaults. No torch or transformers here.

Length convention (mtedge/DESIGN.md §4.2): ``max_length`` counts generated target tokens INCLUDING the final
``</s>`` (Hugging Face ``max_new_tokens``), and ``min_length`` likewise (HF ``min_new_tokens``).
The forced target prefix (M2M100/mBART language token) counts as generated, as in HF ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 4
    max_length: int = 256          # generated tokens incl. </s> (HF max_new_tokens)
    min_length: int = 0            # generated tokens incl. </s> (HF min_new_tokens)
    length_penalty: float = 1.0    # HF: score = sum(logprobs) / length ** length_penalty
    num_hypotheses: int = 1
    early_stopping: bool = False   # HF beam-search early_stopping (False: HF's heuristic)
    return_scores: bool = False


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


class Engine:
    """One loaded model. Engines are NOT required to be thread-safe: the Translator serialises calls."""

    name = "base"

    def translate_ids(self, batch: list[list[int]], options: DecodeOptions) -> list[list[Hypothesis]]:
        """``batch``: source ids (prefix/suffix/</s> already added). Returns n-best per source."""
        raise NotImplementedError

    def close(self) -> None:
        pass
