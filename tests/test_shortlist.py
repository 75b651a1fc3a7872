"""The vocabulary shortlist (mtedge/convert/shortlist.py): what the builder keeps, the file CTranslate2 reads,
and that the ct2 engine really restricts its output to it — on the tiny trained fixtures and their data."""

from __future__ import annotations

import json
import shutil

import pytest

from mtedge.bundle import SHORTLIST_FILE, Bundle
from mtedge.convert.shortlist import VocabularyMap, add_shortlist, build_vocabulary_map, coverage
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
    assert (record["per_token"], record["always"], record["pairs"], record["engines"]) == (7, 20, 200, ["ct2"])
    assert record["data"] == [str(data), str(more)] and [len(h) for h in record["data_sha256"]] == [64, 64]
    assert record["check"]["data"] == str(dev) and record["check"]["pairs"] == 40
    assert 0.5 < record["check"]["token_coverage"] <= 1.0
    opened = Bundle.open(bundle)
    for precision in manifest["engines"]["ct2"]:
        assert opened.has_shortlist("ct2", precision)
        assert manifest["engines"]["ct2"][precision]["files"][SHORTLIST_FILE]["sha256"]
    assert not opened.verify(deep=True)
    code, out, err = run_cli(capsys, "info", bundle)
    assert code == 0 and "shortlist     vmap.txt in ct2: 7 target tokens per source token" in out
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
    code, _, err = run_cli(capsys, "translate", bundle, "--shortlist", "--engine", "onnx", "-i", "/dev/null")
    assert_user_error(code, err, "runs on the ct2 engine only")
    code, _, err = run_cli(capsys, "shortlist", bundle, "--data", tmp_path / "missing.tsv")
    assert code == 2 and "missing.tsv" in err and "Traceback" not in err
    with pytest.raises(DataError):
        add_shortlist(bundle, write_tsv(tmp_path / "empty.tsv", []), log=lambda message: None)
    with pytest.raises(UserError, match="per_token"):
        build_vocabulary_map([("a", "b")], BundleTokenizer(Bundle.open(bundle).tokenizer_dir()), per_token=0)


def test_a_bundle_without_ct2_is_refused(tiny_marian_bundle, tmp_path):
    bundle = _copy(tiny_marian_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    del manifest["engines"]["ct2"]
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(UserError, match="no CTranslate2 model"):
        add_shortlist(bundle, write_tsv(tmp_path / "train.tsv", train_pairs()[:20]), log=lambda message: None)


def test_the_server_does_not_merge_requests_under_a_shortlist(tiny_marian_bundle):
    bundle = Bundle.open(tiny_marian_bundle)
    assert batch_invariant(bundle, "ct2", "int8")
    assert not batch_invariant(bundle, "ct2", "int8", shortlist=True)


def test_a_server_under_a_shortlist_answers_each_request_on_its_own(tiny_marian_bundle, tiny_dev_pairs, tmp_path):
    """A real `mtedge serve --shortlist` on 127.0.0.1: concurrent clients get what the shortlisted Translator
    gives each text alone, and the server reports that it does not merge requests."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.server_helpers import ServerProcess

    bundle = _copy(tiny_marian_bundle, tmp_path)
    add_shortlist(bundle, write_tsv(tmp_path / "train.tsv", train_pairs()[:300]), per_token=5, always=20,
                  log=lambda message: None)
    texts = [s for s, _ in tiny_dev_pairs[:12]]
    with Translator(bundle, engine="ct2", precision="int8", threads=1, shortlist=True) as serial:
        expected = [serial.translate([t], split_sentences=True)[0].text for t in texts]
    with ServerProcess(bundle, "--shortlist", "--batch-wait-ms", 50, log_path=tmp_path / "server.log") as server:
        def ask(text):
            response = httpx.post(server.url + "/translate", json={"q": text, "source": "en", "target": "de"},
                                  timeout=60)
            return response.status_code, response.json()

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(ask, texts))
        metrics = server.metrics()
    assert [status for status, _ in answers] == [200] * len(texts)
    assert [body["translatedText"] for _, body in answers] == expected
    assert metrics["merge_across_requests"] is False and metrics["merged_batches"] == 0

