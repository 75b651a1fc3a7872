"""From scratch: a shared sentencepiece vocabulary and a seq2seq model, trained with the shared loop.

Two architectures, each a plain Hugging Face checkpoint that every engine loads:
- ``marian``: laid out like ``Helsinki-NLP/opus-mt-*`` (``source.spm``, ``target.spm``, ``vocab.json`` with
  ``</s>``=0, ``<unk>``=1, ``<pad>``=last), post-LayerNorm like opus-mt;
- ``m2m100``: laid out like ``facebook/m2m100_418M`` (``sentencepiece.bpe.model``, fairseq-ordered
  ``vocab.json``, ``__en__``/``__de__`` language tokens), pre-LayerNorm. Pre-LN trains stably at higher
  learning rates with short warmup, which is what a CPU-hours budget needs; post-LN wants long warmup and
  low rates (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture").
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from mtedge.errors import UserError
from mtedge.families import FAMILIES
from mtedge.train.loop import LoopConfig, LoopResult, train_loop
# CTranslate2's Marian loader assumes the <pad> embedding (the decoder start) is zero; full training moves it
# through the tied lm_head, so it is re-zeroed after every step (mtedge/DESIGN.md §4.1).
from mtedge.convert.marian_pad import zero_marian_pad_row as zero_pad_row

SPM_TRAIN_SENTENCES = 400_000  # enough text for a small vocabulary; bounds spm training time and memory


ARCHITECTURES = ("marian", "m2m100")


@dataclass
class ModelShape:
    arch: str = "marian"              # one of ARCHITECTURES
    vocab_size: int = 8000
    d_model: int = 256
    encoder_layers: int = 6
    decoder_layers: int = 2
    attention_heads: int = 4
    ffn_dim: int = 1024
    max_positions: int = 256
    dropout: float = 0.1
    init_std: float | None = None  # None: transformers' default (0.02)


def train_sentencepiece(pairs, out_dir: Path, vocab_size: int, seed: int = 0) -> Path:
    """One unigram model over both languages (a shared vocabulary, tied embeddings)."""
    import sentencepiece as spm

    text = [s for pair in pairs for s in pair]
    if len(text) > SPM_TRAIN_SENTENCES:
        text = random.Random(seed).sample(text, SPM_TRAIN_SENTENCES)
    prefix = out_dir / "spm"
    try:
        _train_spm(spm, text, prefix, vocab_size)
    except RuntimeError as exc:
        # e.g. "Vocabulary size too high (8000). Please set it to a value <= 5123." on small data
        raise UserError(f"cannot train the sentencepiece vocabulary: {str(exc).split(') ', 1)[-1]} "
                        f"(use a smaller --vocab-size or more data)") from None
    return prefix.with_suffix(".model")


def _train_spm(spm, text, prefix: Path, vocab_size: int) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, num_threads=2, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", minloglevel=2,
        # keep format placeholders whole so the model learns to copy them (sysmsg/webui data)
        user_defined_symbols=["%s", "%d", "%u", "%lu", "%zu", "%c", "{", "}"],
    )


def write_marian_tokenizer(spm_file: Path, out_dir: Path, source_lang: str, target_lang: str,
                           max_positions: int):
    """opus-mt's tokenizer files around one shared spm model; returns the loaded MarianTokenizer."""
    import sentencepiece as spm
    from transformers import MarianTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spm_file, out_dir / "source.spm")
    shutil.copyfile(spm_file, out_dir / "target.spm")
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    vocab = {"</s>": 0, "<unk>": 1}
    for i in range(sp.get_piece_size()):
        if not (sp.is_control(i) or sp.is_unknown(i)):
            vocab.setdefault(sp.id_to_piece(i), len(vocab))
    vocab["<pad>"] = len(vocab)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0), encoding="utf-8")
    tok = MarianTokenizer(str(out_dir / "source.spm"), str(out_dir / "target.spm"), str(out_dir / "vocab.json"),
                          source_lang=source_lang, target_lang=target_lang, model_max_length=max_positions)
    tok.save_pretrained(out_dir)
    return MarianTokenizer.from_pretrained(out_dir)


