"""Marian's ``<pad>`` row: CTranslate2 assumes it is zero (mtedge/DESIGN.md §4.1). The one home of
the checks and the zeroing, for training (after every step), the export (a zeroed copy for CT2) and
the synthetic benchmark models."""

from __future__ import annotations

import shutil
from pathlib import Path

from mtedge.errors import UserError


def zero_marian_pad_row(model, pad_id: int | None = None) -> None:
    """Zero the ``<pad>`` row (default: the config's) of every vocabulary table of a loaded model."""
    import torch

    with torch.no_grad():
        pad = model.config.pad_token_id if pad_id is None else pad_id
        model.get_input_embeddings().weight[pad].zero_()
        output = model.get_output_embeddings()
        if output is not None:
            output.weight[pad].zero_()  # the same tensor when tied; a separate head needs its own
        decoder_embeddings = model.get_decoder().get_input_embeddings()
        decoder_embeddings.weight[pad].zero_()  # untied encoder/decoder vocabularies have their own table


def marian_pad_row_is_zero(model) -> bool:
    pad = model.config.pad_token_id
    tables = [model.get_input_embeddings().weight, model.get_decoder().get_input_embeddings().weight]
    if model.get_output_embeddings() is not None:
        tables.append(model.get_output_embeddings().weight)
    return all(not bool(table[pad].any()) for table in tables)


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
    zero_marian_pad_row(model, pad_id)
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
