"""``mtedge.Translator`` end to end on the tiny trained fixtures: parity of CTranslate2 (and ONNX, when
its engine is present) with the PyTorch reference, int8 agreement, input handling, option
validation, concurrency, bounded memory, and the import hygiene of the runtime path."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pytest

from mtedge import Translation, Translator
from mtedge.errors import BundleError, UserError
from mtedge.translator import InputTruncatedWarning
from tests.factories import FAMILIES

ROOT = Path(__file__).parents[1]
SCORE_TOLERANCE = 1e-4
# int8 vs PyTorch fp32, exact-match rate on the 40 dev sentences (mtedge/DESIGN.md §4.4: no exact int8 asserts).
# Measured on the fixtures (2-core AMD EPYC, CT2 4.8.5, ORT 1.32), greedy/beam4: ct2 int8 marian 1.00/1.00,
# t5 0.875/1.00, m2m100 1.00/1.00; onnx int8 marian 1.00/1.00, t5 0.90/0.975, m2m100 1.00/1.00.
# The floor leaves room for CPU-dependent int8 kernels: on an AMD EPYC with AVX2 only (no VNNI, 2026-12-02)
# the t5 fixture trained there gave ct2 int8 0.70 greedy.
INT8_MIN_AGREEMENT = 0.65
# HF's default beam search (early_stopping=False) keeps searching after beam_size hypotheses end;
# CTranslate2 stops there (HF early_stopping=True). Lower n-best ranks often differ, and so, rarely, does
# the best: the t5 fixture trained on an AMD EPYC (2026-12-02) had 1 of 40 sentences whose HF default search
# found a better hypothesis after CT2 had stopped ("die neue Katze mag den grünen Mann" vs "die Katze mag
# den neuen Mann"). Exact parity is asserted with early_stopping=True, the search CT2 implements.
# Measured whole-list agreement at n=3: marian 0.95, t5 0.825, m2m100 0.85.
NBEST_MIN_AGREEMENT_HF_DEFAULT = 0.7
TOP1_MIN_AGREEMENT_HF_DEFAULT = 0.95

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")


@pytest.fixture(scope="module")
def translators(tiny_unvalidated_bundles):
    """(family, engine, precision) -> Translator, built once per module, one thread each."""
    built = {}

    def get(family, engine="ct2", precision=None, **kwargs):
        key = (family, engine, precision, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = Translator(tiny_unvalidated_bundles(family), engine=engine, precision=precision,
                                    device="cpu", threads=1, **kwargs)
        return built[key]

    return get


@pytest.fixture(scope="module")
def sources(tiny_dev_pairs):
    return [s for s, _ in tiny_dev_pairs]


def texts(results: list[Translation]) -> list[str]:
    return [r.text for r in results]


# -- parity with the PyTorch reference ---------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("beam_size", [1, 4])
def test_ct2_float32_identical_to_torch(translators, sources, family, beam_size):
    kwargs = dict(beam_size=beam_size, return_scores=True, early_stopping=True)  # CT2's stopping rule
    ct2 = translators(family, "ct2", "float32").translate(sources, **kwargs)
    ref = translators(family, "torch").translate(sources, **kwargs)
    assert texts(ct2) == texts(ref)
    assert all(t.text for t in ct2)
    for a, b in zip(ct2, ref):
        assert a.score == pytest.approx(b.score, abs=SCORE_TOLERANCE)


@pytest.mark.parametrize("family", FAMILIES)
def test_ct2_nbest_identical_to_torch_with_hf_early_stopping(translators, sources, family):
    kwargs = dict(beam_size=4, num_hypotheses=3, return_scores=True, early_stopping=True)
    ct2 = translators(family, "ct2", "float32").translate(sources, **kwargs)
    ref = translators(family, "torch").translate(sources, **kwargs)
    for a, b in zip(ct2, ref):
        assert [h.text for h in a.hypotheses] == [h.text for h in b.hypotheses]
        assert [h.score for h in a.hypotheses] == pytest.approx([h.score for h in b.hypotheses], abs=SCORE_TOLERANCE)


@pytest.mark.parametrize("family", FAMILIES)
def test_ct2_nbest_with_hf_default_search(translators, sources, family):
    kwargs = dict(beam_size=4, num_hypotheses=3)
    ct2 = translators(family, "ct2", "float32").translate(sources, **kwargs)
    ref = translators(family, "torch").translate(sources, **kwargs)
    top1 = sum(a == b for a, b in zip(texts(ct2), texts(ref))) / len(sources)
    assert top1 >= TOP1_MIN_AGREEMENT_HF_DEFAULT, f"{family}: best hypothesis agreement {top1:.3f}"
    same = sum([h.text for h in a.hypotheses] == [h.text for h in b.hypotheses] for a, b in zip(ct2, ref))
    assert same / len(sources) >= NBEST_MIN_AGREEMENT_HF_DEFAULT
    assert all(len(t.hypotheses) == 3 for t in ct2)


@pytest.mark.parametrize("family", FAMILIES)
def test_ct2_int8_agreement_with_torch(translators, sources, family):
    for beam_size in (1, 4):
        ct2 = translators(family, "ct2", "int8").translate(sources, beam_size=beam_size)
        ref = translators(family, "torch").translate(sources, beam_size=beam_size)
        agreement = sum(a == b for a, b in zip(texts(ct2), texts(ref))) / len(sources)
        assert agreement >= INT8_MIN_AGREEMENT, f"{family} beam {beam_size}: {agreement:.3f}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("beam_size, kwargs", [
    (4, dict(max_length=4)),                    # cut by the limit: HF's forced </s> vs CT2's length - 1
    (1, dict(min_length=25, max_length=40)),    # </s> held back
    (4, dict(min_length=10, max_length=12)),
])
def test_length_limits_parity(translators, sources, family, beam_size, kwargs):
    kwargs = dict(kwargs, early_stopping=True)  # the length rules, apart from CT2's stopping rule (above)
    ct2 = translators(family, "ct2", "float32").translate(sources, beam_size=beam_size, return_scores=True, **kwargs)
    ref = translators(family, "torch").translate(sources, beam_size=beam_size, return_scores=True, **kwargs)
    assert texts(ct2) == texts(ref)
    if "min_length" not in kwargs or translators(family, "torch").bundle.generation.renormalize_logits:
        # HF without renormalize_logits scores a step with </s> held back lower than CT2 (ct2_engine.py)
        assert [t.score for t in ct2] == pytest.approx([t.score for t in ref], abs=SCORE_TOLERANCE)


def test_min_length_beam_parity_when_hf_renormalizes(translators, sources):
    kwargs = dict(beam_size=4, min_length=25, max_length=40, early_stopping=True, return_scores=True)
    ct2 = translators("marian", "ct2", "float32").translate(sources, **kwargs)
    ref = translators("marian", "torch").translate(sources, **kwargs)
    assert texts(ct2) == texts(ref)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kwargs", [
    dict(beam_size=1), dict(beam_size=4), dict(beam_size=4, num_hypotheses=3),
    dict(beam_size=1, min_length=25, max_length=40), dict(beam_size=4, max_length=4),
], ids=["greedy", "beam4", "nbest3", "greedy-min-length", "beam4-max-length-4"])
def test_onnx_identical_to_torch(translators, sources, family, kwargs):
    onnx = translators(family, "onnx", "fp32").translate(sources, return_scores=True, **kwargs)
    ref = translators(family, "torch").translate(sources, return_scores=True, **kwargs)
    for a, b in zip(onnx, ref):
        assert [h.text for h in a.hypotheses] == [h.text for h in b.hypotheses]
        assert [h.score for h in a.hypotheses] == pytest.approx([h.score for h in b.hypotheses], abs=SCORE_TOLERANCE)


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_int8_agreement_with_torch(translators, sources, family):
    for beam_size in (1, 4):
        onnx = translators(family, "onnx", "int8").translate(sources, beam_size=beam_size)
        ref = translators(family, "torch").translate(sources, beam_size=beam_size)
        agreement = sum(a == b for a, b in zip(texts(onnx), texts(ref))) / len(sources)
        assert agreement >= INT8_MIN_AGREEMENT, f"{family} beam {beam_size}: {agreement:.3f}"


def test_defaults_come_from_the_manifest(translators, sources):
    translator = translators("marian", "ct2", "float32")
    generation = translator.bundle.manifest["generation"]  # the raw record: the defaults are read from it
    assert translator.default_beam_size == generation["num_beams"] == 4
    assert translator.default_max_length == generation["max_new_tokens"]
    assert translator.default_length_penalty == generation["length_penalty"]
    explicit = translator.translate(sources[:8], beam_size=4, max_length=generation["max_new_tokens"])
    assert texts(translator.translate(sources[:8])) == texts(explicit)
    assert translators("marian", "ct2").precision == "int8"
    assert translators("marian", "torch").precision == "fp32"


# -- inputs ------------------------------------------------------------------------------------------
def test_empty_and_blank_inputs_stay_empty_in_place(translators, sources):
    translator = translators("marian", "ct2", "float32")
    calls = []
    original = translator.engine.translate_ids

    def counting(batch, options):
        calls.append(len(batch))
        return original(batch, options)

    translator.engine.translate_ids = counting
    try:
        out = translator.translate(["", sources[0], "   ", "\t\n", sources[1], "\x00\x01"], return_scores=True)
        assert translator.translate([]) == []
        assert translator.translate(["", " "]) == [Translation(""), Translation("")]
    finally:
        del translator.engine.translate_ids
    assert [t.text == "" for t in out] == [True, False, True, True, False, True]
    assert out[0] == Translation("", None, [])
    assert sum(calls) == 2  # only the two real sentences reached the engine
    assert texts(out)[1] == translator.translate([sources[0]])[0].text


def test_awkward_characters_are_cleaned_not_fatal(translators, sources):
    translator = translators("m2m100", "ct2", "float32")
    clean = texts(translator.translate([sources[0], sources[1]]))
    dirty = [sources[0].replace(" ", " \x00\x07", 2), "\ufeff" + sources[1] + "\x1b"]
    assert texts(translator.translate(dirty)) == clean
    odd = ["lone \ud800 surrogate", "emoji 😀 and 日本語", "the file %s was not found", "tab\tand\nnewline"]
    out = translator.translate(odd)
    assert len(out) == 4 and all(isinstance(t.text, str) for t in out)
    assert out[2].text == "die Datei %s wurde nicht gefunden"  # placeholders survive tokenization


def test_non_string_inputs_are_user_errors(translators):
    translator = translators("marian", "ct2", "float32")
    with pytest.raises(UserError, match="list of strings"):
        translator.translate("a single string")
    with pytest.raises(UserError, match="input 1 is NoneType"):
        translator.translate(["fine", None])


def test_input_order_survives_length_sorted_batching(translators, sources):
    translator = translators("t5", "ct2", "float32")
    mixed = sorted(sources, key=len)[::2] + sorted(sources, key=len)[1::2]
    one_by_one = [translator.translate([s])[0].text for s in mixed]
    assert texts(translator.translate(mixed, batch_tokens=64)) == one_by_one
    assert texts(translator.translate(mixed, batch_tokens=1)) == one_by_one


def test_split_sentences_translates_each_and_keeps_layout(translators, sources):
    translator = translators("marian", "ct2", "float32")
    # the splitter wants a capital after ". " — the fixture names (Maria, Tom…) give one
    second = next(s for s in sources if s[0].isupper())
    first, third = sources[0], sources[2]
    paragraph = f"  {first}. {second}!\n\n{third}  "
    result = translator.translate([paragraph], split_sentences=True)[0].text
    parts = texts(translator.translate([f"{first}.", f"{second}!", third]))
    assert result == f"{parts[0]} {parts[1]}\n\n{parts[2]}"


def test_overlong_input_is_split_at_sentences(translators, sources):
    translator = translators("marian", "ct2", "float32")
    limit = translator.tokenizer.model_max_length
    sentence = next(s for s in sources if s[0].isupper()) + "."  # splittable: ". Maria …"
    per = len(translator.tokenizer.encode_body(sentence))
    count = limit // per + 3  # enough sentences to overflow the source limit
    text = " ".join([sentence] * count)
    assert len(translator.tokenizer.encode_body(text)) > limit
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputTruncatedWarning)  # splitting must not truncate
        out = translator.translate([text])[0].text
    single = translator.translate([sentence])[0].text
    assert out == " ".join([single] * count)  # sentence by sentence, spacing kept


def test_overlong_sentence_is_truncated_with_a_warning(translators):
    translator = translators("marian", "ct2", "float32")
    text = " ".join(["the red cat sees the dog"] * 60)  # one "sentence", far over 128 tokens
    with pytest.warns(InputTruncatedWarning, match="input 0: a sentence of .* longer than the model's limit"):
        out = translator.translate([text], max_length=20)
    assert out[0].text


# -- options -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(beam_size=0), "beam_size must be a positive integer"),
    (dict(beam_size=-2), "beam_size must be a positive integer"),
    (dict(beam_size=2.5), "beam_size must be a positive integer"),
    (dict(max_length=0), "max_length must be a positive integer"),
    (dict(min_length=-1), "min_length must be a non-negative integer"),
    (dict(min_length=30, max_length=10), "min_length .30. is larger than max_length .10."),
    (dict(beam_size=2, num_hypotheses=3), r"num_hypotheses \(3\) cannot exceed beam_size \(2\)"),
    (dict(num_hypotheses=0), "num_hypotheses must be a positive integer"),
    (dict(length_penalty=float("nan")), "length_penalty must be a finite number"),
    (dict(batch_tokens=0), "batch_tokens must be a positive integer"),
    (dict(early_stopping="sometimes"), "early_stopping must be"),
])
def test_bad_decoding_options_are_user_errors(translators, kwargs, message):
    with pytest.raises(UserError, match=message):
        translators("marian", "ct2", "float32").translate(["the cat"], **kwargs)


def test_translate_iter_checks_options_at_the_call(translators):
    with pytest.raises(UserError, match="beam_size must be a positive integer"):
        translators("marian", "ct2", "float32").translate_iter(iter(["the cat"]), beam_size=0)


def test_a_closed_translator_says_so(tiny_unvalidated_bundles):
    translator = Translator(tiny_unvalidated_bundles("t5"), engine="ct2", device="cpu", threads=1)
    with translator:
        assert translator.translate(["the cat"])[0].text
    translator.close()  # twice is fine
    with pytest.raises(UserError, match="closed"):
        translator.translate(["the cat"])


def test_max_length_must_leave_room_after_the_language_token(translators):
    with pytest.raises(UserError, match="more than the 1 forced target-language token"):
        translators("m2m100", "ct2", "float32").translate(["the cat"], max_length=1)


def test_construction_mistakes_are_user_errors(tiny_unvalidated_bundles, tmp_path):
    bundle = tiny_unvalidated_bundles("marian")
    with pytest.raises(BundleError, match="has no ct2 int16; it has onnx: fp32, int8, int8_latency, int4; ct2: float32, int8; torch: fp32"):
        Translator(bundle, engine="ct2", precision="int16", device="cpu")
    with pytest.raises(UserError, match="unknown engine 'marian'"):
        Translator(bundle, engine="marian")
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        Translator(bundle, engine="ct2", device="tpu")
    with pytest.raises(UserError, match="threads must be a positive integer"):
        Translator(bundle, engine="ct2", device="cpu", threads=0)
    with pytest.raises(BundleError, match="bundle not found"):
        Translator(tmp_path / "nothing-here")
    with pytest.raises(BundleError, match="is not an mtedge bundle"):
        Translator(tmp_path)


def test_cuda_without_a_gpu_is_a_user_error_and_auto_falls_back(tiny_unvalidated_bundles):
    from mtedge.engines import cuda_available, resolve_device

    if cuda_available("ct2"):
        pytest.skip("a CUDA GPU is present")
    bundle = tiny_unvalidated_bundles("marian")
    with pytest.raises(UserError, match="device 'cuda' was asked for, but ct2 sees no CUDA GPU"):
        Translator(bundle, engine="ct2", device="cuda")
    assert Translator(bundle, engine="ct2", device="auto", threads=1).device == "cpu"
    with pytest.raises(UserError, match="float16 runs only on a CUDA device"):
        resolve_device("ct2", "auto", "float16")  # CPU-exported bundles have no float16 to try


@pytest.mark.gpu("ct2")
def test_auto_picks_cuda_where_a_gpu_is(tiny_unvalidated_bundles):
    bundle = tiny_unvalidated_bundles("marian")
    gpu = Translator(bundle, engine="ct2", precision="float32", device="auto")
    cpu = Translator(bundle, engine="ct2", precision="float32", device="cpu", threads=1)
    assert gpu.device == "cuda"
    sources = ["the cat", "", "the dog sleeps"]
    # float32 on both: greedy outputs agree up to kernel rounding; every line keeps its place
    gpu_out, cpu_out = texts(gpu.translate(sources, beam_size=1)), texts(cpu.translate(sources, beam_size=1))
    assert gpu_out[1] == cpu_out[1] == "" and all(gpu_out[i] for i in (0, 2))


def test_broken_engine_file_is_named(tiny_unvalidated_bundles, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_unvalidated_bundles("marian"), copy)
    (copy / "ct2" / "int8" / "model.bin").write_bytes(b"truncated")
    with pytest.raises(BundleError, match="wrong size for .*model.bin"):
        Translator(copy, engine="ct2", precision="int8", device="cpu")


# -- concurrency and memory --------------------------------------------------------------------------
@pytest.mark.parametrize("engine, precision, extra", [("ct2", "int8", {"workers": 2}), ("torch", None, {})])
def test_concurrent_calls_match_serial(translators, sources, engine, precision, extra):
    translator = translators("marian", engine, precision, **extra)
    jobs = [sources[i::4] for i in range(4)]
    serial = [texts(translator.translate(job, beam_size=2)) for job in jobs]
    results: list = [None] * len(jobs)
    errors = []

    def work(i):
        try:
            for _ in range(3):
                out = texts(translator.translate(jobs[i], beam_size=2))
                assert out == serial[i]
            results[i] = out
        except BaseException as exc:  # surfaced below: a thread's assert does not fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert results == serial


def test_ten_thousand_sentences_stream_in_bounded_chunks(tiny_unvalidated_bundles, sources):
    translator = Translator(tiny_unvalidated_bundles("marian"), engine="ct2", precision="int8", device="cpu",
                            threads=1, chunk_size=500)
    pulled = [0]
    largest_call = []
    original = translator.engine.translate_ids

    def spy(batch, options):
        largest_call.append(len(batch))
        return original(batch, options)

    translator.engine.translate_ids = spy

    def stream():
        for i in range(10_000):
            pulled[0] += 1
            yield sources[i % len(sources)]

    reference = {s: t.text for s, t in zip(sources, translator.translate(sources, beam_size=1))}
    largest_call.clear()
    results = translator.translate_iter(stream(), beam_size=1)
    first = next(results)
    assert pulled[0] <= 500, "the first result must come before more than one chunk is read"
    count, wrong = 1, 0
    wrong += first.text != reference[sources[0]]
    for i, result in enumerate(results, start=1):
        count += 1
        wrong += result.text != reference[sources[i % len(sources)]]
    assert count == 10_000 and wrong == 0
    assert max(largest_call) <= 500


@pytest.mark.parametrize("engine,precision", [("onnx", "fp32"), ("onnx", "int8"), ("ct2", "int8")])
@pytest.mark.parametrize("beam_size", [1, 4])
def test_translating_leaves_no_reference_cycles(translators, sources, engine, precision, beam_size):
    """What a call allocates (a batch's caches are the big part) must go by reference counting when the call
    returns: garbage in a cycle waits for Python's cyclic GC, which counts objects, not bytes, so a long-running
    process grew by a batch's caches per batch (the ONNX in-place cache once held its state's bound method)."""
    import gc

    translator = translators("marian", engine, precision)
    translator.translate(sources[:8], beam_size=beam_size)   # load-time objects are not the call's
    gc.collect()
    gc.disable()
    try:
        translator.translate(sources[:8], beam_size=beam_size)
        assert gc.collect() == 0
    finally:
        gc.enable()


# -- the runtime path stays light --------------------------------------------------------------------
def run_python(code: str) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, cwd=ROOT, timeout=120)


def test_import_mtedge_is_light():
    run_python("""
        import sys
        import mtedge
        assert mtedge.__version__
        loaded = [m for m in ("onnxruntime", "ctranslate2", "torch", "transformers") if m in sys.modules]
        assert not loaded, loaded
    """)


def test_ct2_translator_never_imports_torch_or_transformers(tiny_unvalidated_bundles, sources):
    bundle = tiny_unvalidated_bundles("m2m100")
    run_python(f"""
        import sys
        import mtedge
        translator = mtedge.Translator({str(bundle)!r}, engine="ct2")
        assert "ctranslate2" in sys.modules
        out = translator.translate([{sources[0]!r}, ""], beam_size=2, return_scores=True)
        assert out[0].text and out[1].text == ""
        heavy = [m for m in ("torch", "transformers") if m in sys.modules]
        assert not heavy, heavy
    """)
