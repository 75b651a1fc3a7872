"""Shape-faithful stand-ins for real checkpoints: the exact architecture and vocabulary size,
random weights (mtedge/DESIGN.md §5: no real opus-mt checkpoint can be had here).

Speed and memory depend on shapes, not on weights, so such a model measures tokens/s and
RSS at real scale — with forced output lengths, because a random model would otherwise
stop at arbitrary points. Quality numbers are meaningless for it and are skipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mtedge.convert.marian_pad import zero_marian_pad_row
from mtedge.errors import UserError

# Helsinki-NLP/opus-mt-en-de config.json (transformers 4.34-era upload on the Hub; the same values
# appear in transformers' Marian docs/tests and CTranslate2's OPUS-MT benchmark model):
# d_model 512, 6+6 layers, 8+8 heads, ffn 2048, vocab 58101 (pad 58100 = decoder start, eos 0),
# max_position_embeddings 512, static sinusoidal positions, swish, scale_embedding, shared
# source/target embeddings tied to lm_head, bad_words_ids [[58100]], num_beams 4, max_length 512.
OPUS_MT_EN_DE = {
    "vocab_size": 58101, "decoder_vocab_size": 58101, "d_model": 512,
    "encoder_layers": 6, "decoder_layers": 6,
    "encoder_attention_heads": 8, "decoder_attention_heads": 8,
    "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048,
    "max_position_embeddings": 512, "activation_function": "swish", "scale_embedding": True,
    "static_position_embeddings": True, "share_encoder_decoder_embeddings": True,
    "normalize_before": False, "normalize_embedding": False,
    "pad_token_id": 58100, "eos_token_id": 0, "bos_token_id": 0, "decoder_start_token_id": 58100,
    "forced_eos_token_id": 0, "dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0,
    "tie_word_embeddings": True,
}
SYNTHETIC_MODELS = {"opus-mt-en-de": OPUS_MT_EN_DE}
SPM_VOCAB = 2000   # real pieces; the rest of the 58101 ids are filler pieces in vocab.json


def _train_spm(workdir: Path, vocab_size: int) -> Path:
    import sentencepiece as spm

    from mtedge.bench.testset import synthetic_sources

    corpus = workdir / "spm-corpus.txt"
    lines = synthetic_sources(20000, words=12, seed=1)
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prefix = workdir / "spm"
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size,
                                   model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
                                   bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2)
    return prefix.with_suffix(".model")


def write_marian_tokenizer(out_dir: Path, vocab_size: int, pad_id: int) -> None:
    """MarianTokenizer files whose vocab.json covers every id: </s>=0, <unk>=1, the spm pieces,
    filler pieces, <pad>=last (mtedge/DESIGN.md §4.6)."""
    import sentencepiece as spm

    spm_path = _train_spm(out_dir, SPM_VOCAB)
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    vocab = {"</s>": 0, "<unk>": 1}
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if not (sp.is_control(i) or sp.is_unknown(i)) and piece not in vocab:
            vocab[piece] = len(vocab)
    filler = 0
    while len(vocab) < pad_id:
        vocab[f"<unused_{filler}>"] = len(vocab)
        filler += 1
    vocab["<pad>"] = pad_id
    assert len(vocab) == vocab_size
    for name in ("source.spm", "target.spm"):
        shutil.copy(spm_path, out_dir / name)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "MarianTokenizer", "source_lang": "en", "target_lang": "de",
        "model_max_length": 512, "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
        "separate_vocabs": False}), encoding="utf-8")
    for leftover in ("spm.model", "spm.vocab", "spm-corpus.txt"):
        (out_dir / leftover).unlink(missing_ok=True)


def build_synthetic_checkpoint(name: str, out_dir: Path, seed: int = 0) -> Path:
    """An HF checkpoint dir with ``name``'s exact architecture and random weights."""
    if name not in SYNTHETIC_MODELS:
        raise UserError(f"unknown synthetic model {name!r}; known: {', '.join(SYNTHETIC_MODELS)}")
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

    values = SYNTHETIC_MODELS[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marian_tokenizer(out_dir, values["vocab_size"], values["pad_token_id"])
    torch.manual_seed(seed)
    config = MarianConfig(**values, architectures=["MarianMTModel"])
    model = MarianMTModel(config).eval()
    zero_marian_pad_row(model)  # CT2 assumes it (mtedge/DESIGN.md §4.1)
    model.generation_config = GenerationConfig(
        bad_words_ids=[[values["pad_token_id"]]], decoder_start_token_id=values["decoder_start_token_id"],
        eos_token_id=values["eos_token_id"], pad_token_id=values["pad_token_id"],
        forced_eos_token_id=values["eos_token_id"], num_beams=4, max_length=512)
    model.save_pretrained(out_dir)
    MarianTokenizer.from_pretrained(out_dir)  # fails here, not in a worker, if the files are wrong
    return out_dir


def synthetic_bundle(name: str, work_dir: Path) -> Path:
    """The cached bundle of synthetic model ``name`` under ``work_dir``, built on first use."""
    from mtedge.bench.exporting import export_for_bench
    from mtedge.bundle import Bundle

    root = Path(work_dir) / "synthetic" / name
    bundle_dir = root / "bundle"
    if Bundle.is_bundle_dir(bundle_dir):
        if exported_by_this_version(Bundle.open(bundle_dir).manifest):
            return bundle_dir
        shutil.rmtree(bundle_dir)
    checkpoint = root / "checkpoint"
    if not (checkpoint / "model.safetensors").exists():
        build_synthetic_checkpoint(name, checkpoint)
    return export_for_bench(checkpoint, bundle_dir, synthetic=True, name=f"synthetic-{name}")


def exported_by_this_version(manifest: dict) -> bool:
    """False for a cached bundle exported before a fix of the int8 graphs, by an exporter that wrote other
    ONNX graphs (``GRAPH_REVISION``), or without an ONNX precision the bench now exports: timing it would
    time what the exporter no longer writes, or leave a row empty."""
    from mtedge.bench.exporting import BENCH_ONNX_PRECISIONS
    from mtedge.convert.onnx_export import GRAPH_REVISION
    from mtedge.engines.rowwise_int8 import is_stale

    onnx = manifest["engines"].get("onnx", {})
    options = [record.get("options") or {} for record in onnx.values()]
    return set(BENCH_ONNX_PRECISIONS) <= set(onnx) and all(
        not is_stale(o) and o.get("graph_revision") == GRAPH_REVISION for o in options)
