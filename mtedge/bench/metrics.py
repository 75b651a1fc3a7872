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


def quality(hypotheses: list[str], references: list[str] | None) -> dict:
    """BLEU and chrF vs references with their sacrebleu signatures, at full precision (the rounding policy of
    :mod:`mtedge.metrics`); all None without references."""
    if not references:
        return {"bleu": None, "chrf": None, "bleu_signature": None, "chrf_signature": None}
    bleu, chrf = corpus_bleu(hypotheses, references), corpus_chrf(hypotheses, references)
    return {"bleu": bleu.score, "chrf": chrf.score, "bleu_signature": bleu.signature,
            "chrf_signature": chrf.signature}
