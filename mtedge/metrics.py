"""Translation quality numbers, computed one way for the export validation, the training loop and the bench:
corpus BLEU and chrF (sacrebleu defaults, one reference per sentence) with their sacrebleu signatures, and
the exact-match agreement of two systems' outputs.

Rounding policy: every function here returns full precision. A number is rounded only where it is
recorded as a summary — the manifest's validation records and the training log — and there with
:func:`rounded` (scores and score differences: 2 decimals, what sacrebleu prints; agreement rates: 4),
differences being taken between the rounded scores. The bench report keeps full precision, like every
other raw measurement it holds (timings, tokens/s), because its deltas and target verdicts are computed
from the stored values; its Markdown prints 2 decimals.

sacrebleu is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import NamedTuple

SCORE_DECIMALS = 2
RATE_DECIMALS = 4


class Score(NamedTuple):
    score: float
    signature: str


def _corpus(metric, hypotheses: list[str], references: list[str]) -> Score:
    result = metric.corpus_score(hypotheses, [references])
    return Score(result.score, str(metric.get_signature()))  # the signature exists once a corpus is scored


def corpus_bleu(hypotheses: list[str], references: list[str]) -> Score:
    from sacrebleu.metrics import BLEU

    return _corpus(BLEU(), hypotheses, references)


def corpus_chrf(hypotheses: list[str], references: list[str]) -> Score:
    from sacrebleu.metrics import CHRF

    return _corpus(CHRF(), hypotheses, references)


def agreement(hypotheses: list[str], reference_outputs: list[str]) -> float:
    """Share of sentences whose output is exactly the reference system's output."""
    if len(hypotheses) != len(reference_outputs) or not hypotheses:
        raise ValueError("agreement needs two equally long, non-empty output lists")
    return sum(h == r for h, r in zip(hypotheses, reference_outputs)) / len(hypotheses)


def rounded(value: float, decimals: int = SCORE_DECIMALS) -> float:
    """A score as it is recorded (see the rounding policy above)."""
    return round(value, decimals)
