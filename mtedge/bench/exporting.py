"""Turning what the user gave ``mtedge bench`` into a bundle, through the export stage's API."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mtedge.bundle import MANIFEST_NAME, Bundle
from mtedge.errors import UserError


def _checkpoint_key(model_dir: Path) -> str:
    """Cheap identity of a checkpoint: names, sizes and mtimes of its files."""
    h = hashlib.sha256()
    for p in sorted(Path(model_dir).iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


BENCH_ONNX_PRECISIONS = ("fp32", "int8", "int8_latency", "int4")
BENCH_CT2_PRECISIONS = ("float32", "int8", "int16")


def ct2_cpu_compute_types() -> set[str]:
    """What CTranslate2 can run on this CPU; int16 needs Intel MKL, so an AMD CPU has none."""
    import ctranslate2

    return set(ctranslate2.get_supported_compute_types("cpu"))


def export_for_bench(model_dir: Path, bundle_dir: Path, synthetic: bool = False, name: str | None = None) -> Path:
    """Exports an HF checkpoint to ``bundle_dir`` with every CPU precision the bench measures
    that this CPU can run (and the torch copy the peers need)."""
    from mtedge.convert import export_bundle  # the export stage; imports torch/optimum

    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    # an unsupported precision would fail the export's validation (the whole bundle); left out, its
    # row says why instead (harness.prepare_spec)
    supported = ct2_cpu_compute_types()
    kwargs = dict(onnx_precisions=list(BENCH_ONNX_PRECISIONS),
                  ct2_precisions=[p for p in BENCH_CT2_PRECISIONS if p in supported], include_torch=True,
                  name=name)
    if synthetic:
        kwargs["validate"] = False   # random weights: parity checks of noise would only cost time
    export_bundle(model_dir, bundle_dir, **kwargs)
    return bundle_dir


def resolve_bundle(model: str | Path, work_dir: Path) -> tuple[Path, str | None]:
    """(bundle dir, label) for a bundle dir, or a bench-owned export of an HF checkpoint dir
    (cached under ``work_dir/exports`` by the checkpoint's file identity)."""
    path = Path(model)
    if Bundle.is_bundle_dir(path):
        return path, None
    if (path / "config.json").is_file():
        from mtedge.families import detect_family

        detect_family(path)  # a clear error for an unsupported model before minutes of export
        bundle_dir = Path(work_dir) / "exports" / f"{path.resolve().name}-{_checkpoint_key(path)}"
        if not Bundle.is_bundle_dir(bundle_dir):
            export_for_bench(path, bundle_dir)
        return bundle_dir, path.resolve().name
    if not path.exists():
        raise UserError(f"model not found: {path}")
    raise UserError(f"{path} is neither an mtedge bundle (no {MANIFEST_NAME}) nor a Hugging Face "
                    f"checkpoint (no config.json)")
