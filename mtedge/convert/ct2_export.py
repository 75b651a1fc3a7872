"""CTranslate2 conversion: load the checkpoint once, save one model directory per quantization."""

from __future__ import annotations

import contextlib
import copy
import tempfile
from pathlib import Path

from mtedge.convert.marian_pad import check_marian_pad
from mtedge.convert.quiet import quiet_libraries
from mtedge.families import Family


@contextlib.contextmanager
def _fairseq_config_defaults():
    """CT2's BART/mBART loader reads fairseq's ``normalize_before`` from the HF config; hub checkpoints
    carry it, but ``MBartConfig`` does not define it, so a model trained with transformers (our mBART
    fixture) failed with "'MBartConfig' object has no attribute 'normalize_before'". HF's mBART is always
    pre-norm: supply that as the class default while converting (a config.json value still wins)."""
    from transformers import MBartConfig

    supplied = not hasattr(MBartConfig, "normalize_before")
    if supplied:
        MBartConfig.normalize_before = True
    try:
        yield
    finally:
        if supplied:
            del MBartConfig.normalize_before


class _LoadedOnce:
    """Loads the checkpoint into a CT2 model spec once; every precision is quantized from a copy
    of that float32 spec instead of re-reading the PyTorch weights."""

    def __init__(self, model_dir: Path, decoder_start_token: str | None):
        from ctranslate2.converters import TransformersConverter

        self._converter = TransformersConverter(str(model_dir), low_cpu_mem_usage=True)
        self._decoder_start_token = decoder_start_token
        self._spec = None

    def save(self, out_dir: Path, quantization: str) -> None:
        if self._spec is None:
            with quiet_libraries(), _fairseq_config_defaults():
                self._spec = self._converter._load()  # the converter's own load step (Converter.convert)
            config = self._spec.config
            if self._decoder_start_token is not None:
                # CT2's mBART loader guesses the start token from config.tokenizer_class (mBART-25: none,
                # the language code starts; mBART-50: </s>); HF generate uses decoder_start_token_id.
                config.decoder_start_token = self._decoder_start_token
            if config.bos_token is None and not config.add_source_bos:
                # A tokenizer without a bos token (MBart50Tokenizer built by transformers has none) left
                # "bos_token": null, and CTranslate2 then refused to load model.bin ("type must be string").
                # Nothing reads it when no source bos is added; any vocabulary token satisfies the loader.
                config.bos_token = config.eos_token
            self._spec.validate()
        spec = copy.deepcopy(self._spec)
        spec.optimize(quantization=quantization)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=False)
        spec.save(str(out_dir))


def export_ct2(model_dir: Path, out_root: Path, precisions: list[str], *, family: Family, pad_id: int | None,
               strict_pad: bool, decoder_start_token: str | None = None, log=print) -> tuple[dict[str, dict], dict]:
    """Writes ``out_root/<precision>/`` for each precision; returns (options per precision, notes).
    ``decoder_start_token``: the piece HF generate starts the decoder with (None: the converter's choice)."""
    notes: dict = {}
    with tempfile.TemporaryDirectory(dir=out_root.parent, prefix=".ct2-src-") as scratch:
        convert_from = Path(model_dir)
        if family.ct2_zero_pad_row and pad_id is not None:
            convert_from, notes = check_marian_pad(model_dir, pad_id, strict_pad, Path(scratch))
            if notes["pad_row_zeroed"]:
                log(f"  Marian <pad> row is nonzero (norm {notes['pad_row_norm']:.4g}): zeroed for CT2 only")
        loader = _LoadedOnce(convert_from, decoder_start_token)
        options = {}
        for precision in precisions:
            log(f"  ct2 {precision}")
            loader.save(out_root / precision, precision)
            options[precision] = {"converter": "ctranslate2 TransformersConverter", "quantization": precision,
                                  **({"pad_row_zeroed": True} if notes.get("pad_row_zeroed") else {})}
    return options, notes
