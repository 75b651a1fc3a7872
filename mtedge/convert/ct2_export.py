"""CTranslate2 conversion: load the checkpoint once, save one model directory per quantization."""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

from mtedge.convert.quiet import quiet_libraries
from mtedge.errors import UserError


class PadRowError(UserError):
    """A Marian <pad> embedding that is not zero, refused under --strict-pad."""


def marian_pad_row_norm(model_dir: Path, pad_id: int) -> float:
    """Largest L2 norm of the <pad> row over the vocabulary matrices (embeddings, lm_head)."""
    import torch
    from safetensors import safe_open

    from mtedge.convert.source import weight_files

    def is_vocab_matrix(name: str) -> bool:
        return name.endswith(("embed_tokens.weight", "shared.weight", "lm_head.weight"))

    norm = 0.0
    for path in weight_files(model_dir):
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as weights:
                rows = [weights.get_slice(n)[pad_id : pad_id + 1] for n in weights.keys() if is_vocab_matrix(n)]
        elif path.suffix == ".bin":
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            rows = [t[pad_id : pad_id + 1] for n, t in state.items() if is_vocab_matrix(n)]
        else:
            continue
        for row in rows:
            norm = max(norm, float(row.double().norm()))
    return norm


def zero_marian_pad_copy(model_dir: Path, pad_id: int, scratch: Path) -> Path:
    """A copy of the checkpoint with the <pad> row of every vocabulary matrix set to zero."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.no_grad():
        for module in (model.get_input_embeddings(), model.get_output_embeddings(),
                       getattr(model.get_decoder(), "embed_tokens", None)):
            if module is not None:
                module.weight[pad_id].zero_()
    out = Path(scratch) / "pad-zeroed"
    model.save_pretrained(out, safe_serialization=True)
    for path in Path(model_dir).iterdir():  # tokenizer + generation files the converter reads
        if path.is_file() and not (out / path.name).exists() and path.suffix != ".bin" \
                and not path.name.endswith(".safetensors"):
            shutil.copyfile(path, out / path.name)
    return out


def check_marian_pad(model_dir: Path, pad_id: int, strict: bool, scratch: Path) -> tuple[Path, dict]:
    """(checkpoint dir to convert, manifest note).

    CTranslate2's Marian loader drops the <pad> row and starts the decoder from a zero embedding,
    while PyTorch feeds the <pad> embedding (pad = decoder start). Full fine-tuning can move that
    row (it is tied to lm_head), and CT2 then silently translates differently (mtedge/DESIGN.md §4.1).
    So a nonzero row is zeroed in a temporary copy, the only thing CT2 can represent, and the
    manifest says so; the validation then measures what that costs against PyTorch.
    """
    norm = marian_pad_row_norm(model_dir, pad_id)
    note = {"pad_id": pad_id, "pad_row_norm": norm, "pad_row_zeroed": False}
    if norm == 0.0:
        return Path(model_dir), note
    if strict:
        raise PadRowError(
            f"the Marian <pad> embedding row (id {pad_id}) is not zero (L2 norm {norm:.4g}); CTranslate2 "
            f"assumes it is and would translate differently from PyTorch (mtedge/DESIGN.md §4.1). Re-zero it after "
            f"each optimizer step in training, or export without --strict-pad to zero it for CT2 only")
    note["pad_row_zeroed"] = True
    return zero_marian_pad_copy(model_dir, pad_id, scratch), note


class _LoadedOnce:
    """Loads the checkpoint into a CT2 model spec once; every precision is quantized from a copy
    of that float32 spec instead of re-reading the PyTorch weights."""

    def __init__(self, model_dir: Path):
        from ctranslate2.converters import TransformersConverter

        self._converter = TransformersConverter(str(model_dir), low_cpu_mem_usage=True)
        self._spec = None

    def save(self, out_dir: Path, quantization: str) -> None:
        if self._spec is None:
            with quiet_libraries():
                self._spec = self._converter._load()  # the converter's own load step (Converter.convert)
            self._spec.validate()
        spec = copy.deepcopy(self._spec)
        spec.optimize(quantization=quantization)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=False)
        spec.save(str(out_dir))


def export_ct2(model_dir: Path, out_root: Path, precisions: list[str], *, family: str, pad_id: int | None,
               strict_pad: bool, log=print) -> tuple[dict[str, dict], dict]:
    """Writes ``out_root/<precision>/`` for each precision; returns (options per precision, notes)."""
    notes: dict = {}
    with tempfile.TemporaryDirectory(dir=out_root.parent, prefix=".ct2-src-") as scratch:
        convert_from = Path(model_dir)
        if family == "marian" and pad_id is not None:
            convert_from, notes = check_marian_pad(model_dir, pad_id, strict_pad, Path(scratch))
            if notes["pad_row_zeroed"]:
                log(f"  Marian <pad> row is nonzero (norm {notes['pad_row_norm']:.4g}): zeroed for CT2 only")
        loader = _LoadedOnce(convert_from)
        options = {}
        for precision in precisions:
            log(f"  ct2 {precision}")
            loader.save(out_root / precision, precision)
            options[precision] = {"converter": "ctranslate2 TransformersConverter", "quantization": precision,
                                  **({"pad_row_zeroed": True} if notes.get("pad_row_zeroed") else {})}
    return options, notes
