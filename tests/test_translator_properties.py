"""Property test of the text path: for any list of Unicode strings (surrogates, zero-width and
control characters, literal special tokens, line separators included), a Translator returns one
result per input, a blank result for every blank input (or one the tokenizer keeps nothing of), raises nothing but a UserError, and gives
the same answer twice. Runs on the real tiny trained Marian bundle, greedy, short outputs (< 30 s).
"""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mtedge import Translator  # noqa: E402
from mtedge.errors import UserError  # noqa: E402
from mtedge.text import clean_text, is_blank  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

# Pieces that have broken tokenizers and engines before, mixed with words the model knows.
TRICKY = ["\u200b", "\ufffd", "\ud800", "\udfff", "\ufeff", "\u2028", "\x00", "\x85", "\t", "\n", "\r", " ",
          "\u3000", "</s>", "<unk>", "<pad>", ">>de<<", "the ", "cat ", "sees ", "dog", ". ", "? ", "\u0301",
          "\U0001F600", "中", "%s", "{0}"]
ANY_CHARACTER = st.characters(exclude_categories=())  # surrogates (Cs) included
TEXT = st.one_of(st.text(ANY_CHARACTER, max_size=30),
                 st.lists(st.sampled_from(TRICKY), max_size=12).map("".join))
OPTIONS = dict(beam_size=1, max_length=12)


@pytest.fixture(scope="module", params=["ct2", "onnx"])
def translator(request, tiny_unvalidated_bundles):
    translator = Translator(tiny_unvalidated_bundles("marian"), engine=request.param, device="cpu", threads=1)
    yield translator
    translator.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(texts=st.lists(TEXT, max_size=6), split=st.booleans())
def test_any_unicode_gives_one_result_each_blank_for_blank_and_deterministic(translator, texts, split):
    try:
        first = translator.translate(texts, split_sentences=split, **OPTIONS)
    except UserError:
        return  # a clear refusal is an allowed answer; anything else propagates and fails
    assert len(first) == len(texts)
    for text, result in zip(texts, first):
        assert isinstance(result.text, str)
        # blank, or nothing the tokenizer keeps (U+200B, U+FFFD, a lone surrogate…): blank out
        if is_blank(text) or not translator.tokenizer.encode_body(clean_text(text).strip()):
            assert result.text == "" and result.hypotheses == [], (text, result)
    again = translator.translate(texts, split_sentences=split, **OPTIONS)
    assert [r.text for r in again] == [r.text for r in first]
