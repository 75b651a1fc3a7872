"""One small adapter per way of running a model, all with the same ``translate`` call.

Runs inside a bench worker process only: each adapter imports its own stack in
``load()`` so that a worker's peak memory is what that stack really costs (an mtedge
worker never imports torch).

Length convention (mtedge/DESIGN.md §4.2): ``max_length`` counts generated target tokens INCLUDING
the final ``</s>`` (HF ``max_new_tokens``); ``forced`` asks every engine for exactly
``max_length`` tokens (``max_length - 1`` pieces + ``</s>``), for like-for-like tokens/s.
"""

from __future__ import annotations

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

    def runtime(self) -> dict:
        """What actually ran, as the loaded library reports it (after ``load``)."""
        return {}


class MtedgeRunner(Runner):
    """Ours: ``mtedge.Translator`` on the bundle's engine/precision."""

    def load(self):
        from mtedge import Translator

        self.translator = Translator(self.bundle, engine=self.config["engine"],
                                     precision=self.config["precision"], device=self.config["device"],
                                     threads=self.threads, shortlist=self.config.get("shortlist", False))

    def runtime(self):
        engine = self.translator.engine
        if hasattr(engine, "translator"):      # CTranslate2
            return ct2_runtime(engine.translator)
        if hasattr(engine, "decoder"):         # ONNX Runtime
            from mtedge.engines.rowwise_int8 import int8_matmul_op, weight_bits_of

            runtime = {"onnxruntime_providers": engine.decoder.get_providers()}
            metadata = engine.decoder.get_modelmeta().custom_metadata_map
            op = int8_matmul_op(metadata)
            if op:   # int8_latency and int4 both run MatMulNBits: the width tells them apart
                runtime["onnx_decoder_int8_op"] = f"{op}, {weight_bits_of(metadata)}-bit weights"
            return runtime
        return {}

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

        # on the model's device: a CUDA config's model lives on the GPU
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True).to(self.model.device)
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


class HFTorchInt8Runner(HFTorchRunner):
    """Peer: the same ``generate`` after ``torch.ao.quantization.quantize_dynamic`` (every ``nn.Linear`` int8,
    activations quantized on the fly): PyTorch's own one-line int8, CPU only. torch 2.13 warns that
    ``torch.ao.quantization`` is deprecated; it is still what a PyTorch user finds first."""

    def load(self):
        import torch

        super().load()
        self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)

    def runtime(self):
        import torch

        return {"torch_quantized_engine": torch.backends.quantized.engine}


class OptimumRunner(_HFGenerateRunner):
    """Peer: optimum's ``ORTModelForSeq2SeqLM.generate`` on the bundle's own ONNX files."""

    def runtime(self):
        return {"onnxruntime_providers": list(self.model.providers)}

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


def ct2_runtime(translator) -> dict:
    """The compute type CTranslate2 settled on (it may differ from the one asked for where the CPU lacks it)."""
    return {"ct2_compute_type": translator.compute_type, "ct2_device": translator.device}


class CT2RawRunner(Runner):
    """Peer: ``ctranslate2.Translator.translate_batch`` called directly — what our CT2 engine costs
    on top of the library shows as the gap to ``ct2-int8``.

    Only the CT2 call is "raw": both sides must do the same work for the gap to be the wrapper's
    (cleaning, batching, id mapping, result objects). So the CT2 options follow our engine's
    (``mtedge.engines.ct2_engine``: the same length rule, no CT2-side truncation, one batch per call),
    and the text goes through the bundle's own tokenizer (HF-exact, torch-free, cheap): plain
    sentencepiece would feed T5 different pieces (no leading ``▁`` with legacy=False) and so
    compare different translations."""

    def load(self):
        import ctranslate2

        from mtedge.bundle import Bundle
        from mtedge.tokenizer import BundleTokenizer

        bundle = Bundle.open(self.bundle)
        self.tokenizer = BundleTokenizer(bundle.tokenizer_dir())
        self.target_prefix = self.tokenizer.ids_to_pieces(self.tokenizer.target_prefix_ids)
        self.eos_piece = self.tokenizer.pieces[self.tokenizer.eos_id]
        self.forced_eos = bundle.generation.forces_eos
        device = "cuda" if self.config["device"] == "cuda" else "cpu"
        self.translator = ctranslate2.Translator(
            self.spec["engine_dir"], device=device, compute_type=self.config["precision"],
            intra_threads=self.threads, inter_threads=1)

    def runtime(self):
        return ct2_runtime(self.translator)

    def translate(self, texts, beam_size, max_length, forced, length_penalty):
        from mtedge.engines.ct2_engine import decoding_steps

        # source_tokens truncates to the model's limit like our Translator, so CT2 gets
        # max_input_length=0 on both sides (CT2's default, 1024, would cut differently)
        batch = [self.tokenizer.source_tokens(t) for t in texts]
        # Marian (forced </s>) gets N-1 CT2 steps, T5/M2M100 N: the rule our engine uses (mtedge/DESIGN.md §4.2).
        # min_decoding_length=M is HF min_new_tokens=M, so forced N tokens incl. </s> is M = N-1.
        results = self.translator.translate_batch(
            batch, beam_size=beam_size, length_penalty=length_penalty,
            max_decoding_length=decoding_steps(max_length, self.forced_eos),
            min_decoding_length=max_length - 1 if forced else 0, max_input_length=0, max_batch_size=0,
            return_end_token=True,
            target_prefix=[list(self.target_prefix)] * len(texts) if self.target_prefix else None)
        hyps = [r.hypotheses[0] for r in results]
        # tokens as HF counts them (prefix and </s> included): a forced-EOS model that hit the
        # limit gets the </s> HF forces there
        self.generated_tokens = sum(len(h) + (self.forced_eos and (not h or h[-1] != self.eos_piece))
                                    for h in hyps)
        return [self.tokenizer.decode(self.tokenizer.pieces_to_ids(h)) for h in hyps]


RUNNERS = {"mtedge": MtedgeRunner, "hf": HFTorchRunner, "hf-int8": HFTorchInt8Runner, "optimum": OptimumRunner,
           "ct2raw": CT2RawRunner}


def make_runner(spec: dict) -> Runner:
    return RUNNERS[spec["config"]["runner"]](spec)
