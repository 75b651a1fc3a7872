"""The vocabulary shortlist (mtedge/convert/shortlist.py, mtedge/engines/shortlist.py): what the builder keeps,
the file CTranslate2 reads, and that the ct2 and onnx engines really restrict their output to it — on the tiny
trained fixtures and their data."""

from __future__ import annotations

import json
import shutil

import pytest

from mtedge.bundle import SHORTLIST_FILE, Bundle
from mtedge.engines.shortlist import VocabularyMap
from mtedge.convert.shortlist import add_shortlist, build_vocabulary_map, coverage
from mtedge.errors import DataError, UserError
from mtedge.server.config import batch_invariant
from mtedge.tokenizer import BundleTokenizer
from mtedge.translator import Translator
from tests.cli_helpers import assert_user_error, run_cli, write_tsv
from tests.factories import FAMILIES, train_pairs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _copy(bundle, tmp_path, name="bundle"):
    return shutil.copytree(bundle, tmp_path / name)


@pytest.fixture(scope="module")
def marian_tokenizer(tiny_marian_bundle):
    return BundleTokenizer(Bundle.open(tiny_marian_bundle).tokenizer_dir())


def test_each_source_token_keeps_the_target_tokens_of_its_translations(marian_tokenizer):
    tok = marian_tokenizer
    # "house" is always translated with "Haus", "tree" with "Baum"; "the"/"die" are everywhere
    pairs = [("the house", "das Haus")] * 5 + [("the tree", "der Baum")] * 3 + [("the tree house", "das Baumhaus")]
    vmap = build_vocabulary_map(pairs, tok, per_token=50, always=1, min_count=2)
    (house,) = [p for p in tok.tokenize("house")]
    haus = tok.target_pieces("Haus")
    assert all(piece in vmap.candidates[house] for piece in haus)
    baum = tok.target_pieces("Baum")
    assert not set(baum) & set(vmap.candidates[house]) - set(tok.target_pieces("Baumhaus"))
    # the always-kept token is the most frequent target piece, and no source token repeats it
    assert len(vmap.always) == 1
    assert all(vmap.always[0] not in targets for targets in vmap.candidates.values())
    # seen together once only: below min_count
    vmap_strict = build_vocabulary_map(pairs, tok, per_token=50, always=0, min_count=4)
    assert not set(tok.target_pieces("Baum")) & set(vmap_strict.candidates.get(house, []))


def test_per_token_caps_each_list_best_first(marian_tokenizer):
    pairs = train_pairs()[:400]
    wide = build_vocabulary_map(pairs, marian_tokenizer, per_token=30, always=5)
    narrow = build_vocabulary_map(pairs, marian_tokenizer, per_token=3, always=5)
    assert max(len(t) for t in narrow.candidates.values()) == 3
    for source, targets in narrow.candidates.items():
        assert targets == wide.candidates[source][:3], source
    assert narrow.settings["pairs"] == 400


def test_coverage_counts_the_reference_tokens_a_sentence_keeps(marian_tokenizer):
    tok = marian_tokenizer
    source, target = "the house", "das Haus"
    wanted = tok.target_pieces(target)
    everything = VocabularyMap(always=list(tok.vocab), candidates={})
    assert coverage(everything, [(source, target)], tok) == {"pairs": 1, "token_coverage": 1.0,
                                                              "sentences_covered": 1.0}
    # keep all but the last reference piece, through the source tokens' lists: 1 of len(wanted) missing
    lists = {piece: wanted[:-1] for piece in tok.source_tokens(source)}
    partial = coverage(VocabularyMap(always=[], candidates=lists), [(source, target), (source, target)], tok)
    assert partial == {"pairs": 2, "token_coverage": round((len(wanted) - 1) / len(wanted), 4),
                       "sentences_covered": 0.0}
    with pytest.raises(DataError):
        coverage(everything, [], tok)


