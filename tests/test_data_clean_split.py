"""mtedge.data cleaning (NFC, whitespace, filters, dedupe) and deterministic splits."""

import unicodedata

import pytest

from mtedge.data import DataError, Pair, clean_pairs, clean_pairs_with_stats, split_pairs


def test_nfc_whitespace_and_control_characters():
    decomposed = unicodedata.normalize("NFD", "Grüße")
    assert decomposed != "Grüße"
    [pair] = clean_pairs([Pair(" Hello \t\n  world\x07 ", f"{decomposed}\u00a0 dir\u200b\ufeff")])
    assert pair == Pair("Hello world", "Grüße dir")


def test_filters_and_stats():
    pairs = [
        Pair("keep me", "behalte mich"),
        Pair("   ", "leer"),                          # empty after normalization
        Pair("one two three four five", "eins"),     # ratio 5 > 3
        Pair(" ".join(["w"] * 11), " ".join(["w"] * 11)),  # too long for max_words=10
        Pair("keep  me", "behalte mich"),            # duplicate once normalized
    ]
    kept, stats = clean_pairs_with_stats(pairs, max_words=10)
    assert kept == [Pair("keep me", "behalte mich")]
    assert (stats.read, stats.empty, stats.ratio, stats.too_long, stats.duplicate, stats.kept) == (5, 1, 1, 1, 1, 1)
    assert clean_pairs([Pair("a", "b"), Pair("a", "b")], dedupe=False) == [Pair("a", "b")] * 2
    assert clean_pairs([Pair("one", "eins")], min_words=2) == []


def _numbered(n):
    return [Pair(f"sentence {i}", f"Satz {i}") for i in range(n)]


def test_split_is_deterministic_and_disjoint():
    pairs = _numbered(100)
    first = split_pairs(pairs, dev=10, test=20, seed=3)
    again = split_pairs(pairs, dev=10, test=20, seed=3)
    other = split_pairs(pairs, dev=10, test=20, seed=4)
    assert first == again and first.test != other.test
    train, dev, test = first
    assert (len(train), len(dev), len(test)) == (70, 10, 20)
    assert sorted(train + dev + test, key=pairs.index) == pairs
    assert test == sorted(test, key=pairs.index)  # each split keeps the input order


def test_group_hold_out_keeps_groups_whole():
    pairs = [Pair(f"chapter {c} verse {v}", f"Kapitel {c} Vers {v}") for c in range(40) for v in range(5)]
    chapter = lambda i: i // 5  # noqa: E731
    splits = split_pairs(pairs, dev=20, test=30, seed=0, group_key=chapter)
    chapters = {name: {pairs.index(p) // 5 for p in part} for name, part in zip(("train", "dev", "test"), splits)}
    assert not (chapters["train"] & chapters["dev"]) and not (chapters["train"] & chapters["test"])
    assert not (chapters["dev"] & chapters["test"])
    assert (len(splits.dev), len(splits.test)) == (20, 30)
    assert splits == split_pairs(pairs, dev=20, test=30, seed=0, group_key=chapter)


def test_group_hold_out_overshoots_when_groups_are_large():
    pairs = _numbered(30)
    splits = split_pairs(pairs, dev=3, test=3, seed=0, group_key=lambda i: i // 10)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (10, 10, 10)


def test_sources_in_held_out_splits_are_dropped_from_train():
    pairs = [Pair("same", f"gleich {i}") for i in range(5)] + _numbered(50)
    splits = split_pairs(pairs, dev=5, test=10, seed=1, group_key=lambda i: i)
    held = {p.src for p in splits.dev + splits.test}
    assert not any(p.src in held for p in splits.train)
    assert not {p.src for p in splits.dev} & {p.src for p in splits.test}
    assert len(splits.train) + len(splits.dev) + len(splits.test) + splits.leaked_from_train == len(pairs)


def test_split_needs_something_left_to_train():
    with pytest.raises(DataError, match="nothing left"):
        split_pairs(_numbered(10), dev=5, test=5)
