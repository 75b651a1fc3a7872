"""The engines that run a bundle, and :func:`load_engine`, which picks and builds one.

Engine, precision and device are checked in one place, :func:`resolve_engine` (one message each);
:func:`build_engine` takes the values it returns.

Each engine module imports its own library (ctranslate2, onnxruntime, torch) when it is built,
never at ``import mtedge``. ``torch`` is the PyTorch reference and needs the ``mtedge[export]`` extra.
"""

from __future__ import annotations

from mtedge.bundle import GPU_PRECISIONS, PRECISIONS, SHORTLIST_FILE, Bundle
from mtedge.engines.base import Engine
from mtedge.engines.shortlist import CandidateTable
from mtedge.types import DecodeOptions, Hypothesis, TargetSpec
from mtedge.errors import UserError

ENGINES = ("ct2", "onnx", "torch")
DEFAULT_PRECISION = {"ct2": "int8", "onnx": "int8", "torch": "fp32"}
# Names users reach for that an engine spells differently.
PRECISION_ALIASES = {
    "ct2": {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"},
    "onnx": {"float32": "fp32", "float16": "fp16"},
    "torch": {"float32": "fp32"},
}
DEVICES = ("auto", "cpu", "cuda")
SHORTLIST_ENGINES = ("ct2", "onnx")   # the engines that read a vocabulary shortlist

__all__ = ["ENGINES", "DEFAULT_PRECISION", "DecodeOptions", "Engine", "Hypothesis", "TargetSpec",
           "build_engine", "check_engine", "check_shortlist", "load_engine", "resolve_engine", "resolve_precision",
           "resolve_device", "cuda_available"]


def check_engine(engine) -> str:
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    return engine


def resolve_precision(engine: str, precision: str | None) -> str:
    if precision is None:
        return DEFAULT_PRECISION[engine]
    if not isinstance(precision, str):
        raise UserError(f"precision must be a string such as {DEFAULT_PRECISION[engine]!r}, got {precision!r}")
    resolved = PRECISION_ALIASES.get(engine, {}).get(precision, precision)
    if resolved not in PRECISIONS.get(engine, (resolved,)):
        raise UserError(f"unknown {engine} precision {precision!r}; choose from {', '.join(PRECISIONS[engine])}")
    return resolved


def cuda_available(engine: str) -> bool:
    """Whether ``engine`` can run on a CUDA device here (the library's own view)."""
    try:
        if engine == "ct2":
            import ctranslate2

            return ctranslate2.get_cuda_device_count() > 0
        if engine == "onnx":
            import onnxruntime

            return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        if engine == "torch":
            import torch

            return torch.cuda.is_available()
    except Exception:  # the library missing, or a broken CUDA runtime: CPU only
        return False
    return False


def resolve_device(engine: str, device: str, precision: str) -> str:
    """``auto`` → ``cuda`` when the engine sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    gpu_only = precision in GPU_PRECISIONS.get(engine, set())
    if device == "auto":
        device = "cuda" if cuda_available(engine) else "cpu"
    elif device == "cuda" and not cuda_available(engine):
        raise UserError(f"device 'cuda' was asked for, but {engine} sees no CUDA GPU here; "
                        f"use device 'cpu' or 'auto'")
    if gpu_only and device != "cuda":
        raise UserError(f"{engine} precision {precision} runs only on a CUDA device, and none is in use; "
                        f"choose a CPU precision (e.g. {DEFAULT_PRECISION[engine]})")
    return device


def load_engine(bundle: Bundle, engine: str, precision: str | None = None, device: str = "cpu",
                threads: int | None = None, *, tokenizer=None, workers: int = 1,
                graph_optimization: str = "all", shortlist: bool = False) -> Engine:
    """Build ``engine`` at ``precision`` on ``device`` from ``bundle`` (files checked first).

    ``threads``: compute threads per call (None: the library's default). ``workers``: CTranslate2
    calls that may run at once (``inter_threads``); the other engines run one call at a time.
    ``device``: auto | cpu | cuda (see :func:`resolve_device`). ``shortlist``: restrict the output layer to
    the bundle's vocabulary shortlist (see :func:`check_shortlist`).
    """
    engine, precision, device = resolve_engine(engine, precision, device)
    return build_engine(bundle, engine, precision, device, threads, tokenizer=tokenizer, workers=workers,
                        graph_optimization=graph_optimization, shortlist=shortlist)


def resolve_engine(engine: str, precision: str | None, device: str) -> tuple[str, str, str]:
    """The checked ``(engine, precision, device)``: aliases resolved, ``auto`` decided, GPU-only refused."""
    check_engine(engine)
    precision = resolve_precision(engine, precision)
    return engine, precision, resolve_device(engine, device, precision)


def check_shortlist(bundle: Bundle, engine: str, precision: str) -> None:
    """A vocabulary shortlist runs where the bundle has one and the engine reads it: CTranslate2 (``use_vmap``)
    and the ONNX engine on a lean decoder with the shortlist's output layer (mtedge/engines/shortlist.py).
    The PyTorch reference computes every token's logit."""
    if engine not in SHORTLIST_ENGINES:
        raise UserError(f"the vocabulary shortlist runs on the {' and '.join(SHORTLIST_ENGINES)} engines; {engine} "
                        f"computes every token's logit (drop the shortlist, or use engine 'ct2')")
    if not bundle.has_shortlist(engine, precision):
        if bundle.manifest.get("shortlist"):   # a list, but not in this directory: its graphs cannot use one
            raise UserError(f"bundle {bundle.name} has a vocabulary shortlist, but not for {engine} {precision} "
                            f"(only mtedge's lean ONNX decoder reads one, fp16 and optimum's traced graphs do not): "
                            f"choose another precision or engine 'ct2'")
        raise UserError(f"bundle {bundle.name} has no vocabulary shortlist; add one with "
                        f"`mtedge shortlist {bundle.path} --data PAIRS.tsv` (parallel text of the model's domain)")


def build_engine(bundle: Bundle, engine: str, precision: str, device: str, threads: int | None = None, *,
                 tokenizer=None, workers: int = 1, graph_optimization: str = "all",
                 shortlist: bool = False) -> Engine:
    """Build an engine from values :func:`resolve_engine` returned."""
    model_dir = bundle.engine_dir(engine, precision)  # names what the bundle has when it lacks this
    if shortlist:
        check_shortlist(bundle, engine, precision)
    if tokenizer is None:
        from mtedge.tokenizer import BundleTokenizer

        tokenizer = BundleTokenizer(bundle.tokenizer_dir())
    target = tokenizer.target_spec()
    generation = bundle.generation
    if engine == "ct2":
        from mtedge.engines.ct2_engine import CT2Engine

        return CT2Engine(model_dir, target, tokenizer.pieces, precision=precision, device=device,
                         threads=threads, workers=workers, unk_id=tokenizer.unk_id,
                         forced_eos=generation.forces_eos, repetition_penalty=generation.repetition_penalty,
                         no_repeat_ngram_size=generation.no_repeat_ngram_size, shortlist=shortlist)
    if engine == "torch":
        from mtedge.engines.torch_engine import TorchEngine

        return TorchEngine(model_dir, target, device=device, threads=threads)
    from mtedge.engines.onnx_engine import OnnxEngine

    candidates = None
    if shortlist:   # in ids; </s> always, as CTranslate2 keeps it (a search may be forced to end)
        candidates = CandidateTable.load(model_dir / SHORTLIST_FILE, tokenizer.vocab,
                                         keep=(target.eos_id, tokenizer.unk_id))
    return OnnxEngine(model_dir, target, bundle.model_shape, device=device, threads=threads,
                      graph_optimization=graph_optimization, generation=generation, shortlist=candidates)
