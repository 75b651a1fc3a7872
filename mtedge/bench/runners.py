"""One small adapter per way of running a model, all with the same ``translate`` call.

Runs inside a bench worker process only: each adapter imports its own stack in
``load()`` so that a worker's peak memory is what that stack really costs (an mtedge
worker never imports torch).

Length convention (DESIGN §4.2): ``max_length`` counts generated target tokens INCLUDING
the final ``</s>`` (HF ``max_new_tokens``); ``forced`` asks every engine for exactly
``max_length`` tokens (``max_length - 1`` pieces + ``</s>``), for like-for-like tokens/s.
"""

from __future__ import annotations

import json
from pathlib import Path


class Runner:
    """Loads one configuration and translates batches with it."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.config = spec["config"]
        self.bundle = Path(spec["bundle"])
        self.threads = int(spec["threads"])
        # Set by translate() when the engine exposes token ids (a check of forced lengths).
        self.generated_tokens: int | None = None

    def load(self) -> None:
        raise NotImplementedError

    def translate(self, texts: list[str], beam_size: int, max_length: int, forced: bool,
                  length_penalty: float) -> list[str]:
        raise NotImplementedError


class MtedgeRunner(Runner):
    """Ours: ``mtedge.Translator`` on the bundle's engine/precision."""

    def load(self):
        from mtedge import Translator

        self.translator = Translator(self.bundle, engine=self.config["engine"],
                                     precision=self.config["precision"],
                                     device=self.config["device"], threads=self.threads)

    def translate(self, texts, beam_size, max_length, forced, length_penalty):
        out = self.translator.translate(texts, beam_size=beam_size, max_length=max_length,
                                        min_length=max_length if forced else 0,
                                        length_penalty=length_penalty)
        return [t.text for t in out]


class _HFGenerateRunner(Runner):
    """Shared ``generate`` call for the PyTorch model and optimum's ORT model."""

    def _load_tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.spec["torch_dir"])

    def translate(self, texts, beam_size, max_length, forced, length_penalty):
        import torch

        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        kwargs = dict(num_beams=beam_size, max_new_tokens=max_length, length_penalty=length_penalty,
                      do_sample=False, num_return_sequences=1)
        if forced:
            # EOS is suppressed for max_length-1 tokens, then forced_eos_token_id ends it: N tokens.
            kwargs["min_new_tokens"] = max_length - 1
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        pad = self.model.config.pad_token_id
        # position 0 is the decoder start; padding after </s> is not generated output
        self.generated_tokens = int((out[:, 1:] != pad).sum())
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)


class HFTorchRunner(_HFGenerateRunner):
    """Peer: Hugging Face ``generate`` on the PyTorch checkpoint (the quality reference)."""

    def load(self):
        import torch
        from transformers import AutoModelForSeq2SeqLM

        torch.set_num_threads(self.threads)
        self.tokenizer = self._load_tokenizer()
        device = "cuda" if self.config["device"] == "cuda" else "cpu"
        self.model = AutoModelForSeq2SeqLM.from_pretrained(self.spec["torch_dir"]).eval().to(device)


class OptimumRunner(_HFGenerateRunner):
    """Peer: optimum's ``ORTModelForSeq2SeqLM.generate`` on the bundle's own ONNX files."""

    def load(self):
        import onnxruntime as ort
        import torch
        from optimum.onnxruntime import ORTModelForSeq2SeqLM

        torch.set_num_threads(self.threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        provider = "CUDAExecutionProvider" if self.config["device"] == "cuda" else "CPUExecutionProvider"
        self.tokenizer = self._load_tokenizer()
        self.model = ORTModelForSeq2SeqLM.from_pretrained(
            self.spec["view_dir"], session_options=options, provider=provider,
            use_cache=True, use_merged=True, local_files_only=True)


class CT2RawRunner(Runner):
    """Peer: ``ctranslate2.Translator.translate_batch`` with plain sentencepiece around it —
    what our CT2 engine costs on top of the library shows as the gap to ``ct2-int8``."""

    def load(self):
        import ctranslate2
        import sentencepiece as spm

        tok_dir = self.bundle / "tokenizer"
        meta = json.loads((tok_dir / "mtedge_tokenizer.json").read_text(encoding="utf-8"))
        self.source_sp = spm.SentencePieceProcessor(model_file=str(tok_dir / meta["source_spm"]))
        self.target_sp = spm.SentencePieceProcessor(model_file=str(tok_dir / meta["target_spm"]))
        self.prefix, self.suffix = meta.get("source_prefix", []), meta.get("source_suffix", [])
        self.target_prefix = meta.get("target_prefix", [])
        vocab = json.loads((tok_dir / meta["vocab"]).read_text(encoding="utf-8"))
        special = set(meta.get("special_ids", []))
        self.special_pieces = {p for p, i in vocab.items() if i in special} | set(self.target_prefix)
        device = "cuda" if self.config["device"] == "cuda" else "cpu"
        self.translator = ctranslate2.Translator(
            self.spec["engine_dir"], device=device, compute_type=self.config["precision"],
            intra_threads=self.threads, inter_threads=1)

    def translate(self, texts, beam_size, max_length, forced, length_penalty):
        batch = [self.prefix + self.source_sp.encode(t, out_type=str) + self.suffix for t in texts]
        # CT2 counts pieces without </s>: max_new_tokens=N  <->  max_decoding_length=N-1 (DESIGN §4.2)
        length = max_length - 1
        results = self.translator.translate_batch(
            batch, beam_size=beam_size, length_penalty=length_penalty, max_decoding_length=length,
            min_decoding_length=length if forced else 0, max_batch_size=0,
            target_prefix=[list(self.target_prefix)] * len(texts) if self.target_prefix else None)
        hyps = [r.hypotheses[0] for r in results]
        self.generated_tokens = sum(len(h) + 1 for h in hyps)  # + the </s> CT2 does not return
        return [self.target_sp.decode([p for p in h if p not in self.special_pieces]) for h in hyps]


RUNNERS = {"mtedge": MtedgeRunner, "hf": HFTorchRunner, "optimum": OptimumRunner, "ct2raw": CT2RawRunner}


def make_runner(spec: dict) -> Runner:
    return RUNNERS[spec["config"]["runner"]](spec)
