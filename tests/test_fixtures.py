"""The tiny trained fixture models are real translators: loadable, sane conventions, good greedy BLEU."""

from __future__ import annotations

import json

import pytest

from tests import factories

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
sacrebleu = pytest.importorskip("sacrebleu")


def test_templated_pairs_are_deterministic_and_sized():
    pairs = factories.templated_pairs(300, seed=7)
    assert pairs == factories.templated_pairs(300, seed=7)
    assert pairs != factories.templated_pairs(300, seed=8)
    lengths = [len(src.split()) for src, _ in pairs]
    assert min(lengths) >= 3 and max(lengths) <= 15
    assert any("%s" in src and "%s" in ref for src, ref in pairs)
    assert any("{name}" in src and "{name}" in ref for src, ref in pairs)


def test_dev_pairs_are_held_out(tiny_dev_pairs, tiny_train_pairs):
    train_sources = {src for src, _ in tiny_train_pairs}
    assert len(tiny_dev_pairs) == 40
    assert not train_sources & {src for src, _ in tiny_dev_pairs}


def _greedy(path, pairs):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    enc = tok([src for src, _ in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, num_beams=1, do_sample=False)
    return tok, model, out


def test_tiny_model_translates_held_out_pairs(tiny_model, tiny_dev_pairs):
    family, path = tiny_model
    tok, model, out = _greedy(path, tiny_dev_pairs)
    hyps = tok.batch_decode(out, skip_special_tokens=True)
    bleu = sacrebleu.metrics.BLEU()
    score = bleu.corpus_score(hyps, [[ref for _, ref in tiny_dev_pairs]])
    print(f"{family}: {score} ({bleu.get_signature()})")
    assert score.score >= 50, f"{family}: {score}"

    # every sequence stops with EOS well before max_length (trained, not random, weights)
    eos, pad = model.generation_config.eos_token_id, model.generation_config.pad_token_id
    assert out.shape[1] < model.generation_config.max_length // 2
    for row in out.tolist():
        assert eos in row[1:], row
        tail = row[row.index(eos, 1) + 1:]
        assert all(token == pad for token in tail), row


def test_tiny_model_layout(tiny_model):
    family, path = tiny_model
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        assert (path / name).is_file()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == {"marian": "marian", "t5": "t5", "m2m100": "m2m_100",
                                     "mbart": "mbart"}[family]
    from mtedge.families import detect_family

    assert detect_family(path).name == family


def test_marian_conventions(tiny_marian):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, GenerationConfig

    for name in ("source.spm", "target.spm", "vocab.json"):
        assert (tiny_marian / name).is_file()
    vocab = json.loads((tiny_marian / "vocab.json").read_text(encoding="utf-8"))
    pad = vocab["<pad>"]
    assert vocab["</s>"] == 0 and vocab["<unk>"] == 1 and pad == max(vocab.values()) == len(vocab) - 1
    tok = AutoTokenizer.from_pretrained(tiny_marian)
    assert type(tok).__name__ == "MarianTokenizer" and tok.pad_token_id == pad
    config = json.loads((tiny_marian / "config.json").read_text())
    assert config["decoder_start_token_id"] == pad and config["vocab_size"] == len(vocab)
    gen = GenerationConfig.from_pretrained(tiny_marian)
    assert gen.bad_words_ids == [[pad]] and gen.forced_eos_token_id == 0 and gen.decoder_start_token_id == pad
    # CTranslate2 assumes a zero <pad> row (mtedge/DESIGN.md §4.1)
    weights = load_file(tiny_marian / "model.safetensors")
    embedding = weights.get("model.shared.weight", weights.get("model.encoder.embed_tokens.weight"))
    assert torch.count_nonzero(embedding[pad]) == 0
    assert torch.count_nonzero(embedding[0]) > 0


def test_t5_conventions(tiny_t5):
    from transformers import T5Tokenizer

    tok = T5Tokenizer.from_pretrained(tiny_t5)  # the slow sentencepiece tokenizer must work
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("the red cat").input_ids
    assert ids[-1] == 1 and tok.unk_token_id not in ids
    config = json.loads((tiny_t5 / "config.json").read_text())
    assert config["decoder_start_token_id"] == 0 and config["vocab_size"] == len(tok)


def test_m2m100_conventions(tiny_m2m100):
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(tiny_m2m100)
    assert type(tok).__name__ == "M2M100Tokenizer" and (tok.src_lang, tok.tgt_lang) == ("en", "de")
    de = tok.convert_tokens_to_ids("__de__")
    assert de == tok.get_lang_id("de")
    assert tok("the cat").input_ids[0] == tok.get_lang_id("en")
    gen = GenerationConfig.from_pretrained(tiny_m2m100)
    assert gen.forced_bos_token_id == de and gen.decoder_start_token_id == tok.eos_token_id
    config = json.loads((tiny_m2m100 / "config.json").read_text())
    assert config["vocab_size"] > max(tok.lang_token_to_id.values())
    assert tok.decode([de, 5, tok.eos_token_id], skip_special_tokens=True).strip() == tok.decode([5]).strip()


def test_build_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MTEDGE_FIXTURE_CACHE", str(tmp_path / "cache"))
    first = factories.build_tiny_model("marian", tmp_path / "a", steps=3)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    monkeypatch.delenv("MTEDGE_FIXTURE_CACHE")
    second = factories.build_tiny_model("marian", tmp_path / "b", steps=3)
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    # no half-built directories left next to the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "cache"]


def test_unknown_family_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown family"):
        factories.build_tiny_model("gpt2", tmp_path / "x")
