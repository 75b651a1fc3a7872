"""Tiny *trained* seq2seq translation models for tests, built offline on CPU in seconds.

Random-weight models make bad fixtures: they run to max length and ties abound (mtedge/DESIGN.md §4.5).
So each factory trains a tiny Marian / T5 / M2M100 model for a few hundred steps on templated
en→de pairs, deterministically (fixed seed, one thread), and writes a normal Hugging Face
checkpoint directory (config.json, model.safetensors, generation_config.json, tokenizer files).

One sentencepiece model (``<pad>``=0, ``</s>``=1, ``<unk>``=2, no ``<s>``) serves all three
families; each family wraps it in its own tokenizer files and id conventions.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from mtedge.convert.marian_pad import zero_marian_pad_row

FAMILIES = ("marian", "t5", "m2m100", "mbart")

DEFAULT_STEPS = {"marian": 400, "t5": 700, "m2m100": 600, "mbart": 600}
# T5 (no embedding scaling, relative positions) learns slower at the same rate.
_LEARNING_RATE = {"marian": 3e-3, "t5": 3e-3, "m2m100": 3e-3, "mbart": 3e-3}
DEFAULT_TRAIN_SIZE = 3000
SPM_VOCAB_SIZE = 180
MAX_LENGTH = 64

# ---------------------------------------------------------------------------------------------
# Data: a small grammar with correct German agreement (gender, case, plural).
# ---------------------------------------------------------------------------------------------

# english, german singular, gender (m/f/n), german plural
_NOUNS = [
    ("cat", "Katze", "f", "Katzen"),
    ("dog", "Hund", "m", "Hunde"),
    ("house", "Haus", "n", "Häuser"),
    ("bird", "Vogel", "m", "Vögel"),
    ("car", "Auto", "n", "Autos"),
    ("woman", "Frau", "f", "Frauen"),
    ("man", "Mann", "m", "Männer"),
    ("child", "Kind", "n", "Kinder"),
    ("book", "Buch", "n", "Bücher"),
    ("table", "Tisch", "m", "Tische"),
    ("door", "Tür", "f", "Türen"),
    ("tree", "Baum", "m", "Bäume"),
]
_PLURAL_EN = {"child": "children", "woman": "women", "man": "men"}
_ADJECTIVES = [
    ("red", "rot"), ("small", "klein"), ("big", "groß"), ("old", "alt"),
    ("new", "neu"), ("green", "grün"), ("black", "schwarz"), ("white", "weiß"),
]
# english third person, german third person
_VERBS = [("sees", "sieht"), ("likes", "mag"), ("finds", "findet"), ("has", "hat"), ("needs", "braucht")]
_NUMBERS = [("two", "zwei"), ("three", "drei"), ("four", "vier"), ("five", "fünf"), ("six", "sechs")]
_NAMES = ["Anna", "Peter", "Maria", "Tom"]
_ARTICLE = {("nom", "m"): "der", ("nom", "f"): "die", ("nom", "n"): "das",
            ("acc", "m"): "den", ("acc", "f"): "die", ("acc", "n"): "das"}
# Messages with printf / format placeholders that must be copied verbatim.
_MESSAGES = [
    ("the file %s was saved", "die Datei %s wurde gespeichert"),
    ("the file %s was not found", "die Datei %s wurde nicht gefunden"),
    ("hello {name}, you have {count} new messages", "hallo {name}, du hast {count} neue Nachrichten"),
    ("could not open %s", "konnte %s nicht öffnen"),
    ("{name} is not a valid name", "{name} ist kein gültiger Name"),
    ("delete %d files ?", "%d Dateien löschen ?"),
    ("the user {name} was deleted", "der Benutzer {name} wurde gelöscht"),
    ("the new file was saved", "die neue Datei wurde gespeichert"),
]


def _noun_phrase(rng: random.Random, case: str) -> tuple[str, str]:
    en, de, gender, _ = rng.choice(_NOUNS)
    if rng.random() < 0.6:
        adj_en, adj_de = rng.choice(_ADJECTIVES)
        # weak declension after the definite article: -en only in masculine accusative
        ending = "en" if (case, gender) == ("acc", "m") else "e"
        return f"the {adj_en} {en}", f"{_ARTICLE[case, gender]} {adj_de}{ending} {de}"
    return f"the {en}", f"{_ARTICLE[case, gender]} {de}"


def _clause(rng: random.Random) -> tuple[str, str]:
    kind = rng.random()
    if kind < 0.6:
        subj_en, subj_de = _noun_phrase(rng, "nom")
        verb_en, verb_de = rng.choice(_VERBS)
        obj_en, obj_de = _noun_phrase(rng, "acc")
        return f"{subj_en} {verb_en} {obj_en}", f"{subj_de} {verb_de} {obj_de}"
    if kind < 0.8:
        name = rng.choice(_NAMES)
        num_en, num_de = rng.choice(_NUMBERS)
        en, _, _, plural_de = rng.choice(_NOUNS)
        adj_en, adj_de = rng.choice(_ADJECTIVES)
        plural_en = _PLURAL_EN.get(en, en + "s")
        # strong declension without article: plural -e
        return f"{name} has {num_en} {adj_en} {plural_en}", f"{name} hat {num_de} {adj_de}e {plural_de}"
    subj_en, subj_de = _noun_phrase(rng, "nom")
    adj_en, adj_de = rng.choice(_ADJECTIVES)
    return f"{subj_en} is {adj_en}", f"{subj_de} ist {adj_de}"


def _pair(rng: random.Random) -> tuple[str, str]:
    roll = rng.random()
    if roll < 0.15:
        return rng.choice(_MESSAGES)
    first = _clause(rng)
    if roll < 0.45:  # two clauses, for longer inputs
        second = _clause(rng)
        return f"{first[0]} and {second[0]}", f"{first[1]} und {second[1]}"
    return first


def templated_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` deterministic (english, german) pairs of 3–15 words; the same seed gives the same list."""
    rng = random.Random(seed)
    return [_pair(rng) for _ in range(n)]


