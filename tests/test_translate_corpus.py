"""``mtedge translate-corpus`` on a real local Ray instance (started once for the module, 2 CPUs).

What is checked: the output is row for row what a plain ``Translator`` gives (blank rows blank, order
kept across shards that come back in any order); a run killed after some shards resumes and redoes
only the shards that are missing or fail verification; malformed rows are named by row number, or
written empty and counted with ``--on-error skip``; a broken bundle, malformed rows and a foreign
shard directory are refused on the driver before Ray is touched (those tests block ``import ray`` to
prove it); without ray the error names the extra. The inputs are a few hundred rows at most.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mtedge import Translator
from mtedge.corpus.source import InputChanged, InputSpec, read_shard, scan
from mtedge.corpus.store import ShardStore
from tests.cli_helpers import assert_user_error, run_cli
from tests.factories import templated_pairs

pytestmark = [pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]  # Ray's own settings
ROOT = Path(__file__).resolve().parents[1]
FAST = ["--no-progress", "--threads-per-actor", "1"]


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    # "local": a fresh instance, even where `ray start` left a cluster running on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def marian(tiny_unvalidated_bundles) -> Path:
    return tiny_unvalidated_bundles("marian")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """300 sentences with a blank (or blank-looking) row every 17 rows: 318 rows."""
    lines = []
    for n, (source, _) in enumerate(templated_pairs(300, seed=11)):
        lines.append(source)
        if n % 17 == 0:
            lines.append(["", "   ", "\t"][n % 3])
    return lines


@pytest.fixture(scope="module")
def translate(marian):
    """A plain Translator run (the CLI's defaults: ct2 int8): row -> translation, memoized."""
    translator = Translator(marian, engine="ct2", device="cpu", threads=1)
    cache: dict[str, str] = {}

    def get(rows: list[str]) -> list[str]:
        todo = [row for row in dict.fromkeys(rows) if row not in cache]
        cache.update(zip(todo, (t.text for t in translator.translate(todo))))
        return [cache[row] for row in rows]

    yield get
    translator.close()


@pytest.fixture
def no_ray(monkeypatch):
    """``import ray`` fails, as on the base install: whatever runs now cannot have reached Ray."""
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def output_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text[:-1].split("\n")


def identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_ino, status.st_mtime_ns


# -- the input side, without Ray -------------------------------------------------------------------
def test_shards_cover_every_row_once_and_read_back_as_scanned(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\n\ntwo\n\xff bad\nthree\nfour")  # BOM, CRLF, blank, bad byte, no final \n
    spec = InputSpec.make(path, None, None)
    scanned = scan(spec, 2)
    assert scanned.rows == 6 and scanned.blank == 1
    assert [(s.first_row, s.rows) for s in scanned.shards] == [(1, 2), (3, 2), (5, 2)]
    assert scanned.malformed == [(4, "not valid UTF-8 (byte 0xff at column 1)")]
    texts = [text for shard in scanned.shards for text in read_shard(spec, shard)[0]]
    assert texts == ["one", "", "two", "", "three", "four"]
    path.write_bytes(path.read_bytes().replace(b"three", b"THREE"))
    with pytest.raises(InputChanged, match="rows 5-6 are not what was scanned"):
        read_shard(spec, scanned.shards[2])
    assert read_shard(spec, scanned.shards[0])[0] == ["one", ""]  # the other shards are still good


def test_jsonl_and_tsv_rows_name_what_is_wrong(tmp_path):
    jsonl = write_lines(tmp_path / "in.jsonl", [
        '{"text": "the cat"}', "", '{"text": "the dog"', '{"src": "x"}', '{"text": 3}', "[1]", '{"text": null}'])
    scanned = scan(InputSpec.make(jsonl, None, None), 100)
    assert scanned.rows == 7 and scanned.blank == 1
    assert scanned.malformed == [
        (3, "invalid JSON (Expecting ',' delimiter at column 19)"), (4, "no key 'text' (keys: 'src')"),
        (5, "'text' is a number, not a string"), (6, "not a JSON object but an array"),
        (7, "'text' is null, not a string")]
    tsv = write_lines(tmp_path / "in.tsv", ["1\tthe cat", "2", "", "3\t"])
    scanned = scan(InputSpec.make(tsv, None, "2"), 100)
    assert scanned.malformed == [(2, "no column 2 (the row has 1 tab-separated column(s))")]
    assert scanned.blank == 2  # the blank line and the empty cell


# -- refused on the driver, before Ray -------------------------------------------------------------
def test_without_ray_the_error_names_the_extra(marian, tmp_path, capsys, no_ray):
    source = write_lines(tmp_path / "in.txt", ["the cat sees the dog"])
    code, out, err = run_cli(capsys, "translate-corpus", marian, "-i", source, "-o", tmp_path / "out.txt", *FAST)
    assert_user_error(code, err, "pip install 'mtedge[distributed]'")


def test_a_broken_bundle_fails_on_the_driver_before_ray(marian, tmp_path, capsys, no_ray):
    bundle = tmp_path / "bundle"
    shutil.copytree(marian, bundle)
    model = bundle / "ct2" / "int8" / "model.bin"
    model.write_bytes(bytes((i * 7 + 3) % 256 for i in range(model.stat().st_size)))  # same size, wrong bytes
    source = write_lines(tmp_path / "in.txt", ["the cat sees the dog"])
    code, out, err = run_cli(capsys, "translate-corpus", bundle, "-i", source, "-o", tmp_path / "out.txt", *FAST)
    assert_user_error(code, err, f"{model} is corrupt")
    assert not (tmp_path / "out.txt.shards").exists() and not (tmp_path / "out.txt").exists()


def test_a_shortlist_the_bundle_lacks_fails_before_ray(marian, tmp_path, capsys, no_ray):
    source = write_lines(tmp_path / "in.txt", ["the cat sees the dog"])
    code, _, err = run_cli(capsys, "translate-corpus", marian, "-i", source, "-o", tmp_path / "out.txt", "--shortlist",
                           *FAST)
    assert_user_error(code, err, "has no vocabulary shortlist")


def test_malformed_rows_fail_before_ray_with_their_row_numbers(marian, tmp_path, capsys, no_ray):
    source = write_lines(tmp_path / "in.jsonl", ['{"text": "the cat"}', "{oops", '{"text": "a"}', '{"id": 4}',
                                                 '{"text": ["x"]}'])
    code, out, err = run_cli(capsys, "translate-corpus", marian, "-i", source, "-o", tmp_path / "out.txt", *FAST)
    assert_user_error(code, err, f"{source} row 2: invalid JSON", "2 more malformed row(s): 4, 5", "--on-error skip")
    assert not (tmp_path / "out.txt.shards").exists()


def test_a_tsv_row_without_the_column_is_named(marian, tmp_path, capsys, no_ray):
    source = write_lines(tmp_path / "in.tsv", ["1\tthe cat", "2\tthe dog", "3 the bird"])
    code, out, err = run_cli(capsys, "translate-corpus", marian, "-i", source, "-o", tmp_path / "out.txt",
                             "--field", "2", *FAST)
    assert_user_error(code, err, "row 3: no column 2 (the row has 1 tab-separated column(s))")


def test_shards_of_another_setup_are_refused(marian, tmp_path, capsys, no_ray):
    source = write_lines(tmp_path / "in.txt", ["the cat sees the dog"])
    (tmp_path / "out.txt.shards").mkdir()
    (tmp_path / "out.txt.shards" / "manifest.json").write_text(json.dumps(
        {"format": "mtedge-corpus-shards", "format_version": 1, "settings": {"engine": "onnx"}, "shards": {}}))
    code, out, err = run_cli(capsys, "translate-corpus", marian, "-i", source, "-o", tmp_path / "out.txt", *FAST)
    assert_user_error(code, err, "holds shards of another setup", "--restart")


def test_an_empty_input_gives_an_empty_output_without_ray(marian, tmp_path, capsys, no_ray):
    source = tmp_path / "in.txt"
    source.write_bytes(b"")
    output = tmp_path / "out.txt"
    code, out, err = run_cli(capsys, "translate-corpus", marian, "-i", source, "-o", output, *FAST)
    assert code == 0, err
    assert output.read_bytes() == b"" and "0 rows" in out and not (tmp_path / "out.txt.shards").exists()


def test_an_address_nothing_answers_at_fails_in_seconds(marian, tmp_path, capsys):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = write_lines(tmp_path / "in.txt", ["the cat sees the dog"])
    code, out, err = run_cli(capsys, "translate-corpus", marian, "-i", source, "-o", tmp_path / "out.txt",
                             "--ray", f"ray://127.0.0.1:{port}", *FAST)
    assert_user_error(code, err, f"cannot connect to Ray at ray://127.0.0.1:{port}")
    assert not (tmp_path / "out.txt.shards").exists()


# -- on Ray ----------------------------------------------------------------------------------------
def test_output_is_the_plain_translator_s_row_for_row(ray_instance, marian, corpus, translate, tmp_path, capsys):
    source = write_lines(tmp_path / "in.txt", corpus)
    output = tmp_path / "out.txt"
    code, out, err = run_cli(capsys, "translate-corpus", marian, "-i", source, "-o", output, "--actors", "2",
                             "--shard-rows", "64", "--batch-size", "16", *FAST)
    assert code == 0, err
    assert output_lines(output) == translate(corpus)  # 318 rows: blank ones blank, order kept over 5 shards
    assert "318 rows (18 blank, 0 malformed) in 5 shard(s)" in out
    assert "translated 318 rows in 5 shard(s)" in out and "rows/s with 2 actor(s) x 1 thread(s)" in out
    assert f"wrote {output} (text, 318 rows)" in out
    assert not (tmp_path / "out.txt.shards").exists()  # removed once the output is written


def test_the_shortlist_reaches_the_actors(ray_instance, marian, tmp_path, capsys):
    from mtedge.convert.shortlist import add_shortlist
    from tests.cli_helpers import write_tsv
    from tests.factories import train_pairs

    bundle = shutil.copytree(marian, tmp_path / "bundle")
    # one candidate per source token and none for everyone: translations must change
    add_shortlist(bundle, write_tsv(tmp_path / "train.tsv", train_pairs()[:300]), per_token=1, always=0,
                  min_count=1, log=lambda message: None)
    rows = [source for source, _ in templated_pairs(12, seed=5)]
    output = tmp_path / "out.txt"
    code, out, err = run_cli(capsys, "translate-corpus", bundle, "-i", write_lines(tmp_path / "in.txt", rows), "-o",
                             output, "--actors", "1", "--batch-size", "1", "--shortlist", *FAST)
    assert code == 0, err
    with Translator(bundle, engine="ct2", threads=1, shortlist=True) as short, \
            Translator(bundle, engine="ct2", threads=1) as full:
        alone = [short.translate([row])[0].text for row in rows]   # --batch-size 1: each row alone
        plain = [t.text for t in full.translate(rows)]
    assert output_lines(output) == alone and alone != plain


def test_more_actors_than_the_local_cpus_is_refused(ray_instance, marian, tmp_path, capsys):
    source = write_lines(tmp_path / "in.txt", ["the cat sees the dog"])
    code, out, err = run_cli(capsys, "translate-corpus", marian, "-i", source, "-o", tmp_path / "out.txt",
                             "--actors", "3", *FAST)
    assert_user_error(code, err, "3 actor(s) x --threads-per-actor 1 need 3 CPUs; the local Ray instance has 2")


def test_a_killed_run_resumes_redoing_only_the_damaged_shards(ray_instance, marian, corpus, translate, tmp_path,
                                                              capsys, monkeypatch):
    source = write_lines(tmp_path / "in.txt", corpus)
    output = tmp_path / "out.txt"
    shards = tmp_path / "out.txt.shards"
    args = ["translate-corpus", marian, "-i", source, "-o", output, "--actors", "2", "--shard-rows", "64",
            "--batch-size", "16", "--keep-shards", *FAST]
    written = []
    write = ShardStore.write

    def write_four_then_die(self, shard, *rest):
        if len(written) == 4:
            raise KeyboardInterrupt  # the driver killed while shard 5 is in flight
        write(self, shard, *rest)
        written.append(shard.name)

    with monkeypatch.context() as patch:
        patch.setattr(ShardStore, "write", write_four_then_die)
        code, out, err = run_cli(capsys, *args)
    assert code == 130 and "Interrupted." in err
    assert not output.exists()
    manifest = json.loads((shards / "manifest.json").read_text())
    assert sorted(manifest["shards"]) == sorted(written)
    # Damage two of the four: corrupt one file, drop another's record. The other two must be reused as they are.
    corrupt, unrecorded, *kept = written
    (shards / f"{corrupt}.jsonl").write_text((shards / f"{corrupt}.jsonl").read_text().replace('"', "'", 3))
    del manifest["shards"][unrecorded]
    (shards / "manifest.json").write_text(json.dumps(manifest))
    before = {name: identity(shards / f"{name}.jsonl") for name in written}

    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert output_lines(output) == translate(corpus)
    assert "reused 2 verified shard(s)" in out and "translated" in out and "in 3 shard(s)" in out
    assert f"warning: {corrupt} is translated again: its file does not match its recorded hash" in err
    assert {name: identity(shards / f"{name}.jsonl") for name in kept} == {name: before[name] for name in kept}
    for name in (corrupt, unrecorded):
        assert identity(shards / f"{name}.jsonl") != before[name]
    assert len(json.loads((shards / "manifest.json").read_text())["shards"]) == 5

    code, out, err = run_cli(capsys, *args)  # everything verified: nothing is translated, Ray is not needed
    assert code == 0 and "reused 5 verified shard(s) (318 rows)" in out and "translated" not in out


def test_jsonl_with_malformed_rows_skipped_to_parquet(ray_instance, marian, translate, tmp_path, capsys):
    import pyarrow.parquet as pq

    sentences = [source for source, _ in templated_pairs(40, seed=12)]
    rows = [json.dumps({"id": f"doc-{n}", "text": s}) for n, s in enumerate(sentences)]
    rows[3], rows[10], rows[25] = '{"text": "x"', json.dumps({"txt": "a"}), json.dumps({"text": 7})
    rows[17] = ""
    source = write_lines(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.parquet"
    code, out, err = run_cli(capsys, "translate-corpus", marian, "-i", source, "-o", output, "--on-error", "skip",
                             "--actors", "1", "--shard-rows", "16", "--batch-size", "8", *FAST)
    assert code == 0, err
    assert "warning: 3 malformed row(s) written as empty translations (row 4: invalid JSON" in err
    assert "40 rows (1 blank, 3 malformed) in 3 shard(s)" in out
    table = pq.read_table(output).to_pylist()
    assert [row["id"] for row in table] == list(range(1, 41))
    bad = {4, 11, 18, 26}
    expected = translate([s for n, s in enumerate(sentences, start=1) if n not in bad])
    assert [row["translation"] for row in table if row["id"] not in bad] == expected
    assert [(row["translation"], row["error"]) for row in table if row["id"] in bad] == [
        ("", "invalid JSON (Expecting ',' delimiter at column 13)"), ("", "no key 'text' (keys: 'txt')"),
        ("", None), ("", "'text' is a number, not a string")]


def test_parquet_column_to_jsonl_with_ids(ray_instance, marian, translate, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    sentences = [source for source, _ in templated_pairs(30, seed=13)]
    values = [None if n == 7 else s for n, s in enumerate(sentences)]
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"n": list(range(30)), "body": values}), source, row_group_size=7)  # groups cut shards
    output = tmp_path / "out.jsonl"
    code, out, err = run_cli(capsys, "translate-corpus", marian, "-i", source, "-o", output, "--field", "body",
                             "--on-error", "skip", "--actors", "1", "--shard-rows", "10", *FAST)
    assert code == 0, err
    rows = [json.loads(line) for line in output_lines(output)]
    assert [row["id"] for row in rows] == list(range(1, 31))
    assert rows[7] == {"id": 8, "translation": "", "error": "'body' is null"}
    assert [row["translation"] for row in rows[:7] + rows[8:]] == translate(sentences[:7] + sentences[8:])


# -- packaging -------------------------------------------------------------------------------------
def test_ray_stays_out_of_the_base_install_and_of_the_light_paths():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [r for r in project["dependencies"] if r.lower().startswith("ray")]
    assert project["optional-dependencies"]["distributed"] == ["ray[data,client]==2.60.0"]
    code = ("import sys, mtedge, mtedge.cli, mtedge.corpus, mtedge.corpus.ray_job, mtedge.commands.translate_corpus\n"
            "[mtedge.cli.cli.get_command(None, n) for n in mtedge.cli.cli.list_commands(None)]\n"
            "print(sorted(m for m in ('ray', 'pyarrow', 'torch') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    help_text = subprocess.run([sys.executable, "-m", "mtedge.cli", "translate-corpus", "--help"],
                               capture_output=True, text=True, cwd=ROOT, timeout=120,
                               env={**os.environ, "COLUMNS": "200"})
    assert help_text.returncode == 0 and "--ray ADDRESS" in help_text.stdout
