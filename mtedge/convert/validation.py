"""Export validation: translate a dev set with the PyTorch model (HF generate) and with each export through
a translator the caller's factory builds (``mtedge.Translator`` in the export pipeline), greedy and beam 4
with the same length setting (mtedge/DESIGN.md §4.2), and record agreement and BLEU/chrF (``mtedge.metrics``,
with sacrebleu signatures) in the manifest.

The quality gate compares the BLEU an export loses against PyTorch:
- with references: ``BLEU(torch vs refs) − BLEU(export vs refs)``;
- without references: ``100 − BLEU(export vs torch outputs)`` (torch's outputs are the reference).
The larger drop over the decoding modes counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mtedge import metrics
from mtedge.data import read_eval_pairs
from mtedge.errors import DataError, UserError

BUILTIN_SAMPLE = Path(__file__).with_name("validation_sample_en.txt")
# decoding mode name -> beam size
MODES = {"greedy": 1, "beam4": 4}
# Beam search stops once beam-size hypotheses have ended (HF early_stopping=True): the rule CTranslate2
# implements. HF's default heuristic may search on after that and, rarely, find another best hypothesis
# (1 of 40 on a t5 fixture): a difference of search rules, not of the export, so it is not measured here.
EARLY_STOPPING = True
# Sentences per HF generate call: batched like the runtime, small enough for big models on CPU.
TORCH_BATCH = 16
# make_translator(bundle_dir, *, engine, precision, device, threads) -> an object with
# translate(sources, beam_size=, max_length=, length_penalty=, early_stopping=) returning items with .text.
# The caller gives it (the export pipeline: mtedge.translator.Translator): validation builds no translator itself.
TranslatorFactory = Callable[..., object]


class QualityGateError(UserError):
    """An export loses more BLEU against PyTorch than --max-bleu-drop allows."""


@dataclass
class ValidationSet:
    sources: list[str]
    references: list[str] | None
    origin: str


def load_validation_set(path: str | Path | None, n: int) -> ValidationSet:
    """The first ``n`` sentences of ``path``, or of the built-in generic English sample."""
    if path is None:
        sources = [s for s in BUILTIN_SAMPLE.read_text(encoding="utf-8").splitlines() if s.strip()][:n]
        return ValidationSet(sources, None, f"built-in English sample ({BUILTIN_SAMPLE.name})")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"validation file not found: {path}")
    pairs = [(s, r) for s, r in read_eval_pairs(path) if s.strip()][:n]
    if not pairs:
        raise DataError(f"validation file {path} has no sentences")
    refs = [r for _, r in pairs]
    has_refs = all(r is not None and r.strip() for r in refs)
    return ValidationSet([s for s, _ in pairs], refs if has_refs else None, str(path))


def pairs_set(pairs: list[tuple[str, str]], origin: str) -> ValidationSet:
    return ValidationSet([s for s, _ in pairs], [r for _, r in pairs], origin)


# -- the PyTorch reference ---------------------------------------------------------------------
def torch_outputs(model_dir: Path, tok, sources: list[str], *, max_new_tokens: int, length_penalty: float,
                  forced_bos_token_id: int | None, max_source_length: int, threads: int | None = None,
                  ) -> dict[str, list[str]]:
    """HF ``generate`` translations of ``sources`` for every mode in :data:`MODES`."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        extra = {"forced_bos_token_id": forced_bos_token_id} if forced_bos_token_id is not None else {}
        outputs = {}
        for mode, beams in MODES.items():
            texts = []
            for start in range(0, len(sources), TORCH_BATCH):
                batch = tok(sources[start:start + TORCH_BATCH], return_tensors="pt", padding=True,
                            truncation=True, max_length=max_source_length)
                with torch.inference_mode():
                    generated = model.generate(**batch, num_beams=beams, do_sample=False,
                                               max_new_tokens=max_new_tokens, length_penalty=length_penalty,
                                               num_return_sequences=1, early_stopping=EARLY_STOPPING, **extra)
                texts += tok.batch_decode(generated, skip_special_tokens=True)
            outputs[mode] = texts
        return outputs
    finally:
        torch.set_num_threads(previous)


# -- metrics (recorded rounded: the policy in mtedge.metrics) ----------------------------------
def _scores(hyps: list[str], refs: list[str]) -> tuple[float, float, str, str]:
    bleu, chrf = metrics.corpus_bleu(hyps, refs), metrics.corpus_chrf(hyps, refs)
    return metrics.rounded(bleu.score), metrics.rounded(chrf.score), bleu.signature, chrf.signature


