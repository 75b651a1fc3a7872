"""Which Hugging Face seq2seq families mtedge supports, detected from ``config.json`` alone.

No torch or transformers here: the runtime, ``mtedge info`` and the error messages for
unsupported models all use this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mtedge.errors import UnsupportedModelError, UserError


_BART_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass(frozen=True)
class Family:
    """Everything mtedge does differently per family, in one object (like CTranslate2's per-family loaders).

    Tokenizer rules are read by the runtime tokenizer (mtedge.tokenizer) and the export that writes it
    (mtedge.convert.tokenizer_files); the export and training quirks by convert/ and train/. Each flag
    names the HF behaviour it mirrors; the default is the plain sentencepiece family (M2M100/NLLB)."""

    name: str                # mtedge's name: marian | t5 | m2m100 | mbart
    model_types: tuple       # config.json "model_type" values that belong to it
    architecture: str        # the HF class that generates with it
    optimum_type: str        # model type name for optimum's ONNX exporter
    # -- tokenizer ---------------------------------------------------------------------------------------
    checkpoint_tokenizer_files: tuple = ()   # what a checkpoint must hold for the runtime tokenizer
    spm_files: tuple = ("sentencepiece.bpe.model", "sentencepiece.bpe.model")  # (source, target) models
    language_code_chunks: bool = False   # MarianTokenizer: a leading ">>xx<<" of a text chunk is one token
    prefix_space_rules: bool = False     # T5Tokenizer: `legacy` and `add_prefix_space` decide the leading ▁
    eos_if_not_present: bool = False     # T5Tokenizer: a text ending in a literal </s> gets no second one
    decode_underline_as_space: bool = False  # MarianTokenizer.convert_tokens_to_string
    lstrip_tokens: frozenset = frozenset()   # added tokens that eat the whitespace on their left (mBART <mask>)
    language_tokens: str | None = None   # multilingual: "m2m100" (__de__ via get_lang_id) | "mbart" (de_DE)
    # -- export ------------------------------------------------------------------------------------------
    ct2_zero_pad_row: bool = False       # CT2 drops the decoder-start <pad> embedding (mtedge/DESIGN.md §4.1)
    # -- training (PEFT target modules) ------------------------------------------------------------------
    attention_modules: tuple = _BART_ATTENTION
    feedforward_modules: tuple = ("fc1", "fc2")
    ia3_modules: tuple = ("k_proj", "v_proj", "fc2")  # IA3's paper: keys, values, the FFN's output input

    @property
    def multilingual(self) -> bool:
        """One model, many languages: the target language is a forced first token (HF forced_bos)."""
        return self.language_tokens is not None


FAMILIES = {
    "marian": Family("marian", ("marian",), "MarianMTModel", "marian",
                     checkpoint_tokenizer_files=("source.spm", "target.spm", "vocab.json"),
                     spm_files=("source.spm", "target.spm"), language_code_chunks=True,
                     decode_underline_as_space=True, ct2_zero_pad_row=True),
    "t5": Family("t5", ("t5", "mt5"), "T5ForConditionalGeneration", "t5",
                 checkpoint_tokenizer_files=("spiece.model",), spm_files=("spiece.model", "spiece.model"),
                 prefix_space_rules=True, eos_if_not_present=True,
                 attention_modules=("q", "k", "v", "o"), feedforward_modules=("wi", "wi_0", "wi_1", "wo"),
                 ia3_modules=("k", "v", "wo")),
    # NLLB checkpoints are M2M100 models (model_type "m2m_100").
    "m2m100": Family("m2m100", ("m2m_100",), "M2M100ForConditionalGeneration", "m2m-100",
                     checkpoint_tokenizer_files=("sentencepiece.bpe.model", "vocab.json"), language_tokens="m2m100"),
    "mbart": Family("mbart", ("mbart",), "MBartForConditionalGeneration", "mbart",
                    checkpoint_tokenizer_files=("sentencepiece.bpe.model",), lstrip_tokens=frozenset({"<mask>"}),
                    language_tokens="mbart"),
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
    known = any(model_type in family.model_types for family in FAMILIES.values())
    if not config.get("is_encoder_decoder", known):
        raise UnsupportedModelError(
            f"{model_dir} is not an encoder-decoder model; supported: {SUPPORTED_DESCRIPTION}"
        )
    return family_for_model_type(model_type)