def write_m2m100_tokenizer(spm_file: Path, out_dir: Path, source_lang: str, target_lang: str,
                           max_positions: int):
    """facebook/m2m100's tokenizer files around one shared spm model; returns the loaded M2M100Tokenizer."""
    from transformers import M2M100Tokenizer
    from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES

    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spm_file, out_dir / "sentencepiece.bpe.model")
    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}  # fairseq's order
    for i in range(sp.get_piece_size()):
        if not (sp.is_control(i) or sp.is_unknown(i)):
            vocab.setdefault(sp.id_to_piece(i), len(vocab))
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0), encoding="utf-8")
    # Listed explicitly, as facebook/m2m100_418M's tokenizer_config does: transformers 4.57 does not register
    # the language tokens as special by itself, and decode(skip_special_tokens=True) then keeps "__de__".
    lang_tokens = [f"__{code}__" for code in FAIRSEQ_LANGUAGE_CODES["m2m100"]]
    for lang in (source_lang, target_lang):
        if f"__{lang}__" not in lang_tokens:
            raise UserError(f"--arch m2m100 knows no language {lang!r}; it has M2M100's 100 codes "
                            f"({', '.join(FAIRSEQ_LANGUAGE_CODES['m2m100'][:12])}, ...)")
    tok = M2M100Tokenizer(str(out_dir / "vocab.json"), str(out_dir / "sentencepiece.bpe.model"),
                          src_lang=source_lang, tgt_lang=target_lang, model_max_length=max_positions,
                          additional_special_tokens=lang_tokens)
    tok.save_pretrained(out_dir)
    return M2M100Tokenizer.from_pretrained(out_dir)


TOKENIZER_WRITERS = {"marian": write_marian_tokenizer, "m2m100": write_m2m100_tokenizer}


def load_tokenizer(arch: str, directory: Path):
    from transformers import M2M100Tokenizer, MarianTokenizer

    return {"marian": MarianTokenizer, "m2m100": M2M100Tokenizer}[arch].from_pretrained(directory)


def build_model(tok, shape: "ModelShape", max_new_tokens: int):
    """(model, generation config) of ``shape.arch``, freshly initialized."""
    return {"marian": build_marian, "m2m100": build_m2m100}[shape.arch](tok, shape, max_new_tokens)


def build_m2m100(tok, size: "ModelShape", max_new_tokens: int):
    from transformers import GenerationConfig, M2M100Config, M2M100ForConditionalGeneration

    # M2M100Tokenizer puts the 100 language codes and 8 "madeup words" after vocab.json: cover them all
    vocab_size = tok.encoder_size + len(tok.lang_token_to_id) + tok.num_madeup_words
    config = M2M100Config(
        vocab_size=vocab_size, d_model=size.d_model, encoder_layers=size.encoder_layers,
        decoder_layers=size.decoder_layers, encoder_attention_heads=size.attention_heads,
        decoder_attention_heads=size.attention_heads, encoder_ffn_dim=size.ffn_dim, decoder_ffn_dim=size.ffn_dim,
        max_position_embeddings=size.max_positions, dropout=size.dropout, attention_dropout=0.0,
        activation_dropout=0.0, activation_function="relu", encoder_layerdrop=0.0, decoder_layerdrop=0.0,
        scale_embedding=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.eos_token_id, tie_word_embeddings=True,
        **({"init_std": size.init_std} if size.init_std else {}),
    )
    # m2m100's generation settings: </s> starts the decoder, the target language token is forced first
    generation = GenerationConfig(
        bos_token_id=tok.bos_token_id, decoder_start_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, forced_bos_token_id=tok.get_lang_id(tok.tgt_lang),
        max_length=max_new_tokens + 1, num_beams=4,
    )
    model = M2M100ForConditionalGeneration(config)
    model.generation_config = generation
    return model, generation


