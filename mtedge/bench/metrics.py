"""Numbers derived from a worker's raw measurements: percentiles, tokens/s, BLEU/chrF (scored by
:mod:`mtedge.metrics`, as the export validation and the training loop score them).

Target tokens are counted the same way for every engine, from the output text, so a
faster engine cannot win by counting differently: the number of target-sentencepiece
pieces of each output plus one for ``</s>`` ("pieces + EOS"). With forced lengths
(synthetic models) every engine emits exactly ``max_length`` tokens incl. ``</s>`` per
sentence, so the count is ``n_sentences * max_length`` ("forced").
"""

from __future__ import annotations

import math

from mtedge.metrics import corpus_bleu, corpus_chrf


def percentile(samples: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    if not samples:
        return None
    data = sorted(samples)
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def latency_summary(samples: list[float]) -> dict:
    return {"p50": percentile(samples, 50), "p90": percentile(samples, 90),
            "p99": percentile(samples, 99), "n": len(samples)}


class TokenCounter:
    """Counts target tokens of outputs: target spm pieces + 1 for ``</s>``."""

    method = "target sentencepiece pieces of each output + 1 (</s>)"

    def __init__(self, target_spm_path: str):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(target_spm_path))

    def count(self, outputs: list[str]) -> int:
        return sum(len(self.sp.encode(text, out_type=str)) + 1 for text in outputs)


def median(values: list[float]) -> float | None:
    return percentile(values, 50)


# How sure an interval around a median must be before a target is called PASS or MISS
INTERVAL_CONFIDENCE = 0.90


def median_interval(values: list[float], confidence: float = INTERVAL_CONFIDENCE) -> tuple[float, float, float]:
    """``(low, high, coverage)``: a distribution-free confidence interval for the median of ``values``.

    The k-th smallest and k-th largest of n independent samples enclose the true median with probability
    1 - 2·P(Binomial(n, 1/2) < k) (the sign test), whatever the distribution: k is the largest for which
    that reaches ``confidence``. Fewer than 5 samples cannot reach 90%: their min and max are returned
    with the coverage they have (75% for 3). A timing on a shared VM has outliers (one slow minute), and
    this interval, unlike min–max, does not widen as rounds are added: it narrows."""
    data = sorted(values)
    n = len(data)
    if n == 0:
        raise ValueError("median_interval of no values")
    below = 0.0      # P(Binomial(n, 1/2) < k), accumulated as k grows
    k, coverage = 1, 1.0 - 2 * 0.5 ** n
    for j in range(1, n // 2 + 1):
        below += math.comb(n, j - 1) * 0.5 ** n
        if 1.0 - 2 * below < confidence and j > 1:
            break
        k, coverage = j, 1.0 - 2 * below
    return data[k - 1], data[n - k], coverage


def quality(hypotheses: list[str], references: list[str] | None) -> dict:
    """BLEU and chrF vs references with their sacrebleu signatures, at full precision (the rounding policy of
    :mod:`mtedge.metrics`); all None without references."""
    if not references:
        return {"bleu": None, "chrf": None, "bleu_signature": None, "chrf_signature": None}
    bleu, chrf = corpus_bleu(hypotheses, references), corpus_chrf(hypotheses, references)
    return {"bleu": bleu.score, "chrf": chrf.score, "bleu_signature": bleu.signature,
            "chrf_signature": chrf.signature}
