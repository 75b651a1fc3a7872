"""The PyTorch reference engine: Hugging Face ``generate`` on the bundle's ``torch/fp32/`` checkpoint.

What the other engines are measured against. torch and transformers are imported only here, and
only when ``engine="torch"`` is asked for (they are the ``mtedge[export]`` extra, not the runtime).

The checkpoint's own generation config applies (bad words, forced EOS, renormalisation…); the
runtime options map to ``max_new_tokens=max_length``, ``min_new_tokens=min_length - 1`` (the runtime
counts ``</s>``, HF does not), ``num_beams``, ``length_penalty``, ``num_return_sequences``. The forced
target prefix (M2M100/mBART language token) is ``forced_bos_token_id``, generated like HF does it.
Scores: beam search reports HF's ``sequences_scores``; greedy search, which has none in HF, gets what
beam search would have counted for the same tokens: each step's log-softmax of the raw logits, a
forced token (language code, forced ``</s>``) at 0, renormalised after the constraints only when the
checkpoint sets ``renormalize_logits``; summed and divided by length ** length_penalty (``</s>`` included).
"""

from __future__ import annotations

from pathlib import Path

from mtedge.engines.base import Engine
from mtedge.types import DecodeOptions, Hypothesis, TargetSpec
from mtedge.errors import UserError


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, model_dir: Path, target: TargetSpec, *, device: str = "cpu", threads: int | None = None):
        try:
            import torch
            from transformers import AutoModelForSeq2SeqLM
        except ImportError as exc:
            raise UserError(f"engine 'torch' needs PyTorch and transformers ({exc}); install mtedge[export], "
                            f"or use engine 'ct2' or 'onnx'") from None
        if len(target.target_prefix_ids) > 1:
            raise UserError("the torch engine supports at most one forced target-prefix token")
        self.torch = torch
        self.target = target
        self.device = device
        if threads:
            torch.set_num_threads(int(threads))  # process-wide: torch has no per-model thread pool
        self.model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir), dtype=torch.float32).eval().to(device)
        self.renormalize = bool(getattr(self.model.generation_config, "renormalize_logits", False))

    def translate_ids(self, batch: list[list[int]], options: DecodeOptions) -> list[list[Hypothesis]]:
        if not batch:
            return []
        torch = self.torch
        width = max(len(ids) for ids in batch)
        # right padding with the pad id, as the HF tokenizer pads a batch
        input_ids = torch.tensor([ids + [self.target.pad_id] * (width - len(ids)) for ids in batch],
                                 device=self.device)
        lengths = torch.tensor([len(ids) for ids in batch], device=self.device)
        attention_mask = (torch.arange(width, device=self.device)[None, :] < lengths[:, None]).long()
        extra = {}
        if options.beam_size > 1:  # HF warns about beam-only flags in greedy search
            extra["early_stopping"] = options.early_stopping
        elif options.return_scores:
            extra["output_logits"] = True  # raw logits, for beam-search-like greedy scores
        if self.target.target_prefix_ids:
            extra["forced_bos_token_id"] = self.target.target_prefix_ids[0]
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                num_beams=options.beam_size, num_return_sequences=options.num_hypotheses,
                max_new_tokens=options.max_length, min_new_tokens=max(0, options.min_length - 1),
                length_penalty=options.length_penalty,
                output_scores=options.return_scores, return_dict_in_generate=True, **extra)
        scores = self._scores(out, options) if options.return_scores else [None] * len(out.sequences)
        n = options.num_hypotheses
        hyps = [self._hypothesis(seq.tolist(), score) for seq, score in zip(out.sequences, scores)]
        return [hyps[i * n:(i + 1) * n] for i in range(len(batch))]

    def _hypothesis(self, sequence: list[int], score: float | None) -> Hypothesis:
        generated = sequence[1 + len(self.target.target_prefix_ids):]  # decoder start, forced prefix
        if self.target.eos_id in generated:
            generated = generated[:generated.index(self.target.eos_id)]
        return Hypothesis(ids=generated, score=score)

    def _scores(self, out, options: DecodeOptions) -> list[float]:
        if options.beam_size > 1:
            return [float(s) for s in out.sequences_scores]
        torch = self.torch
        generated = out.sequences[:, 1:]
        processed = torch.stack(out.scores, dim=1)  # logits after HF's processors
        if self.renormalize:
            steps = processed.log_softmax(-1).gather(-1, generated[..., None]).squeeze(-1)
        else:
            raw = torch.stack(out.logits, dim=1).log_softmax(-1)
            steps = raw.gather(-1, generated[..., None]).squeeze(-1)
            forced = torch.isfinite(processed).sum(-1) == 1  # one token left: forced, log-prob 0 in HF
            steps = torch.where(forced, torch.zeros_like(steps), steps)
        result = []
        for row, tokens in zip(steps, generated):
            tokens = tokens.tolist()
            length = tokens.index(self.target.eos_id) + 1 if self.target.eos_id in tokens else len(tokens)
            result.append(float(row[:length].sum()) / (length ** options.length_penalty))
        return result

    def close(self) -> None:
        self.model = None