def build_marian(tok, size: "ModelShape", max_new_tokens: int):
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    pad, eos = tok.pad_token_id, tok.eos_token_id
    config = MarianConfig(
        vocab_size=len(tok), decoder_vocab_size=len(tok), d_model=size.d_model,
        encoder_layers=size.encoder_layers, decoder_layers=size.decoder_layers,
        encoder_attention_heads=size.attention_heads, decoder_attention_heads=size.attention_heads,
        encoder_ffn_dim=size.ffn_dim, decoder_ffn_dim=size.ffn_dim, max_position_embeddings=size.max_positions,
        dropout=size.dropout, attention_dropout=0.0, activation_dropout=0.0, activation_function="swish",
        pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad, forced_eos_token_id=eos,
        scale_embedding=True, share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        **({"init_std": size.init_std} if size.init_std else {}),
    )
    # opus-mt's generation settings (beam 4, <pad> banned, forced </s>), sized for this model
    generation = GenerationConfig(
        bad_words_ids=[[pad]], decoder_start_token_id=pad, eos_token_id=eos, pad_token_id=pad,
        forced_eos_token_id=eos, max_length=max_new_tokens + 1, num_beams=4, renormalize_logits=True,
    )
    model = MarianMTModel(config)
    model.generation_config = generation
    zero_pad_row(model)
    return model, generation


def full_model_io(tokenizer, generation):
    """(save_model, load_model) for full-weight checkpoints that are complete HF model directories."""

    def save_model(model, directory: Path) -> None:
        model.save_pretrained(directory, safe_serialization=True)
        generation.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    def load_model(model, directory: Path) -> None:
        from safetensors.torch import load_model as load_safetensors

        load_safetensors(model, str(Path(directory) / "model.safetensors"), strict=False)
        if model.config.tie_word_embeddings:
            model.tie_weights()

    return save_model, load_model


def check_resumable(out_dir: Path, size: ModelShape, data_meta: dict) -> None:
    """A run resumed with another model shape or other data would load mismatched weights or see other
    batches: refuse it, naming what changed (training options such as --max-steps may change)."""
    from mtedge.train.loop import CHECKPOINT_DIR

    recorded = out_dir / "pretrain_config.json"
    if not (out_dir / CHECKPOINT_DIR).is_dir() or not recorded.is_file():
        return
    before = json.loads(recorded.read_text(encoding="utf-8"))
    changed = [f"{key} {old!r} -> {new!r}" for key, new in asdict(size).items()
               if (old := before.get("size", {}).get(key, ModelShape.__dataclass_fields__[key].default)) != new]
    hashes = lambda meta: [[f.get("sha256") for f in files] for files in (  # noqa: E731
        meta.get("train", []), meta.get("dev", []), meta.get("excluded", {}).get("files", []))]
    if hashes(before.get("data", {})) != hashes(data_meta):
        changed.append("the training/dev files (sha256)")
    if changed:
        raise UserError(f"cannot resume {out_dir}: it was trained with another configuration ({'; '.join(changed)}); "
                        f"use the original settings, or --force to start over")


def tokenizer_files(arch: str) -> tuple[str, ...]:
    """What a from-scratch checkpoint's tokenizer consists of (copied by --init-from)."""
    return FAMILIES[arch].checkpoint_tokenizer_files + ("tokenizer_config.json", "special_tokens_map.json")


