"""mtedge.text: input cleaning, the sentence splitter and its join, token-budget batching (no model)."""

from __future__ import annotations

import random

import pytest

from mtedge.text import Segment, clean_text, is_blank, join_segments, split_sentences, token_budget_batches


@pytest.mark.parametrize("raw, clean", [
    ("plain text", "plain text"),
    ("nul\x00bell\x07esc\x1bdel\x7f", "nulbellescdel"),
    ("tab\there\nnew\r\nline\x0bvt\x0cff\x85nel", "tab here new  line vt ff nel"),
    ("\ufeffbom at start", "bom at start"),
    ("lone \ud800 and \udfff surrogates", "lone \ufffd and \ufffd surrogates"),
    ("emoji 😀, 日本語, ẞ and e\u0301 stay", "emoji 😀, 日本語, ẞ and e\u0301 stay"),
    ("%s {name} %(count)d", "%s {name} %(count)d"),
    ("zero\u200bwidth and nbsp\u00a0stay", "zero\u200bwidth and nbsp\u00a0stay"),
])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean
    clean_text(raw).encode("utf-8")  # always encodable


def test_blank():
    assert is_blank("") and is_blank("  \t\n\u3000") and not is_blank(" a ")


@pytest.mark.parametrize("text, sentences", [
    ("Hello world. This is Dr. Smith! Is it? Yes.", ["Hello world.", "This is Dr. Smith!", "Is it?", "Yes."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("e.g. this stays. And 3.5 too. J. Smith came.", ["e.g. this stays.", "And 3.5 too.", "J. Smith came."]),
    ("The U.S. Army is here. OK", ["The U.S. Army is here.", "OK"]),
    ("Wait... What?! Really.", ["Wait...", "What?!", "Really."]),
    ("no split. lowercase next", ["no split. lowercase next"]),
    ("Das ist z.B. gut. Und bzw. auch.", ["Das ist z.B. gut.", "Und bzw. auch."]),
    ("你好。世界！再见", ["你好。", "世界！", "再见"]),
    ("one line\nanother line", ["one line", "another line"]),
    ("", []),
    ("   \n  ", []),
])
def test_split_sentences(text, sentences):
    assert [s.text for s in split_sentences(text)] == sentences


def test_split_then_join_restores_the_layout():
    text = "  First one. Second one!\n\nNew paragraph?  Yes.\r\nLast line  "
    segments = split_sentences(text)
    assert [s.before for s in segments] == ["", " ", "\n\n", "  ", "\r\n"]
    assert join_segments(segments, [s.text for s in segments]) == text.strip()


def test_join_puts_a_space_between_latin_sentences_from_cjk():
    segments = split_sentences("你好。世界！")
    assert join_segments(segments, ["Hello.", "World!"]) == "Hello. World!"
    assert join_segments(segments, ["你好。", "世界！"]) == "你好。世界！"
    assert join_segments([Segment("a")], ["x"]) == "x"


def test_token_budget_batches_cover_all_and_respect_the_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(500)]
    batches = token_budget_batches(lengths, 256)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        assert max(lengths[i] for i in batch) * len(batch) <= 256
    # longest first, so the first batch shows the worst-case memory at once
    assert max(lengths[i] for i in batches[0]) == max(lengths)


def test_token_budget_batches_edge_cases():
    assert token_budget_batches([], 10) == []
    assert token_budget_batches([50, 3], 10) == [[0], [1]]  # an overlong item travels alone
    assert token_budget_batches([2, 2, 2, 2], 100, max_batch_size=3) == [[0, 1, 2], [3]]
    with pytest.raises(ValueError):
        token_budget_batches([1], 0)
