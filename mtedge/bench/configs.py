"""The configurations a benchmark run can measure: engine x precision x who runs it.

"ours" rows go through ``mtedge.Translator``; "peer" rows are what a user would run
instead (Hugging Face generate, optimum's ORTModelForSeq2SeqLM on the very same ONNX
files, CTranslate2 called directly), so every ratio in the report compares like with like.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mtedge.errors import UserError


@dataclass(frozen=True)
class BenchConfig:
    name: str
    runner: str          # mtedge | hf | hf-int8 | optimum | ct2raw  (mtedge.bench.runners)
    engine: str          # bundle engine whose files it runs: onnx | ct2 | torch
    precision: str       # bundle precision name (export/README.md)
    device: str = "cpu"
    group: str = "ours"  # ours | peer
    shortlist: bool = False   # logits for the bundle's vocabulary shortlist only (mtedge shortlist)

    def to_dict(self) -> dict:
        return asdict(self)


REFERENCE_CONFIG = "hf-torch-fp32"

_CPU = [
    BenchConfig("onnx-fp32", "mtedge", "onnx", "fp32"),
    BenchConfig("onnx-int8", "mtedge", "onnx", "int8"),
    # the same int8 weights with the decoder written for one sentence at a time (interactive use)
    BenchConfig("onnx-int8-latency", "mtedge", "onnx", "int8_latency"),
    # 4-bit weights in blocks (both graphs for one sentence at a time): the smallest files
    BenchConfig("onnx-int4", "mtedge", "onnx", "int4"),
    BenchConfig("ct2-float32", "mtedge", "ct2", "float32"),
    BenchConfig("ct2-int8", "mtedge", "ct2", "int8"),
    BenchConfig("ct2-int16", "mtedge", "ct2", "int16"),
    # int8 with the bundle's vocabulary shortlist (measured where the bundle has one: `mtedge shortlist`)
    BenchConfig("ct2-int8-shortlist", "mtedge", "ct2", "int8", shortlist=True),
    BenchConfig("onnx-int8-shortlist", "mtedge", "onnx", "int8", shortlist=True),
    BenchConfig("onnx-int8-latency-shortlist", "mtedge", "onnx", "int8_latency", shortlist=True),
    BenchConfig("hf-torch-fp32", "hf", "torch", "fp32", group="peer"),
    # what a PyTorch user tries first for speed: dynamic int8 Linear layers on the same checkpoint
    BenchConfig("hf-torch-int8", "hf-int8", "torch", "fp32", group="peer"),
    BenchConfig("optimum-ort-fp32", "optimum", "onnx", "fp32", group="peer"),
    BenchConfig("optimum-ort-int8", "optimum", "onnx", "int8", group="peer"),
    BenchConfig("ct2-raw-int8", "ct2raw", "ct2", "int8", group="peer"),
]
_GPU = [
    BenchConfig("onnx-fp32-cuda", "mtedge", "onnx", "fp32", device="cuda"),
    BenchConfig("onnx-fp16", "mtedge", "onnx", "fp16", device="cuda"),
    BenchConfig("ct2-float32-cuda", "mtedge", "ct2", "float32", device="cuda"),
    BenchConfig("ct2-float16", "mtedge", "ct2", "float16", device="cuda"),
    BenchConfig("ct2-int8_float16", "mtedge", "ct2", "int8_float16", device="cuda"),
    # the peers a GPU user would pick instead: generate on the GPU, and CTranslate2 called directly
    BenchConfig("hf-torch-fp32-cuda", "hf", "torch", "fp32", device="cuda", group="peer"),
    BenchConfig("ct2-raw-float16", "ct2raw", "ct2", "float16", device="cuda", group="peer"),
]
ALL_CONFIGS = {c.name: c for c in _CPU + _GPU}


def default_config_names(gpu: bool) -> list[str]:
    return [c.name for c in _CPU] + ([c.name for c in _GPU] if gpu else [])


def resolve_configs(spec: str | None, gpu: bool) -> list[BenchConfig]:
    """``--configs a,b,c`` (or None for the defaults) -> configs; unknown names are a user error."""
    if not spec:
        names = default_config_names(gpu)
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        unknown = [n for n in names if n not in ALL_CONFIGS]
        if unknown:
            raise UserError(
                f"unknown bench config {', '.join(unknown)}; known: {', '.join(ALL_CONFIGS)}"
            )
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return [ALL_CONFIGS[n] for n in seen]