def reference_scores(torch_out: dict[str, list[str]], references: list[str] | None) -> dict:
    """PyTorch's own BLEU/chrF against the references, per mode (empty without references)."""
    if not references:
        return {}
    out = {}
    for mode, hyps in torch_out.items():
        bleu, chrf, bsig, csig = _scores(hyps, references)
        out[mode] = {"bleu_ref": bleu, "chrf_ref": chrf, "signature": {"bleu": bsig, "chrf": csig}}
    return out


def mode_record(hyps: list[str], torch_hyps: list[str], references: list[str] | None,
                torch_ref: dict | None) -> dict:
    bleu_t, chrf_t, bsig, csig = _scores(hyps, torch_hyps)
    agreement = metrics.rounded(metrics.agreement(hyps, torch_hyps), metrics.RATE_DECIMALS)
    record = {"agreement": agreement, "bleu_vs_torch": bleu_t, "chrf_vs_torch": chrf_t,
              "bleu_ref": None, "chrf_ref": None, "bleu_delta": None,
              "signature": {"bleu": bsig, "chrf": csig}}
    if references:
        bleu_r, chrf_r, _, _ = _scores(hyps, references)
        record.update(bleu_ref=bleu_r, chrf_ref=chrf_r, bleu_delta=metrics.rounded(bleu_r - torch_ref["bleu_ref"]))
        record["bleu_drop"] = metrics.rounded(torch_ref["bleu_ref"] - bleu_r)
    else:
        record["bleu_drop"] = metrics.rounded(100.0 - bleu_t)
    return record


# -- the exports -------------------------------------------------------------------------------
def translate_with_bundle(make_translator: TranslatorFactory, bundle_dir: Path, engine: str, precision: str,
                          sources: list[str], *, max_new_tokens: int, length_penalty: float, device: str = "cpu",
                          threads: int | None = None) -> dict[str, list[str]]:
    translator = make_translator(bundle_dir, engine=engine, precision=precision, device=device, threads=threads)
    out = {}
    for mode, beams in MODES.items():
        results = translator.translate(sources, beam_size=beams, max_length=max_new_tokens,
                                       length_penalty=length_penalty, early_stopping=EARLY_STOPPING)
        out[mode] = [r.text for r in results]
    return out


def validate_export(make_translator: TranslatorFactory, bundle_dir: Path, engine: str, precision: str,
                    vset: ValidationSet, torch_out: dict[str, list[str]], torch_ref: dict, *, max_new_tokens: int,
                    length_penalty: float, device: str = "cpu", threads: int | None = None) -> dict:
    outputs = translate_with_bundle(make_translator, bundle_dir, engine, precision, vset.sources,
                                    max_new_tokens=max_new_tokens, length_penalty=length_penalty, device=device,
                                    threads=threads)
    record = {"n": len(vset.sources), "source": vset.origin, "max_length": max_new_tokens,
              "length_penalty": length_penalty, "device": device,
              "gate_basis": "bleu_vs_references" if vset.references else "100_minus_bleu_vs_torch"}
    for mode in MODES:
        record[mode] = mode_record(outputs[mode], torch_out[mode], vset.references, torch_ref.get(mode))
    return record


def bleu_drop(record: dict) -> float:
    return max(record[mode]["bleu_drop"] for mode in MODES)


def check_gate(validations: dict[tuple[str, str], dict], max_bleu_drop: float | None) -> None:
    """Raise :class:`QualityGateError` naming every engine+precision that loses too much."""
    if max_bleu_drop is None:
        return
    failures = []
    for (engine, precision), record in validations.items():
        if not record or "skipped" in record:
            continue
        drop = bleu_drop(record)
        if drop > max_bleu_drop:
            worst = max(MODES, key=lambda m: record[m]["bleu_drop"])
            basis = "BLEU vs references" if record["gate_basis"] == "bleu_vs_references" \
                else "100 − BLEU vs PyTorch output"
            failures.append(f"{engine} {precision} loses {drop:.2f} BLEU vs PyTorch ({worst}, {basis}, "
                            f"n={record['n']})")
    if failures:
        raise QualityGateError(f"quality gate failed (--max-bleu-drop {max_bleu_drop}): " + "; ".join(failures)
                               + "; the bundle was not written")
