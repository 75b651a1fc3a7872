"""The runtime tokenizer: a bundle's ``tokenizer/`` read with sentencepiece and ``vocab.json`` only.

:class:`BundleTokenizer` reproduces the Hugging Face *slow* tokenizer of each family exactly
(``tok(text, truncation=True)["input_ids"]`` and ``tok.decode(ids, skip_special_tokens=True)``),
without transformers. What it mirrors, family by family (transformers 4.57; the flags live in
:mod:`mtedge.families`):

- every family first splits the text on the special tokens written literally in it (HF's added
  tokens: ``</s>``, ``<unk>``, language codes …), which become their own ids;
- Marian: a leading ``>>xx<<`` of each chunk is one token; the rest goes through ``source.spm``;
  pieces map through ``vocab.json``; decoding uses ``target.spm``;
- T5 ``legacy: true``: plain ``spm.encode``. ``legacy: false``: ``▁`` becomes a space, ``▁`` is
  prepended, and a chunk that starts with a space is encoded as ``"<unk>" + chunk`` with the
  model's ``add_dummy_prefix`` turned off and the ``<unk>`` pieces dropped (export/README.md);
- M2M100 / mBART: plain ``spm.encode`` mapped through ``vocab.json``, with a source-language
  prefix (M2M100) or suffix (mBART).

Unknown pieces map to ``unk_id``. Truncation keeps ``model_max_length`` ids, prefix/suffix included.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mtedge.bundle import corrupt_file
from mtedge.errors import BundleError
from mtedge.families import FAMILIES
from mtedge.types import TargetSpec

TOKENIZER_JSON = "mtedge_tokenizer.json"
SPIECE_UNDERLINE = "\u2581"
_SURROGATE = re.compile("[\ud800-\udfff]")


def corrupt(path: Path, detail: str = "") -> BundleError:
    """A tokenizer file (``<bundle>/tokenizer/<file>``) that cannot be parsed."""
    return corrupt_file(path, Path(path).parent.parent, detail)


def _load_spm(path: Path, add_dummy_prefix: bool = True):
    import sentencepiece as spm

    if not path.is_file():
        raise BundleError(f"tokenizer file missing: {path}")
    try:
        if add_dummy_prefix:
            return spm.SentencePieceProcessor(model_file=str(path))
        # T5 legacy=False loads the model with normalizer_spec.add_dummy_prefix switched off.
        # protobuf comes with onnxruntime; sentencepiece ships the generated module.
        from sentencepiece import sentencepiece_model_pb2 as model_pb2

        model = model_pb2.ModelProto()
        model.ParseFromString(path.read_bytes())
        model.normalizer_spec.add_dummy_prefix = False
        processor = spm.SentencePieceProcessor()
        processor.LoadFromSerializedProto(model.SerializeToString())
        return processor
    except ImportError:
        raise
    except Exception as exc:  # sentencepiece: RuntimeError/OSError; protobuf: DecodeError
        raise corrupt(path, "not a sentencepiece model") from exc


# mtedge_tokenizer.json fields: name -> (required, check, what it must be)
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_SPEC_FIELDS = {
    "unk_id": (True, _is_int, "a token id"),
    "eos_id": (True, _is_int, "a token id"),
    "pad_id": (True, _is_int, "a token id"),
    "decoder_start_id": (True, _is_int, "a token id"),
    "source_spm": (True, lambda v: isinstance(v, str) and v != "", "a file name"),
    "target_spm": (True, lambda v: isinstance(v, str) and v != "", "a file name"),
    "vocab": (False, lambda v: isinstance(v, str) and v != "", "a file name"),
    "vocab_size": (False, lambda v: _is_int(v) and v > 0, "a positive integer"),
    "model_max_length": (False, lambda v: _is_int(v) and v > 1, "an integer above 1"),
    "source_prefix": (False, _is_str_list, "a list of token strings"),
    "source_suffix": (False, _is_str_list, "a list of token strings"),
    "target_prefix": (False, _is_str_list, "a list of token strings"),
    "special_ids": (False, lambda v: isinstance(v, list) and all(_is_int(i) for i in v), "a list of token ids"),
    "bad_words_ids": (False, lambda v: isinstance(v, list) and all(
        isinstance(w, list) and all(_is_int(i) for i in w) for w in v), "a list of token-id lists"),
    "legacy": (False, lambda v: isinstance(v, bool), "true or false"),
    "add_prefix_space": (False, lambda v: isinstance(v, bool), "true or false"),
    "clean_up_tokenization_spaces": (False, lambda v: isinstance(v, bool), "true or false"),
}


def _check_spec(spec, spec_path: Path) -> None:
    if not isinstance(spec, dict):
        raise BundleError(f"{spec_path} is damaged: expected a JSON object, found a {type(spec).__name__} "
                          f"(re-export the bundle)")
    for key, (required, check, what) in _SPEC_FIELDS.items():
        if key not in spec or spec[key] is None:
            if required:
                raise BundleError(f"{spec_path} is damaged: it lacks {key!r} (re-export the bundle)")
            continue
        if not check(spec[key]):
            shown = repr(spec[key])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise BundleError(f"{spec_path} is damaged: {key} must be {what}, got {shown} (re-export the bundle)")


class BundleTokenizer:
    """Source encoding and target decoding of one bundle, identical to the HF slow tokenizer."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        spec_path = directory / TOKENIZER_JSON
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError(f"tokenizer description missing: {spec_path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{spec_path} is not valid JSON: {exc}") from None
        _check_spec(spec, spec_path)
        self.spec = spec
        self.kind = spec.get("kind")
        if self.kind not in FAMILIES:
            raise BundleError(f"{spec_path}: unknown tokenizer kind {self.kind!r}; expected one of "
                              f"{', '.join(FAMILIES)}")
        self.family = FAMILIES[self.kind]
        self.directory = directory
        self.unk_id = int(spec["unk_id"])
        self.eos_id = int(spec["eos_id"])
        self.pad_id = int(spec["pad_id"])
        self.decoder_start_id = int(spec["decoder_start_id"])
        self.model_max_length = int(spec.get("model_max_length") or 512)
        self.legacy = bool(spec.get("legacy", True))
        # Neither is recorded by the export today; these are transformers' defaults for the families.
        self.add_prefix_space = bool(spec.get("add_prefix_space", True))
        self.clean_up_tokenization_spaces = bool(spec.get("clean_up_tokenization_spaces", False))

        vocab_path = directory / spec.get("vocab", "vocab.json")
        try:
            vocab: dict[str, int] = json.loads(vocab_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError(f"tokenizer file missing: {vocab_path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise corrupt(vocab_path, "not valid JSON") from exc
        if not isinstance(vocab, dict) or not vocab or not all(_is_int(i) and i >= 0 for i in vocab.values()):
            raise corrupt(vocab_path, "not an object of piece -> id")
        size = int(spec.get("vocab_size") or (max(vocab.values()) + 1))
        for key in ("unk_id", "eos_id", "pad_id", "decoder_start_id"):
            if not 0 <= spec[key] < size:
                raise BundleError(f"{spec_path} is damaged: {key} {spec[key]} is outside the vocabulary "
                                  f"(0..{size - 1}) (re-export the bundle)")
        self.vocab = vocab
        self.pieces: list[str] = [f"<unused_{i}>" for i in range(size)]
        for piece, index in vocab.items():
            if 0 <= index < size and self.pieces[index].startswith("<unused_"):
                self.pieces[index] = piece

        t5_new = self._t5_new = self.family.prefix_space_rules and not self.legacy
        self.source_spm = _load_spm(directory / spec["source_spm"], add_dummy_prefix=not t5_new)
        self.target_spm = self.source_spm if spec["target_spm"] == spec["source_spm"] \
            else _load_spm(directory / spec["target_spm"], add_dummy_prefix=not t5_new)

        self.source_prefix_ids = [self._piece_id(p) for p in spec.get("source_prefix") or []]
        self.source_suffix_ids = [self._piece_id(p) for p in spec.get("source_suffix") or []]
        self.target_prefix_ids = [self._piece_id(p) for p in spec.get("target_prefix") or []]
        self.special_ids = {int(i) for i in spec.get("special_ids") or []}
        # The tokens HF treats as added tokens: never split, matched literally in the input text.
        self.special_tokens = {self.pieces[i] for i in self.special_ids
                               if 0 <= i < size and not self.pieces[i].startswith("<unused_")}
        alternatives = sorted(self.special_tokens, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")") \
            if alternatives else None
        self._lstrip = self.family.lstrip_tokens & self.special_tokens
        if t5_new:
            self._unk_token = self.pieces[self.unk_id]
            self._unk_token_length = len(self.source_spm.encode(self._unk_token, out_type=str))

    # -- encoding ------------------------------------------------------------------------------
    def _piece_id(self, piece: str) -> int:
        return self.vocab.get(piece, self.unk_id)

    def _split_special(self, text: str) -> list[str]:
        """HF's added-tokens trie split: ``["a ", "</s>", " b"]``; specials stay whole."""
        if self._special_pattern is None:
            return [text]
        chunks = [c for c in self._special_pattern.split(text)]
        for i, chunk in enumerate(chunks):
            if chunk in self._lstrip and i > 0:
                chunks[i - 1] = chunks[i - 1].rstrip()
        return [c for c in chunks if c]

    def _tokenize_chunk(self, chunk: str) -> list[str]:
        if self.family.language_code_chunks:
            code = []
            if chunk.startswith(">>") and (end := chunk.find("<<")) != -1:
                code, chunk = [chunk[:end + 2]], chunk[end + 2:]
            return code + self.source_spm.encode(chunk, out_type=str)
        if self._t5_new and chunk.startswith((SPIECE_UNDERLINE, " ")):
            pieces = self.source_spm.encode(self._unk_token + chunk, out_type=str)
            n = self._unk_token_length
            return pieces[n:] if len(pieces) >= n else pieces
        return self.source_spm.encode(chunk, out_type=str)

    def tokenize(self, text: str) -> list[str]:
        """Source pieces of ``text`` (no prefix/suffix, not truncated): HF ``tok.tokenize(text)``.
        A lone surrogate (not encodable as UTF-8, which sentencepiece needs) is read as U+FFFD."""
        if _SURROGATE.search(text):
            text = _SURROGATE.sub("\ufffd", text)
        t5_new = self._t5_new
        if t5_new and text:
            text = text.replace(SPIECE_UNDERLINE, " ")
            if self.add_prefix_space:
                text = SPIECE_UNDERLINE + text
        pieces: list[str] = []
        for chunk in self._split_special(text):
            pieces += [chunk] if chunk in self.special_tokens else self._tokenize_chunk(chunk)
        if t5_new and len(pieces) > 1 and pieces[0] == SPIECE_UNDERLINE and pieces[1] in self.special_tokens:
            pieces = pieces[1:]
        return pieces

    @property
    def decoder_start_token(self) -> str:
        return self.pieces[self.decoder_start_id]

    @property
    def num_special_tokens(self) -> int:
        return len(self.source_prefix_ids) + len(self.source_suffix_ids)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Source ids with prefix/suffix, truncated to ``max_length`` (default ``model_max_length``)."""
        ids = self.encode_body(text)
        limit = self.model_max_length if max_length is None else max_length
        body_limit = max(0, limit - self.num_special_tokens)
        if len(ids) > body_limit:
            ids = ids[:body_limit]
        return self.wrap(ids)

    def encode_body(self, text: str) -> list[int]:
        """Source ids without prefix/suffix and without truncation."""
        return [self._piece_id(p) for p in self.tokenize(text)]

    def wrap(self, body: list[int]) -> list[int]:
        if self.family.eos_if_not_present and body and body[-1] == self.eos_id:
            # T5Tokenizer._add_eos_if_not_present: a text ending in a literal "</s>" gets no second one
            return self.source_prefix_ids + body
        return self.source_prefix_ids + body + self.source_suffix_ids

    def source_tokens(self, text: str, max_length: int | None = None) -> list[str]:
        """:meth:`encode` as token strings (what CTranslate2 takes); unknown pieces become unk."""
        return self.ids_to_pieces(self.encode(text, max_length))

    def ids_to_pieces(self, ids: list[int]) -> list[str]:
        return [self.pieces[i] for i in ids]

    def pieces_to_ids(self, pieces: list[str]) -> list[int]:
        return [self._piece_id(p) for p in pieces]

    def target_pieces(self, text: str) -> list[str]:
        """The target-side pieces of a reference translation (no prefix, no ``</s>``): what the model is
        trained to generate for it (Marian: its own target sentencepiece model)."""
        if _SURROGATE.search(text):
            text = _SURROGATE.sub("\ufffd", text)
        return self.target_spm.encode(text, out_type=str)

    # -- decoding ------------------------------------------------------------------------------
    def decode(self, ids: list[int]) -> str:
        """Text of target ids, like HF ``decode(ids, skip_special_tokens=True)``."""
        tokens = []
        for index in ids:
            index = int(index)
            if index in self.special_ids or not 0 <= index < len(self.pieces):
                continue
            piece = self.pieces[index]
            # ids the HF tokenizer cannot name decode to its <unk>, a special token: skipped
            if piece.startswith("<unused_") or piece in self.special_tokens:
                continue
            tokens.append(piece)
        if not tokens:
            return ""
        text = self._tokens_to_string(tokens)
        return _clean_up_tokenization(text) if self.clean_up_tokenization_spaces else text

    def _tokens_to_string(self, tokens: list[str]) -> str:
        if self.family.decode_underline_as_space:
            return self.target_spm.decode_pieces(tokens).replace(SPIECE_UNDERLINE, " ").strip()
        if self.family.prefix_space_rules and tokens[0].startswith(SPIECE_UNDERLINE) and self.add_prefix_space:
            tokens = [tokens[0][1:]] + tokens[1:]
        return self.target_spm.decode(tokens).strip()

    # -- for the engines -----------------------------------------------------------------------
    def target_spec(self) -> TargetSpec:
        return TargetSpec(decoder_start_id=self.decoder_start_id, eos_id=self.eos_id, pad_id=self.pad_id,
                          target_prefix_ids=list(self.target_prefix_ids),
                          bad_words_ids=[list(map(int, w)) for w in self.spec.get("bad_words_ids") or []])

    def __repr__(self) -> str:
        return f"BundleTokenizer({str(self.directory)!r}, kind={self.kind!r}, vocab={len(self.pieces)})"


def _clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization`` (only used when the bundle asks for it)."""
    return (text.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",")
            .replace(" ' ", "'").replace(" n't", "n't").replace(" 'm", "'m").replace(" 's", "'s")
            .replace(" 've", "'ve").replace(" 're", "'re"))
