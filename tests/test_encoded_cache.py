"""The run directory's cache of encoded training pairs: reused only for the same pairs, tokenizer and limits."""

from __future__ import annotations

import shutil

import pytest

from mtedge.train.encoded_cache import CACHE_NAME, load_or_encode
from mtedge.train.loop import LoopConfig, encode_pairs
from tests.factories import dev_pairs


@pytest.fixture(scope="module")
def tokenizer(tiny_marian):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_marian))


def _encoder(tokenizer, pairs, calls, config=LoopConfig(max_source_length=32, max_target_length=32)):
    def encode():
        calls.append(len(pairs))
        return encode_pairs(tokenizer, pairs, config)
    return encode


def test_a_resume_reads_the_ids_instead_of_encoding(tokenizer, tmp_path):
    pairs, calls = dev_pairs(20), []
    first = load_or_encode(tmp_path, pairs, tokenizer, (32, 32), _encoder(tokenizer, pairs, calls))
    again = load_or_encode(tmp_path, pairs, tokenizer, (32, 32), _encoder(tokenizer, pairs, calls))
    assert calls == [20] and (tmp_path / CACHE_NAME).is_file()
    assert again == first == encode_pairs(tokenizer, pairs, LoopConfig(max_source_length=32, max_target_length=32))


def test_other_pairs_limits_or_tokenizer_files_encode_again(tokenizer, tiny_marian, tmp_path):
    pairs, calls = dev_pairs(20), []
    load_or_encode(tmp_path, pairs, tokenizer, (32, 32), _encoder(tokenizer, pairs, calls))
    other = pairs[:-1] + [("the cat sleeps", "die Katze schläft")]
    assert load_or_encode(tmp_path, other, tokenizer, (32, 32), _encoder(tokenizer, other, calls))[-1] \
        == encode_pairs(tokenizer, other[-1:], LoopConfig(max_source_length=32, max_target_length=32))[0]
    load_or_encode(tmp_path, other, tokenizer, (16, 32), _encoder(tokenizer, other, calls))
    assert calls == [20, 20, 20]

    from transformers import AutoTokenizer

    changed = shutil.copytree(tiny_marian, tmp_path / "tok")
    (changed / "vocab.json").write_text((changed / "vocab.json").read_text(encoding="utf-8") + "\n", encoding="utf-8")
    load_or_encode(tmp_path, other, AutoTokenizer.from_pretrained(str(changed)), (16, 32),
                   _encoder(tokenizer, other, calls))
    assert calls == [20, 20, 20, 20]


def test_a_damaged_cache_is_rebuilt(tokenizer, tmp_path):
    pairs, calls = dev_pairs(5), []
    (tmp_path / CACHE_NAME).write_bytes(b"not an npz file")
    encoded = load_or_encode(tmp_path, pairs, tokenizer, (32, 32), _encoder(tokenizer, pairs, calls))
    assert calls == [5] and load_or_encode(tmp_path, pairs, tokenizer, (32, 32),
                                           _encoder(tokenizer, pairs, calls)) == encoded
