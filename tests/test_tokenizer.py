"""BundleTokenizer (sentencepiece + vocab.json only) against the HF slow tokenizer, exactly.

The fixture bundles cover Marian, T5 (legacy false, add_prefix_space null) and M2M100. T5 with
``legacy: true`` and with ``add_prefix_space: true``, T5 with sentinel ids and mBART have no trained
fixture model; their tokenizer directories are written here by the export's own ``write_tokenizer``
from the fixture sentencepiece model, so the same comparison runs on them.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtedge.tokenizer import BundleTokenizer
from tests.factories import dev_pairs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

EDGE_CASES = [
    "", " ", "   ", "\t", "\n", "hello", " hello", "hello ", "  two  spaces  inside  ",
    "the file %s was saved", "hello {name}, you have {count} new messages", "delete %d files ?",
    "Ünïcödé çhäräctérs ß ẞ", "日本語のテキスト", "emoji 😀 🇩🇪 done", "fullwidth ＡＢＣ １２３", "ﬁ ligature",
    "combining e\u0301 accent", "zero\u200bwidth", "nbsp\u00a0here", "\ufeffbom first", "\u2028sep\u2029",
    "ctrl a\u0000b\u0001c\u007fd\u0085e", "tab\there", "line\nbreak", "cr\r\nlf",
    "</s>", "a </s> b", "the cat</s>", "<unk>", "x<unk>y", "<pad> pad", "<s> start", "<mask> masked",
    "__de__ hallo", "__en__", ">>de<< the cat", ">>fr<<", "de_DE text en_XX",
    "▁already▁underlined", "▁", " ▁ ", "UPPER CASE WORDS", "1234567890", "!!!???...", "'quoted' \"double\"",
    "the cat sees the dog.", "a" * 300, " ".join(["the red cat sees the old dog"] * 40),
]


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnop  ÄÖÜäöüß<>/_▁{}%\t日.,!?"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(n)]


TEXTS = [s for pair in dev_pairs(40) for s in pair] + EDGE_CASES + _random_texts(150)


def _hf_tokenizer(path: Path, family: str, source_lang: str | None = None, target_lang: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), use_fast=False)
    if family in {"m2m100", "mbart"}:
        tok.src_lang, tok.tgt_lang = source_lang, target_lang
    return tok


def assert_same_as_hf(ours: BundleTokenizer, hf, texts=TEXTS, random_decodes: int = 300) -> None:
    limit = ours.model_max_length
    for text in texts:
        expected = hf(text, truncation=True, max_length=limit)["input_ids"]
        assert ours.encode(text) == expected, f"encode({text!r})"
        assert ours.source_tokens(text) == hf.convert_ids_to_tokens(expected), f"source_tokens({text!r})"
        assert ours.decode(expected) == hf.decode(expected, skip_special_tokens=True), f"decode of {text!r}"
    rng = random.Random(1)
    for _ in range(random_decodes):
        ids = [rng.randrange(len(ours.pieces)) for _ in range(rng.randint(0, 15))]
        try:
            expected = hf.decode(ids, skip_special_tokens=True)
        except (IndexError, TypeError):  # ids the HF tokenizer cannot name at all (T5 beyond spm)
            continue
        assert ours.decode(ids) == expected, f"decode({ids})"


@pytest.mark.parametrize("family", ["marian", "t5", "m2m100"])
def test_fixture_bundle_tokenizers_match_hf(tiny_unvalidated_bundles, family):
    bundle = tiny_unvalidated_bundles(family)
    ours = BundleTokenizer(bundle / "tokenizer")
    hf = _hf_tokenizer(bundle / "torch" / "fp32", family, "en", "de")
    assert_same_as_hf(ours, hf)


# -- tokenizers without a trained fixture model ---------------------------------------------------
def _variant_dir(tmp_path: Path, spm_file: Path, variant: str) -> tuple[Path, Path, object]:
    """(HF tokenizer dir, bundle tokenizer dir, HF tokenizer) for one tokenizer variant."""
    from transformers import MBartTokenizer, T5Tokenizer

    from mtedge.convert.source import SourceModel
    from mtedge.convert.tokenizer_files import write_tokenizer
    from mtedge.families import FAMILIES

    hf_dir = tmp_path / variant / "hf"
    hf_dir.mkdir(parents=True)
    if variant.startswith("t5"):
        shutil.copy(spm_file, hf_dir / "spiece.model")
        legacy = variant == "t5-legacy"
        extra_ids = 5 if variant == "t5-sentinels" else 0
        tok = T5Tokenizer(str(hf_dir / "spiece.model"), extra_ids=extra_ids, legacy=legacy,
                          add_prefix_space=True, model_max_length=512)
        family, lang = "t5", {}
        generation = {"decoder_start_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
                      "pad_token_id": tok.pad_token_id, "forced_bos_token_id": None, "bad_words_ids": None}
        vocab_size = len(tok) + 3  # real T5 checkpoints have rows the tokenizer does not name
    else:
        shutil.copy(spm_file, hf_dir / "sentencepiece.bpe.model")
        tok = MBartTokenizer(str(hf_dir / "sentencepiece.bpe.model"), src_lang="en_XX", tgt_lang="de_DE",
                             model_max_length=64)
        family, lang = "mbart", {"source_lang": "en_XX", "target_lang": "de_DE"}
        generation = {"decoder_start_token_id": tok.eos_token_id, "eos_token_id": tok.eos_token_id,
                      "pad_token_id": tok.pad_token_id, "forced_bos_token_id": tok.convert_tokens_to_ids("de_DE"),
                      "bad_words_ids": None}
        vocab_size = len(tok)
    tok.save_pretrained(hf_dir)
    source = SourceModel(hf_dir, FAMILIES[family], {"vocab_size": vocab_size, "max_position_embeddings": 1024},
                         generation, json.loads((hf_dir / "tokenizer_config.json").read_text()))
    out = tmp_path / variant / "tokenizer"
    write_tokenizer(source, out, **lang)
    return hf_dir, out, _hf_tokenizer(hf_dir, family, lang.get("source_lang"), lang.get("target_lang"))


@pytest.mark.parametrize("variant", ["t5-legacy", "t5-prefix-space", "t5-sentinels", "mbart"])
def test_other_tokenizer_variants_match_hf(tmp_path, tiny_models, variant):
    spm_file = tiny_models("t5") / "spiece.model"
    _, out, hf = _variant_dir(tmp_path, spm_file, variant)
    ours = BundleTokenizer(out)
    if variant == "mbart":
        assert ours.spec["source_suffix"] == ["</s>", "en_XX"] and ours.spec["target_prefix"] == ["de_DE"]
        assert ours.model_max_length == 64  # truncation is exercised by the long edge cases
    else:
        assert ours.legacy is (variant == "t5-legacy")
    assert_same_as_hf(ours, hf)


# -- behaviour that does not need HF --------------------------------------------------------------
def test_unknown_pieces_map_to_unk(tiny_unvalidated_bundles):
    tok = BundleTokenizer(tiny_unvalidated_bundles("marian") / "tokenizer")
    ids = tok.encode("日本語")
    assert tok.unk_id in ids and ids[-1] == tok.eos_id
    assert "<unk>" in tok.source_tokens("日本語")


def test_truncation_keeps_the_suffix(tiny_unvalidated_bundles):
    tok = BundleTokenizer(tiny_unvalidated_bundles("m2m100") / "tokenizer")
    ids = tok.encode("the cat " * 200)
    assert len(ids) == tok.model_max_length
    assert ids[0] == tok.source_prefix_ids[0] and ids[-1] == tok.eos_id
    assert len(tok.encode("the cat " * 200, max_length=10)) == 10


def test_target_spec_from_bundle(tiny_unvalidated_bundles):
    marian = BundleTokenizer(tiny_unvalidated_bundles("marian") / "tokenizer").target_spec()
    assert marian.decoder_start_id == marian.pad_id and marian.bad_words_ids == [[marian.pad_id]]
    m2m = BundleTokenizer(tiny_unvalidated_bundles("m2m100") / "tokenizer")
    spec = m2m.target_spec()
    assert spec.target_prefix_ids == [m2m.vocab["__de__"]] and spec.decoder_start_id == spec.eos_id
    # the language token never shows in decoded text
    assert m2m.decode(spec.target_prefix_ids + m2m.encode_body("Hallo") + [spec.eos_id]) == "Hallo"


def test_tokenizer_does_not_import_transformers(tiny_unvalidated_bundles):
    bundle = tiny_unvalidated_bundles("t5")
    code = textwrap.dedent(f"""
        import sys
        from mtedge.tokenizer import BundleTokenizer
        tok = BundleTokenizer({str(bundle / "tokenizer")!r})
        assert tok.decode(tok.encode("the cat")[:-1]) == "the cat", tok.decode(tok.encode("the cat"))
        heavy = [m for m in ("torch", "transformers") if m in sys.modules]
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
