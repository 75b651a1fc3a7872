"""Which Hugging Face seq2seq families mtedge supports, detected from ``config.json`` alone.

No torch or transformers here: the runtime, ``mtedge info`` and the error messages for
unsupported models all use this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mtedge.errors import UnsupportedModelError, UserError


@dataclass(frozen=True)
class Family:
    name: str                # mtedge's name: marian | t5 | m2m100 | mbart
    model_types: tuple       # config.json "model_type" values that belong to it
    architecture: str        # the HF class that generates with it
    optimum_type: str        # model type name for optimum's ONNX exporter


FAMILIES = {
    "marian": Family("marian", ("marian",), "MarianMTModel", "marian"),
    "t5": Family("t5", ("t5", "mt5"), "T5ForConditionalGeneration", "t5"),
    # NLLB checkpoints are M2M100 models (model_type "m2m_100").
    "m2m100": Family("m2m100", ("m2m_100",), "M2M100ForConditionalGeneration", "m2m-100"),
    "mbart": Family("mbart", ("mbart",), "MBartForConditionalGeneration", "mbart"),
}

SUPPORTED_DESCRIPTION = "Marian (opus-mt), T5/mT5, M2M100/NLLB, mBART"


def family_for_model_type(model_type: str) -> Family:
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise UnsupportedModelError(
        f"model type {model_type!r} is not a supported seq2seq translation architecture; "
        f"supported: {SUPPORTED_DESCRIPTION}"
    )


def read_model_config(model_dir: str | Path) -> dict:
    """Read ``config.json`` of a local checkpoint, with errors a user can act on."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise UserError(f"model not found: {model_dir}")
    if (model_dir / "adapter_config.json").exists() and not (model_dir / "config.json").exists():
        raise UserError(
            f"{model_dir} is a PEFT adapter, not a full model; merge it first with "
            f"`mtedge merge {model_dir} -o MERGED_DIR`"
        )
    config_path = model_dir / "config.json"
    if not config_path.exists():
        raise UserError(f"{model_dir} has no config.json; is it a Hugging Face checkpoint directory?")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{config_path} is not valid JSON: {exc}") from None


def detect_family(model_dir: str | Path) -> Family:
    config = read_model_config(model_dir)
    model_type = config.get("model_type")
    if not model_type:
        raise UnsupportedModelError(f"{Path(model_dir) / 'config.json'} has no model_type")
    if not config.get("is_encoder_decoder", model_type in {"marian", "t5", "mt5", "m2m_100", "mbart"}):
        raise UnsupportedModelError(
            f"{model_dir} is not an encoder-decoder model; supported: {SUPPORTED_DESCRIPTION}"
        )
    return family_for_model_type(model_type)