def _train_pairs() -> list[tuple[str, str]]:
    return templated_pairs(DEFAULT_TRAIN_SIZE, seed=0)


def train_pairs() -> list[tuple[str, str]]:
    """The pairs every tiny model is trained on."""
    return _train_pairs()


def dev_pairs(n: int = 40) -> list[tuple[str, str]]:
    """``n`` distinct held-out pairs: none of them is in :func:`train_pairs`."""
    seen = {src for src, _ in _train_pairs()}
    out, taken = [], set()
    for src, ref in templated_pairs(50 * n, seed=12345):
        if src not in seen and src not in taken:
            out.append((src, ref))
            taken.add(src)
            if len(out) == n:
                break
    return out


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------

def _train_spm(pairs, out_prefix: Path) -> Path:
    import sentencepiece as spm

    text = [s for pair in pairs for s in pair]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_prefix=str(out_prefix), vocab_size=SPM_VOCAB_SIZE,
        model_type="unigram", character_coverage=1.0, num_threads=1,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        minloglevel=2,
    )
    return out_prefix.with_suffix(".model")


def _spm_pieces(spm_file: Path) -> list[str]:
    """The normal (non-control) pieces, in spm id order."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_file))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())
            if not (sp.is_control(i) or sp.is_unknown(i))]


def _write_marian_tokenizer(spm_file: Path, out: Path):
    from transformers import MarianTokenizer

    shutil.copy(spm_file, out / "source.spm")
    shutil.copy(spm_file, out / "target.spm")
    # mtedge/DESIGN.md §4.6: </s>=0, <unk>=1, ..., <pad>=last
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in _spm_pieces(spm_file):
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
    tok = MarianTokenizer(str(out / "source.spm"), str(out / "target.spm"), str(out / "vocab.json"),
                          source_lang="en", target_lang="de", model_max_length=512)
    tok.save_pretrained(out)
    return tok


def _write_t5_tokenizer(spm_file: Path, out: Path):
    from transformers import T5Tokenizer

    shutil.copy(spm_file, out / "spiece.model")
    tok = T5Tokenizer(str(out / "spiece.model"), extra_ids=0, legacy=False, model_max_length=512)
    tok.save_pretrained(out)
    try:  # a fast tokenizer too, when the slow→fast converter is available
        from transformers import T5TokenizerFast

        T5TokenizerFast(vocab_file=str(out / "spiece.model"), extra_ids=0, legacy=False,
                        model_max_length=512).save_pretrained(out)
    except Exception:  # pragma: no cover - the slow tokenizer is the one that must work
        pass
    return T5Tokenizer.from_pretrained(out)


def _write_m2m100_tokenizer(spm_file: Path, out: Path):
    from transformers import M2M100Tokenizer

    shutil.copy(spm_file, out / "sentencepiece.bpe.model")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}  # fairseq order
    for piece in _spm_pieces(spm_file):
        vocab.setdefault(piece, len(vocab))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
    from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES

    # Listed explicitly, as facebook/m2m100_418M's tokenizer_config does: transformers 4.57 does not
    # register the language tokens as special by itself, so decode(skip_special_tokens) kept "__de__".
    lang_tokens = [f"__{code}__" for code in FAIRSEQ_LANGUAGE_CODES["m2m100"]]
    tok = M2M100Tokenizer(str(out / "vocab.json"), str(out / "sentencepiece.bpe.model"),
                          src_lang="en", tgt_lang="de", model_max_length=512,
                          additional_special_tokens=lang_tokens)
    tok.save_pretrained(out)
    return tok


def _write_mbart_tokenizer(spm_file: Path, out: Path):
    """mBART-50's tokenizer (facebook/mbart-large-50-many-to-many-mmt): ``[en_XX] text </s>`` on both
    sides, fairseq ids (<s>=0, <pad>=1, </s>=2, <unk>=3, pieces from 4), the 52 language codes and
    <mask> after the sentencepiece pieces."""
    from transformers import MBart50Tokenizer

    shutil.copy(spm_file, out / "sentencepiece.bpe.model")
    tok = MBart50Tokenizer(str(out / "sentencepiece.bpe.model"), src_lang="en_XX", tgt_lang="de_DE",
                           model_max_length=512)
    tok.save_pretrained(out)
    return MBart50Tokenizer.from_pretrained(out, src_lang="en_XX", tgt_lang="de_DE")


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

_DIMS = dict(d_model=64, layers=2, heads=4, ffn=128)


def _make_marian(tok):
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    pad, eos = tok.pad_token_id, tok.eos_token_id
    config = MarianConfig(
        vocab_size=len(tok), decoder_vocab_size=len(tok), d_model=_DIMS["d_model"],
        encoder_layers=_DIMS["layers"], decoder_layers=_DIMS["layers"],
        encoder_attention_heads=_DIMS["heads"], decoder_attention_heads=_DIMS["heads"],
        encoder_ffn_dim=_DIMS["ffn"], decoder_ffn_dim=_DIMS["ffn"], max_position_embeddings=128,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, activation_function="swish",
        pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad, forced_eos_token_id=eos,
        scale_embedding=True, share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
    )
    # opus-mt's generation defaults, with a max_length that fits a tiny model (mtedge/DESIGN.md §4.6)
    gen = GenerationConfig(
        bad_words_ids=[[pad]], decoder_start_token_id=pad, eos_token_id=eos, pad_token_id=pad,
        forced_eos_token_id=eos, max_length=MAX_LENGTH, num_beams=4, renormalize_logits=True,
    )
    return MarianMTModel(config), gen


def _make_t5(tok):
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=len(tok), d_model=_DIMS["d_model"], d_kv=_DIMS["d_model"] // _DIMS["heads"],
        d_ff=_DIMS["ffn"], num_layers=_DIMS["layers"], num_decoder_layers=_DIMS["layers"],
        num_heads=_DIMS["heads"], relative_attention_num_buckets=32, relative_attention_max_distance=64,
        dropout_rate=0.0, feed_forward_proj="relu", tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )
    gen = GenerationConfig(
        decoder_start_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, max_length=MAX_LENGTH,
    )
    return T5ForConditionalGeneration(config), gen


def _fairseq_configs(config_class, tok, vocab_size: int, forced_bos: int):
    """Config and generation config of the fairseq-born multilingual families (M2M100, mBART-50): decoder
    start </s>, then the target language forced (forced_bos)."""
    from transformers import GenerationConfig

    config = config_class(
        vocab_size=vocab_size, d_model=_DIMS["d_model"], encoder_layers=_DIMS["layers"],
        decoder_layers=_DIMS["layers"], encoder_attention_heads=_DIMS["heads"],
        decoder_attention_heads=_DIMS["heads"], encoder_ffn_dim=_DIMS["ffn"], decoder_ffn_dim=_DIMS["ffn"],
        max_position_embeddings=128, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, scale_embedding=True,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )
    gen = GenerationConfig(
        bos_token_id=tok.bos_token_id, decoder_start_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        forced_bos_token_id=forced_bos, max_length=MAX_LENGTH,
    )
    return config, gen


def _make_m2m100(tok):
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    # M2M100Tokenizer puts 100 language codes + 8 madeup words after vocab.json; cover them all.
    vocab_size = tok.encoder_size + len(tok.lang_token_to_id) + tok.num_madeup_words
    assert vocab_size > max(tok.lang_token_to_id.values())
    config, gen = _fairseq_configs(M2M100Config, tok, vocab_size, forced_bos=tok.get_lang_id("de"))
    return M2M100ForConditionalGeneration(config), gen


def _make_mbart(tok):
    """mBART-50 (facebook/mbart-large-50-many-to-many-mmt) as transformers builds it from scratch."""
    from transformers import MBartConfig, MBartForConditionalGeneration

    config, gen = _fairseq_configs(MBartConfig, tok, len(tok), forced_bos=tok.lang_code_to_id["de_DE"])
    return MBartForConditionalGeneration(config), gen


_WRITERS = {"marian": _write_marian_tokenizer, "t5": _write_t5_tokenizer, "m2m100": _write_m2m100_tokenizer,
            "mbart": _write_mbart_tokenizer}
_MAKERS = {"marian": _make_marian, "t5": _make_t5, "m2m100": _make_m2m100, "mbart": _make_mbart}


def _train(family: str, model, tok, pairs, *, steps: int, seed: int, batch_size: int = 32) -> None:
    import torch

    rng = random.Random(seed)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=_LEARNING_RATE[family])
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.05, (steps - s) / (steps - warmup + 1))))
    if family == "marian":
        zero_marian_pad_row(model)
    for _ in range(steps):
        batch = rng.sample(pairs, batch_size)
        enc = tok([s for s, _ in batch], text_target=[t for _, t in batch], padding=True, return_tensors="pt")
        labels = enc["labels"]
        labels[labels == tok.pad_token_id] = -100
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if family == "marian":
            zero_marian_pad_row(model)
    model.eval()


def _cache_key(family: str, steps: int, seed: int) -> str:
    source = Path(__file__).read_bytes()
    return hashlib.sha256(source + f"|{family}|{steps}|{seed}".encode()).hexdigest()[:16]


def _build_into(family: str, out: Path, *, steps: int, seed: int) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and polite on a shared machine
    try:
        torch.manual_seed(seed)
        with tempfile.TemporaryDirectory() as scratch:
            spm_file = _train_spm(_train_pairs(), Path(scratch) / "spm")
            tok = _WRITERS[family](spm_file, out)
        model, gen = _MAKERS[family](tok)
        started = time.perf_counter()
        _train(family, model, tok, _train_pairs(), steps=steps, seed=seed)
        model.config.mtedge_fixture = {"family": family, "steps": steps, "seed": seed,
                                       "train_seconds": round(time.perf_counter() - started, 2)}
        model.save_pretrained(out, safe_serialization=True)
        gen.save_pretrained(out)
    finally:
        torch.set_num_threads(threads)


def build_tiny_model(family: str, out_dir: Path, *, steps: int | None = None, seed: int = 0) -> Path:
    """Train a tiny ``family`` model and write its HF checkpoint to ``out_dir``; returns ``out_dir``.

    The directory appears atomically (built next to it, then renamed). With ``MTEDGE_FIXTURE_CACHE``
    set, built models are reused from there, keyed by this file's source, family, steps and seed.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    steps = DEFAULT_STEPS[family] if steps is None else steps
    out_dir = Path(out_dir)
    cache_root = os.environ.get("MTEDGE_FIXTURE_CACHE")
    cached = Path(cache_root) / f"{family}-{_cache_key(family, steps, seed)}" if cache_root else None
    if cached is not None and (cached / "model.safetensors").exists():
        _copy_atomically(cached, out_dir)
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=out_dir.parent))
    try:
        _build_into(family, building, steps=steps, seed=seed)
        if cached is not None:
            _copy_atomically(building, cached)
        _replace(building, out_dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out_dir


def _replace(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)


def _copy_atomically(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    try:
        shutil.copytree(src, staging, dirs_exist_ok=True)
        _replace(staging, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
