"""The CTranslate2 engine at the id level: option mapping (lengths, prefix, scores) against the
PyTorch reference engine (HF generate) on the same source ids, on the tiny trained fixtures."""

from __future__ import annotations

import json

import pytest

from mtedge.bundle import Bundle
from mtedge.engines import load_engine
from mtedge.types import DecodeOptions
from mtedge.tokenizer import BundleTokenizer
from tests.factories import FAMILIES

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SCORE_TOLERANCE = 1e-4  # fp32 CT2 vs PyTorch; measured differences are below 2e-6


@pytest.fixture(scope="module")
def engines(tiny_unvalidated_bundles):
    """family -> (tokenizer, ct2 float32 engine, torch engine), built once."""
    built = {}

    def get(family):
        if family not in built:
            bundle = Bundle.open(tiny_unvalidated_bundles(family))
            tok = BundleTokenizer(bundle.tokenizer_dir())
            built[family] = (tok, load_engine(bundle, "ct2", "float32", "cpu", 1, tokenizer=tok),
                             load_engine(bundle, "torch", "fp32", "cpu", 1, tokenizer=tok))
        return built[family]

    return get


@pytest.fixture(scope="module")
def sources(tiny_dev_pairs):
    return [s for s, _ in tiny_dev_pairs[:12]]


# max_length 1 leaves M2M100 nothing after its language token (the Translator refuses it)
@pytest.mark.parametrize("family, max_length", [(f, n) for f in FAMILIES for n in (1, 2, 5, 63)
                                                if (f, n) != ("m2m100", 1)])
def test_max_length_counts_eos_and_prefix_like_hf(engines, sources, family, max_length):
    tok, ct2, torch = engines(family)
    ids = [tok.encode(s) for s in sources]
    options = DecodeOptions(beam_size=4, max_length=max_length, return_scores=True)
    got, want = ct2.translate_ids(ids, options), torch.translate_ids(ids, options)
    for g, w in zip(got, want):
        assert g[0].ids == w[0].ids
        assert g[0].score == pytest.approx(w[0].score, abs=SCORE_TOLERANCE)
        assert len(g[0].ids) + len(tok.target_prefix_ids) <= max_length


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("min_length", [0, 1, 18, 25])
def test_min_length_like_hf(engines, sources, family, min_length):
    tok, ct2, torch = engines(family)
    ids = [tok.encode(s) for s in sources[:6]]
    options = DecodeOptions(beam_size=1, max_length=40, min_length=min_length, return_scores=True)
    got, want = ct2.translate_ids(ids, options), torch.translate_ids(ids, options)
    assert [g[0].ids for g in got] == [w[0].ids for w in want]
    for g in got:  # the runtime's min_length counts the </s> (and the language token)
        assert len(g[0].ids) + len(tok.target_prefix_ids) + 1 >= min_length


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("length_penalty", [0.0, 2.0])
def test_length_penalty_like_hf(engines, sources, family, length_penalty):
    tok, ct2, torch = engines(family)
    ids = [tok.encode(s) for s in sources]
    options = DecodeOptions(beam_size=4, max_length=63, length_penalty=length_penalty, return_scores=True)
    got, want = ct2.translate_ids(ids, options), torch.translate_ids(ids, options)
    for g, w in zip(got, want):
        assert g[0].ids == w[0].ids
        assert g[0].score == pytest.approx(w[0].score, abs=SCORE_TOLERANCE)


def test_target_prefix_is_forced_and_not_returned(engines, sources):
    tok, ct2, _ = engines("m2m100")
    options = DecodeOptions(beam_size=2, max_length=63)
    (hyp,), = ct2.translate_ids([tok.encode(sources[0])], options)
    assert tok.target_prefix_ids and tok.target_prefix_ids[0] not in hyp.ids
    assert tok.eos_id not in hyp.ids and hyp.ids


def test_marian_ct2_has_no_pad_row_and_tokens_map_back(tiny_unvalidated_bundles, engines, sources):
    bundle = Bundle.open(tiny_unvalidated_bundles("marian"))
    tok, ct2, torch = engines("marian")
    ct2_vocab = json.loads((bundle.engine_dir("ct2", "float32") / "shared_vocabulary.json").read_text())
    assert len(ct2_vocab) == len(tok.pieces) - 1 and "<pad>" not in ct2_vocab  # export/README.md
    assert ct2.suppress == []  # bad_words_ids [[<pad>]]: nothing CT2 could generate
    options = DecodeOptions(beam_size=1, max_length=63)
    ids = [tok.encode(s) for s in sources]
    assert [h[0].ids for h in ct2.translate_ids(ids, options)] == [h[0].ids for h in torch.translate_ids(ids, options)]


def test_scores_only_when_asked_and_empty_batch(engines, sources):
    tok, ct2, _ = engines("t5")
    (hyp,), = ct2.translate_ids([tok.encode(sources[0])], DecodeOptions(beam_size=2, max_length=20))
    assert hyp.score is None
    assert ct2.translate_ids([], DecodeOptions()) == []


def test_nbest_sorted_and_distinct(engines, sources):
    tok, ct2, _ = engines("marian")
    options = DecodeOptions(beam_size=4, num_hypotheses=4, max_length=63, return_scores=True)
    for hyps in ct2.translate_ids([tok.encode(s) for s in sources], options):
        assert len(hyps) == 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.ids) for h in hyps}) == 4


def test_friendly_thread_names_reach_ctranslate2(tiny_unvalidated_bundles):
    bundle = Bundle.open(tiny_unvalidated_bundles("marian"))
    engine = load_engine(bundle, "ct2", "int8", "cpu", threads=1, workers=2)
    assert engine.translator.num_translators == 2  # workers -> inter_threads
    assert engine.translator.compute_type in {"int8", "int8_float32"}


def test_a_missing_cuda_library_is_one_line_naming_it():
    """CTranslate2's own message where its CUDA 12 build meets a machine without CUDA 12's cuBLAS (the GPU path
    itself runs in the tests marked gpu)."""
    from mtedge.engines.ct2_engine import missing_cuda_library

    hint = missing_cuda_library("Library libcublas.so.12 is not found or cannot be loaded")
    assert hint.startswith("CTranslate2 4.") and "could not load libcublas.so.12" in hint and "\n" not in hint
    assert "nvidia-cublas-cu12" in hint and "device 'cpu'" in hint
    assert missing_cuda_library("CUDA failed with error out of memory") is None