def check_init_model(init_from: Path, size: ModelShape) -> None:
    """``--init-from`` must name a model of exactly this shape, with its tokenizer: its weights are the start."""
    init_from = Path(init_from)
    config_path = init_from / "config.json"
    if not config_path.is_file():
        raise UserError(f"--init-from {init_from}: no config.json (a model directory, e.g. a published checkpoint)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    want = {"model_type": FAMILIES[size.arch].model_types[0], "d_model": size.d_model, "encoder_layers": size.encoder_layers,
            "decoder_layers": size.decoder_layers, "encoder_attention_heads": size.attention_heads,
            "encoder_ffn_dim": size.ffn_dim, "max_position_embeddings": size.max_positions}
    changed = [f"{key} {config.get(key)!r} (asked {value!r})" for key, value in want.items() if config.get(key) != value]
    if changed:
        raise UserError(f"--init-from {init_from} has another shape: {'; '.join(changed)}; "
                        f"give the same --arch/--d-model/layers/--heads/--ffn-dim/--max-length")
    missing = [name for name in tokenizer_files(size.arch) + ("model.safetensors",) if not (init_from / name).is_file()]
    if missing:
        raise UserError(f"--init-from {init_from} lacks {', '.join(missing)}")


def pretrain(train_pairs, dev_pairs, out_dir: Path, size: ModelShape, loop: LoopConfig, *,
             source_lang: str = "en", target_lang: str = "de", data_meta: dict | None = None,
             init_from: Path | None = None, progress: bool = True, log=print) -> LoopResult:
    """Train (or resume) a model in ``out_dir``; the best model ends in ``out_dir/best``.

    From scratch, or with ``init_from``: the weights and vocabulary of an earlier run's published model (the
    run directory with its optimizer state lives on one machine; a checkpoint in git outlives it). The
    optimizer starts fresh, with its own warmup.
    """
    import torch

    if size.arch not in ARCHITECTURES:
        raise UserError(f"unknown architecture {size.arch!r}; supported: {', '.join(ARCHITECTURES)}")
    if init_from is not None:
        check_init_model(init_from, size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = out_dir / "tokenizer"
    torch.manual_seed(loop.seed)
    if init_from is not None and not (tok_dir / "vocab.json").is_file():
        tok_dir.mkdir(parents=True)
        for name in tokenizer_files(size.arch):
            shutil.copyfile(Path(init_from) / name, tok_dir / name)
    if not (tok_dir / "vocab.json").is_file():
        log(f"[pretrain] sentencepiece: {size.vocab_size} pieces, shared en+de")
        with tempfile.TemporaryDirectory() as scratch:
            spm_file = train_sentencepiece(train_pairs, Path(scratch), size.vocab_size, loop.seed)
            TOKENIZER_WRITERS[size.arch](spm_file, Path(scratch) / "tok", source_lang, target_lang,
                                         size.max_positions)
            shutil.copytree(Path(scratch) / "tok", tok_dir)
    tok = load_tokenizer(size.arch, tok_dir)
    model, generation = build_model(tok, size, loop.max_target_length)
    if init_from is not None:  # a resumed run's checkpoint replaces these weights again in train_loop
        from safetensors.torch import load_model as load_safetensors

        load_safetensors(model, str(Path(init_from) / "model.safetensors"), strict=False)
        model.tie_weights()
        log(f"[pretrain] initialized from {init_from}")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[pretrain] {size.arch} {size.d_model}d {size.encoder_layers}+{size.decoder_layers} layers, "
        f"{n_params / 1e6:.1f}M parameters, {len(train_pairs)} training pairs")
    check_resumable(out_dir, size, data_meta or {})
    (out_dir / "pretrain_config.json").write_text(json.dumps(
        {"size": asdict(size), "loop": asdict(loop), "parameters": n_params, "data": data_meta or {},
         "init_from": str(init_from) if init_from is not None else None},
        indent=2) + "\n", encoding="utf-8")
    save_model, load_model = full_model_io(tok, generation)
    return train_loop(model, tok, train_pairs, dev_pairs, out_dir, loop, save_model=save_model,
                      load_model=load_model, after_step=zero_pad_row if FAMILIES[size.arch].ct2_zero_pad_row else None,
                      progress=progress,
                      meta={"kind": "pretrain", "size": asdict(size), "data": data_meta or {}})