def test_the_file_is_ctranslate2s_vmap_format(marian_tokenizer, tmp_path):
    vmap = build_vocabulary_map(train_pairs()[:200], marian_tokenizer, per_token=5, always=10)
    path = tmp_path / SHORTLIST_FILE
    vmap.write(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("\t") and lines[0].split("\t")[1].split(" ") == vmap.always
    for line in lines[1:]:
        source, targets = line.split("\t")
        assert source and " " not in source
        assert targets.split(" ") == vmap.candidates[source]
    assert VocabularyMap.read(path).candidates == vmap.candidates


@pytest.mark.parametrize("family", FAMILIES)
def test_a_shortlist_of_every_token_changes_nothing(family, tiny_unvalidated_bundles, tiny_dev_pairs, tmp_path):
    """CTranslate2 reads our file: keeping every target token gives the full vocabulary's translations."""
    bundle = _copy(tiny_unvalidated_bundles(family), tmp_path)
    tokens = len(BundleTokenizer(Bundle.open(bundle).tokenizer_dir()).pieces)
    data = write_tsv(tmp_path / "train.tsv", train_pairs()[:300])
    add_shortlist(bundle, data, always=tokens, log=lambda message: None)
    sources = [s for s, _ in tiny_dev_pairs[:16]]
    with Translator(bundle, engine="ct2", precision="int8", threads=1) as full, \
            Translator(bundle, engine="ct2", precision="int8", threads=1, shortlist=True) as short:
        for beam in (1, 3):
            assert [t.text for t in short.translate(sources, beam_size=beam)] == \
                   [t.text for t in full.translate(sources, beam_size=beam)]


def test_the_ct2_engine_generates_only_shortlisted_tokens(tiny_unvalidated_bundles, tiny_dev_pairs, tmp_path):
    bundle = _copy(tiny_unvalidated_bundles("marian"), tmp_path)
    data = write_tsv(tmp_path / "train.tsv", train_pairs()[:300])
    add_shortlist(bundle, data, per_token=1, always=0, min_count=1, log=lambda message: None)
    candidates = VocabularyMap.read(bundle / "ct2" / "int8" / SHORTLIST_FILE).candidates
    source = tiny_dev_pairs[0][0]
    with Translator(bundle, engine="ct2", precision="int8", threads=1, shortlist=True) as short:
        tok = short.tokenizer
        allowed = {piece for s in tok.source_tokens(source) for piece in candidates.get(s, [])}
        allowed |= {tok.pieces[tok.eos_id], tok.pieces[tok.unk_id], tok.pieces[tok.pad_id]}
        hypothesis = short.engine.translate_ids([tok.encode(source)], short.decode_options(1, 32))[0][0]
        generated = set(tok.ids_to_pieces(hypothesis.ids))
        assert generated and generated <= allowed, generated - allowed
        full = Translator(bundle, engine="ct2", precision="int8", threads=1)
        unrestricted = full.engine.translate_ids([tok.encode(source)], full.decode_options(1, 32))[0][0]
        full.close()
        assert set(tok.ids_to_pieces(unrestricted.ids)) - allowed, "the test sentence needs tokens outside the list"


def test_the_manifest_lists_the_file_and_records_how_it_was_built(tiny_marian_bundle, tmp_path, capsys):
    bundle = _copy(tiny_marian_bundle, tmp_path)
    data = write_tsv(tmp_path / "train.tsv", train_pairs()[:150])
    more = write_tsv(tmp_path / "more.tsv", train_pairs()[150:200])
    dev = write_tsv(tmp_path / "dev.tsv", train_pairs()[200:240])
    code, out, err = run_cli(capsys, "shortlist", bundle, "--data", data, "--data", more, "--per-token", "7",
                             "--always", "20", "--check", dev)
    assert code == 0, err
    assert f"{dev}: " in err and "of the reference tokens are in their sentence's list" in err
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    record = manifest["shortlist"]
    assert (record["per_token"], record["always"], record["pairs"], record["engines"]) == (7, 20, 200, ["ct2", "onnx"])
    assert record["data"] == [str(data), str(more)] and [len(h) for h in record["data_sha256"]] == [64, 64]
    assert record["check"]["data"] == str(dev) and record["check"]["pairs"] == 40
    assert 0.5 < record["check"]["token_coverage"] <= 1.0
    opened = Bundle.open(bundle)
    for engine in ("ct2", "onnx"):
        for precision in manifest["engines"][engine]:
            assert opened.has_shortlist(engine, precision)
            assert manifest["engines"][engine][precision]["files"][SHORTLIST_FILE]["sha256"]
    assert not opened.verify(deep=True)
    code, out, err = run_cli(capsys, "info", bundle)
    assert code == 0 and "shortlist     vmap.txt in ct2, onnx: 7 target tokens per source token" in out
    # a damaged list is named like any other bundle file
    with open(bundle / "ct2" / "int8" / SHORTLIST_FILE, "a", encoding="utf-8") as handle:
        handle.write("x\ty\n")
    with pytest.raises(Exception, match="vmap.txt"):
        Translator(bundle, engine="ct2", precision="int8", shortlist=True)


def test_translate_cli_with_a_shortlist(tiny_marian_bundle, tiny_dev_pairs, tmp_path, capsys):
    bundle = _copy(tiny_marian_bundle, tmp_path)
    tokens = len(BundleTokenizer(Bundle.open(bundle).tokenizer_dir()).pieces)
    add_shortlist(bundle, write_tsv(tmp_path / "train.tsv", train_pairs()[:200]), always=tokens,
                  log=lambda message: None)
    source = tmp_path / "in.en"
    source.write_text(f"{tiny_dev_pairs[0][0]}\n\n{tiny_dev_pairs[1][0]}\n", encoding="utf-8")
    code, short, err = run_cli(capsys, "translate", bundle, "-i", source, "--shortlist", "--no-progress")
    assert code == 0, err
    code, full, err = run_cli(capsys, "translate", bundle, "-i", source, "--no-progress")
    assert short == full and short.split("\n")[1] == ""


def test_what_has_no_shortlist_says_so(tiny_marian_bundle, tmp_path, capsys):
    code, _, err = run_cli(capsys, "translate", tiny_marian_bundle, "--shortlist", "-i", "/dev/null")
    assert_user_error(code, err, "has no vocabulary shortlist", "mtedge shortlist")
    bundle = _copy(tiny_marian_bundle, tmp_path)
    add_shortlist(bundle, write_tsv(tmp_path / "train.tsv", train_pairs()[:50]), log=lambda message: None)
    code, _, err = run_cli(capsys, "translate", bundle, "--shortlist", "--engine", "torch", "-i", "/dev/null")
    assert_user_error(code, err, "runs on the ct2 and onnx engines")
    code, _, err = run_cli(capsys, "shortlist", bundle, "--data", tmp_path / "missing.tsv")
    assert code == 2 and "missing.tsv" in err and "Traceback" not in err
    with pytest.raises(DataError):
        add_shortlist(bundle, write_tsv(tmp_path / "empty.tsv", []), log=lambda message: None)
    with pytest.raises(UserError, match="per_token"):
        build_vocabulary_map([("a", "b")], BundleTokenizer(Bundle.open(bundle).tokenizer_dir()), per_token=0)


def test_a_bundle_without_an_engine_that_reads_a_shortlist_is_refused(tiny_marian_bundle, tmp_path):
    bundle = _copy(tiny_marian_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    del manifest["engines"]["ct2"]
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    data = write_tsv(tmp_path / "train.tsv", train_pairs()[:20])
    assert add_shortlist(bundle, data, log=lambda message: None)["engines"] == ["onnx"]   # the lean decoder reads it
    for record in manifest["engines"]["onnx"].values():   # graphs exported before the shortlist's output layer
        record["options"].pop("shortlist_head")
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(UserError, match="no engine that reads a shortlist"):
        add_shortlist(bundle, data, log=lambda message: None)


def test_the_server_does_not_merge_requests_under_a_ct2_shortlist(tiny_marian_bundle):
    bundle = Bundle.open(tiny_marian_bundle)
    assert batch_invariant(bundle, "ct2", "int8")
    assert not batch_invariant(bundle, "ct2", "int8", shortlist=True)
    # the ONNX engine masks each row to its own sentence's candidates: the precision decides, as without a list
    assert batch_invariant(bundle, "onnx", "int8", shortlist=True) == batch_invariant(bundle, "onnx", "int8")


@pytest.mark.parametrize("engine", ("ct2", "onnx"))
def test_a_server_under_a_shortlist_answers_each_request_on_its_own(engine, tiny_marian_bundle, tiny_dev_pairs,
                                                                    tmp_path):
    """A real `mtedge serve --shortlist` on 127.0.0.1: concurrent clients get what the shortlisted Translator
    gives each text alone. On ct2 the server does not merge requests (its outputs depend on the batch); on onnx
    it does (each row keeps its own sentence's candidates), and the answers are still each text's own."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.server_helpers import ServerProcess

    bundle = _copy(tiny_marian_bundle, tmp_path)
    add_shortlist(bundle, write_tsv(tmp_path / "train.tsv", train_pairs()[:300]), per_token=5, always=20,
                  log=lambda message: None)
    texts = [s for s, _ in tiny_dev_pairs[:12]]
    with Translator(bundle, engine=engine, precision="int8", threads=1, shortlist=True) as serial:
        expected = [serial.translate([t], split_sentences=True)[0].text for t in texts]
    with ServerProcess(bundle, "--shortlist", "--engine", engine, "--batch-wait-ms", 50,
                       log_path=tmp_path / "server.log") as server:
        def ask(text):
            response = httpx.post(server.url + "/translate", json={"q": text, "source": "en", "target": "de"},
                                  timeout=60)
            return response.status_code, response.json()

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(ask, texts))
        metrics = server.metrics()
    assert [status for status, _ in answers] == [200] * len(texts)
    assert [body["translatedText"] for _, body in answers] == expected
    assert metrics["merge_across_requests"] is (engine == "onnx")
    if engine == "ct2":
        assert metrics["merged_batches"] == 0


# -- the ONNX engine (mtedge/engines/shortlist.py) ------------------------------------------------------------
LEAN_FAMILIES = ("marian", "m2m100", "mbart")   # their lean ONNX decoder carries the shortlist's output layer
ONNX_PRECISIONS = ("fp32", "int8", "int8_latency", "int4")


def _onnx_engine(bundle, precision, table=None):
    from mtedge.engines.onnx_engine import OnnxEngine

    opened = Bundle.open(bundle)
    tok = BundleTokenizer(opened.tokenizer_dir())
    return OnnxEngine(opened.engine_dir("onnx", precision), tok.target_spec(), opened.model_shape, threads=1,
                      shortlist=table), tok


@pytest.mark.parametrize("precision", ("fp32", "int8"))
@pytest.mark.parametrize("family", LEAN_FAMILIES)
def test_the_onnx_layer_over_every_id_gives_the_full_layers_ids_and_scores(family, precision,
                                                                          tiny_unvalidated_bundles, tiny_dev_pairs):
    """The first step's gathered rows of the output layer, read back by every later step, give the whole
    layer's logits: the same hypotheses and scores, greedy and beam (every id kept: no mask, no renormalising
    over fewer ids). int8 too: its rows stay int8 and run the full layer's int8 GEMM on them."""
    from mtedge.engines.shortlist import CandidateTable
    from mtedge.types import DecodeOptions

    bundle = tiny_unvalidated_bundles(family)
    full, tok = _onnx_engine(bundle, precision)
    every_id = CandidateTable(VocabularyMap(always=list(tok.vocab), candidates={}), tok.vocab)
    short, _ = _onnx_engine(bundle, precision, every_id)
    batch = [tok.encode(s) for s, _ in tiny_dev_pairs[:12]]
    for beam in (1, 3):
        options = DecodeOptions(beam_size=beam, max_length=24, num_hypotheses=beam, return_scores=True)
        expected, got = full.translate_ids(batch, options), short.translate_ids(batch, options)
        assert [[h.ids for h in row] for row in got] == [[h.ids for h in row] for row in expected]
        for row_got, row_expected in zip(got, expected):
            for a, b in zip(row_got, row_expected):
                assert a.score == pytest.approx(b.score, abs=1e-4)


@pytest.mark.parametrize("bits, kernel, rows", [(8, "gemm", "tensor(int8)"), (7, "gemm", "tensor(float)"),
                                               (8, "gemv", "tensor(float)")])
def test_the_8_bit_gemm_graph_keeps_the_candidates_rows_int8(bits, kernel, rows, tiny_unvalidated_bundles,
                                                             tmp_path):
    """Only where the rows are the tied lm_head's own int8 columns and the GEMM takes int8 weights (8 bits, the
    int8 precision on a VNNI/AMX CPU) do they stay int8: then no float MatMul is left in the decoder. With 7-bit
    weights (a CPU that saturates 8-bit pairs) or MatMulNBits (int8_latency) they are dequantized."""
    import onnx
    import onnxruntime as ort

    from mtedge.convert.rowwise_int8 import quantize_rowwise
    from mtedge.engines.shortlist import HEAD_INPUT, HEAD_OUTPUT

    decoder = tiny_unvalidated_bundles("marian") / "onnx" / "fp32" / "decoder_model_merged.onnx"
    out = tmp_path / "decoder.onnx"
    counts = quantize_rowwise(decoder, out, weight_bits=bits, kernel=kernel)
    assert counts["shortlist_matmul"] == (2 if rows == "tensor(int8)" else 0)   # the first step's and the later's
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs = [*session.get_inputs(), *session.get_overridable_initializers()]   # an input with a default: the latter
    assert {i.name: i.type for i in inputs}[HEAD_INPUT] == rows
    assert {o.name: o.type for o in session.get_outputs()}[HEAD_OUTPUT] == rows

    def float_matmuls(graph) -> int:
        return sum((node.op_type == "MatMul")
                   + sum(float_matmuls(a.g) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH)
                   for node in graph.node)

    assert (float_matmuls(onnx.load(str(out)).graph) == 0) == (rows == "tensor(int8)")


@pytest.mark.parametrize("precision", ONNX_PRECISIONS)
def test_the_onnx_engine_generates_only_shortlisted_tokens(precision, tiny_unvalidated_bundles, tiny_dev_pairs,
                                                           tmp_path):
    bundle = _copy(tiny_unvalidated_bundles("marian"), tmp_path)
    add_shortlist(bundle, write_tsv(tmp_path / "train.tsv", train_pairs()[:300]), per_token=1, always=0,
                  min_count=1, log=lambda message: None)
    candidates = VocabularyMap.read(bundle / "onnx" / precision / SHORTLIST_FILE).candidates
    source = tiny_dev_pairs[0][0]
    with Translator(bundle, engine="onnx", precision=precision, threads=1, shortlist=True) as short, \
            Translator(bundle, engine="onnx", precision=precision, threads=1) as full:
        tok = short.tokenizer
        allowed = {piece for s in tok.source_tokens(source) for piece in candidates.get(s, [])}
        allowed |= {tok.pieces[tok.eos_id], tok.pieces[tok.unk_id]}
        for beam in (1, 3):
            hypothesis = short.engine.translate_ids([tok.encode(source)], short.decode_options(beam, 32))[0][0]
            generated = set(tok.ids_to_pieces(hypothesis.ids))
            assert generated and generated <= allowed, generated - allowed
        unrestricted = full.engine.translate_ids([tok.encode(source)], full.decode_options(1, 32))[0][0]
        assert set(tok.ids_to_pieces(unrestricted.ids)) - allowed, "the test sentence needs tokens outside the list"


@pytest.mark.parametrize("precision", ("fp32", "int8"))
def test_an_onnx_shortlist_translates_a_sentence_the_same_alone_and_in_any_batch(precision, tiny_unvalidated_bundles,
                                                                                tiny_dev_pairs, tmp_path):
    """Each row is limited to its own sentence's candidates (a -inf mask over the batch's), so the batch a
    sentence comes in changes nothing, unlike CTranslate2's union."""
    from mtedge.engines.shortlist import BatchShortlist, CandidateTable

    bundle = _copy(tiny_unvalidated_bundles("marian"), tmp_path)
    # narrow lists: a sentence alone keeps far fewer ids than a batch's union (with the union, outputs change)
    add_shortlist(bundle, write_tsv(tmp_path / "train.tsv", train_pairs()[:300]), per_token=2, always=0,
                  log=lambda message: None)
    sources = [s for s, _ in tiny_dev_pairs[:12]]
    with Translator(bundle, engine="onnx", precision=precision, threads=1, shortlist=True) as short:
        tok = short.tokenizer
        table = CandidateTable.load(bundle / "onnx" / precision / SHORTLIST_FILE, tok.vocab)
        batch = BatchShortlist(table, [tok.encode(s) for s in sources], 6)
        assert batch.source_mask is not None and (batch.source_mask < 0).any()   # the sentences' lists differ
        for beam in (1, 3):
            together = [t.text for t in short.translate(sources, beam_size=beam)]
            alone = [short.translate([s], beam_size=beam)[0].text for s in sources]
            reversed_batch = [t.text for t in short.translate(sources[::-1], beam_size=beam)][::-1]
            assert together == alone == reversed_batch


def test_onnx_graphs_without_the_shortlists_layer_say_so(tiny_unvalidated_bundles, tmp_path, capsys):
    """T5 keeps optimum's traced decoder, which has no shortlist layer: the bundle's list skips its ONNX
    directories, and asking for it there names the engines that read it."""
    from mtedge.engines.shortlist import CandidateTable

    bundle = _copy(tiny_unvalidated_bundles("t5"), tmp_path)
    record = add_shortlist(bundle, write_tsv(tmp_path / "train.tsv", train_pairs()[:100]), log=lambda message: None)
    assert record["engines"] == ["ct2"]
    code, _, err = run_cli(capsys, "translate", bundle, "--shortlist", "--engine", "onnx", "-i", "/dev/null")
    assert_user_error(code, err, "has a vocabulary shortlist, but not for onnx int8")
    _, tok = _onnx_engine(bundle, "fp32")
    table = CandidateTable(VocabularyMap(always=list(tok.vocab), candidates={}), tok.vocab)
    with pytest.raises(UserError, match="has no output layer for a vocabulary shortlist"):
        _onnx_engine(bundle, "fp32", table)
