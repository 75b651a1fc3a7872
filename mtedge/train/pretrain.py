"""From scratch: a shared sentencepiece vocabulary and a MarianMT model, trained with the shared loop.

The result is a plain Hugging Face Marian checkpoint laid out like ``Helsinki-NLP/opus-mt-*``
(``source.spm``, ``target.spm``, ``vocab.json`` with ``</s>``=0, ``<unk>``=1, ``<pad>``=last; DESIGN §4.6),
so everything downstream treats it like an opus-mt model.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from mtedge.errors import UserError
from mtedge.train.loop import LoopConfig, LoopResult, train_loop

SPM_TRAIN_SENTENCES = 400_000  # enough text for a small vocabulary; bounds spm training time and memory


@dataclass
class MarianSize:
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


def build_marian(tok, size: MarianSize, max_new_tokens: int):
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
    zero_pad_row(model)
    return model, generation


def zero_pad_row(model) -> None:
    """CTranslate2's Marian loader assumes the <pad> embedding (the decoder start) is zero and drops it;
    full training moves it through the tied lm_head, so it is re-zeroed after every step (DESIGN §4.1)."""
    import torch

    with torch.no_grad():
        pad = model.config.pad_token_id
        model.get_input_embeddings().weight[pad].zero_()
        model.get_output_embeddings().weight[pad].zero_()  # the same tensor when tied


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


def pretrain(train_pairs, dev_pairs, out_dir: Path, size: MarianSize, loop: LoopConfig, *,
             source_lang: str = "en", target_lang: str = "de", data_meta: dict | None = None,
             progress: bool = True, log=print) -> LoopResult:
    """Train (or resume) a from-scratch Marian in ``out_dir``; the best model ends in ``out_dir/best``."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = out_dir / "tokenizer"
    torch.manual_seed(loop.seed)
    if not (tok_dir / "vocab.json").is_file():
        log(f"[pretrain] sentencepiece: {size.vocab_size} pieces, shared en+de")
        with tempfile.TemporaryDirectory() as scratch:
            spm_file = train_sentencepiece(train_pairs, Path(scratch), size.vocab_size, loop.seed)
            tok = write_marian_tokenizer(spm_file, Path(scratch) / "tok", source_lang, target_lang,
                                         size.max_positions)
            shutil.copytree(Path(scratch) / "tok", tok_dir)
    from transformers import MarianTokenizer

    tok = MarianTokenizer.from_pretrained(tok_dir)
    model, generation = build_marian(tok, size, loop.max_target_length)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[pretrain] MarianMT {size.d_model}d {size.encoder_layers}+{size.decoder_layers} layers, "
        f"{n_params / 1e6:.1f}M parameters, {len(train_pairs)} training pairs")
    (out_dir / "pretrain_config.json").write_text(json.dumps(
        {"size": asdict(size), "loop": asdict(loop), "parameters": n_params, "data": data_meta or {}},
        indent=2) + "\n", encoding="utf-8")
    save_model, load_model = full_model_io(tok, generation)
    return train_loop(model, tok, train_pairs, dev_pairs, out_dir, loop, save_model=save_model,
                      load_model=load_model, after_step=zero_pad_row, progress=progress,
                      meta={"kind": "pretrain", "size": asdict(size), "data": data_meta or {}})
