"""Writes a bundle's ``tokenizer/`` directory: sentencepiece model(s), a COMPLETE ``vocab.json`` and
``mtedge_tokenizer.json`` (schema in export/README.md), so the runtime can tokenize exactly like the
Hugging Face tokenizer without transformers.

Prefix/suffix tokens are not hard-coded per family: they are read off the HF tokenizer itself by
wrapping one sentinel id with ``build_inputs_with_special_tokens``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mtedge.convert.quiet import quiet_libraries
from mtedge.convert.source import SourceModel
from mtedge.errors import UserError
from mtedge.tokenizer import TOKENIZER_JSON



def load_hf_tokenizer(source: SourceModel, source_lang: str | None = None, target_lang: str | None = None):
    """The slow (sentencepiece) HF tokenizer: the one the runtime reproduces, used for validation too."""
    from transformers import AutoTokenizer

    try:
        with quiet_libraries():
            tok = AutoTokenizer.from_pretrained(str(source.path), use_fast=False)
    except Exception as exc:  # a broken/missing tokenizer file surfaces here with a library message
        raise UserError(f"cannot load the tokenizer of {source.path}: {exc}") from None
    if source.family.multilingual:
        if source_lang:
            tok.src_lang = source_lang
        if target_lang:
            tok.tgt_lang = target_lang
    return tok


def complete_vocab(tok, vocab_size: int) -> list[str]:
    """Pieces for ids ``0..vocab_size-1``; ids the tokenizer does not name become ``<unused_N>``."""
    pieces: list[str | None] = [None] * vocab_size
    for piece, index in sorted(tok.get_vocab().items(), key=lambda item: item[1]):
        if index >= vocab_size:
            raise UserError(f"the tokenizer has token {piece!r} with id {index}, but the model's vocabulary "
                            f"has only {vocab_size} entries; tokenizer and model do not belong together")
        if pieces[index] is None:
            pieces[index] = piece
    return [piece if piece is not None else f"<unused_{i}>" for i, piece in enumerate(pieces)]


def _prefix_suffix(tok, sentinel: int) -> tuple[list[int], list[int]]:
    wrapped = tok.build_inputs_with_special_tokens([sentinel])
    at = wrapped.index(sentinel)
    return wrapped[:at], wrapped[at + 1:]


def _language_code(token: str | None) -> str | None:
    """``__de__`` → ``de`` (M2M100); ``de_DE`` stays (mBART)."""
    if token and token.startswith("__") and token.endswith("__"):
        return token[2:-2]
    return token


def tokenizer_spec(source: SourceModel, tok, source_lang: str | None, target_lang: str | None
                   ) -> tuple[dict, list[str], dict]:
    """(mtedge_tokenizer.json content, complete vocab as a list of pieces, the bundle's generation record:
    the checkpoint's, with the chosen target language as ``forced_bos_token_id``)."""
    family = source.family
    generation = dict(source.generation)
    vocab = complete_vocab(tok, source.vocab_size)
    special = set(tok.all_special_ids)
    sentinel = next(i for i in range(len(vocab)) if i not in special and not vocab[i].startswith("<unused_"))
    prefix_ids, suffix_ids = _prefix_suffix(tok, sentinel)

    forced_bos = generation.get("forced_bos_token_id")
    target_prefix_ids = [forced_bos] if forced_bos is not None else []
    if family.multilingual and target_lang:
        lang_token = tok.convert_ids_to_tokens(tok.get_lang_id(target_lang)) if family.language_tokens == "m2m100" \
            else target_lang
        if lang_token not in tok.get_vocab():
            raise UserError(f"target language {target_lang!r} is not in the {family.name} tokenizer")
        target_prefix_ids = [tok.get_vocab()[lang_token]]
        generation["forced_bos_token_id"] = target_prefix_ids[0]

    if family.multilingual:
        src = source_lang or getattr(tok, "src_lang", None)
        tgt = target_lang or (_language_code(vocab[target_prefix_ids[0]]) if target_prefix_ids else None)
    else:
        src = source_lang or source.tokenizer_config.get("source_lang")
        tgt = target_lang or source.tokenizer_config.get("target_lang")

    decoder_start = generation["decoder_start_token_id"]
    max_len = tok.model_max_length if tok.model_max_length and tok.model_max_length < 1_000_000 else 512
    positions = source.config.get("max_position_embeddings")
    if positions:
        max_len = min(max_len, int(positions))
    eos = generation["eos_token_id"]
    spec = {
        "kind": family.name,
        "source_spm": family.spm_files[0],
        "target_spm": family.spm_files[1],
        "vocab": "vocab.json",
        "vocab_size": len(vocab),
        "unk_id": tok.unk_token_id,
        "eos_id": eos[0] if isinstance(eos, list) else eos,
        "pad_id": generation["pad_token_id"] if generation["pad_token_id"] is not None else tok.pad_token_id,
        "decoder_start_id": decoder_start,
        "source_prefix": [vocab[i] for i in prefix_ids],
        "source_suffix": [vocab[i] for i in suffix_ids],
        "target_prefix": [vocab[i] for i in target_prefix_ids],
        # what HF decode(skip_special_tokens=True) drops, plus the forced target prefix
        "special_ids": sorted(special | set(target_prefix_ids) | {decoder_start}),
        "bad_words_ids": generation.get("bad_words_ids") or [],
        "model_max_length": int(max_len),
        "source_lang": src,
        "target_lang": tgt,
    }
    if family.prefix_space_rules:
        # T5Tokenizer(legacy=False) does not segment like plain spm.encode (the first word differs):
        # it encodes "<unk>▁" + text with add_dummy_prefix off and strips the <unk> pieces.
        spec["legacy"] = bool(getattr(tok, "legacy", True))
        # Non-legacy T5 prepends "▁" only when add_prefix_space is truthy; a checkpoint saved next to a
        # fast tokenizer carries add_prefix_space=null, and the first word then segments differently.
        spec["add_prefix_space"] = bool(getattr(tok, "add_prefix_space", True))
    # decode() applies transformers' clean_up_tokenization when the checkpoint asks for it.
    spec["clean_up_tokenization_spaces"] = bool(getattr(tok, "clean_up_tokenization_spaces", False))
    return spec, vocab, generation


def write_tokenizer(source: SourceModel, out_dir: Path, source_lang: str | None = None,
                    target_lang: str | None = None) -> tuple[dict, dict]:
    """Fill ``out_dir`` with the bundle tokenizer; returns (the mtedge_tokenizer.json content, the generation
    record for the manifest)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = load_hf_tokenizer(source, source_lang, target_lang)
    spec, vocab, generation = tokenizer_spec(source, tok, source_lang, target_lang)
    for name in {spec["source_spm"], spec["target_spm"]}:
        shutil.copyfile(source.path / name, out_dir / name)
    vocab_map = {}
    for index, piece in enumerate(vocab):
        vocab_map.setdefault(piece, index)
    (out_dir / "vocab.json").write_text(json.dumps(vocab_map, ensure_ascii=False, indent=0), encoding="utf-8")
    (out_dir / TOKENIZER_JSON).write_text(json.dumps(spec, ensure_ascii=False, indent=2), encoding="utf-8")
    return spec, generation
