"""``mtedge translate``: line alignment, stdin/stdout, --json n-best, bad bytes, user mistakes."""

from __future__ import annotations

import io
import json
import sys

import pytest

from mtedge import Translator
from mtedge.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
COMMON = ["--threads", "1", "--device", "cpu", "--no-progress"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture(scope="module")
def marian(tiny_unvalidated_bundles):
    return tiny_unvalidated_bundles("marian")


@pytest.fixture(scope="module")
def expected(marian, tiny_dev_pairs):
    """source -> the Translator's translation (ct2 int8, the CLI's defaults)."""
    sources = [s for s, _ in tiny_dev_pairs[:6]]
    out = Translator(marian, engine="ct2", device="cpu", threads=1).translate(sources)
    return dict(zip(sources, (t.text for t in out)))


def test_file_with_empty_lines_keeps_alignment(marian, expected, tmp_path, capsys):
    sources = list(expected)
    lines = [sources[0], "", sources[1], "   ", "", sources[2], "\t", sources[3]]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dst = tmp_path / "out.txt"
    code, out, err = run_cli(capsys, "translate", marian, "-i", src, "-o", dst, *COMMON)
    assert code == 0, err
    result = dst.read_text(encoding="utf-8").split("\n")
    assert result[-1] == "" and len(result) - 1 == len(lines)
    assert result[:-1] == [expected.get(line, "") for line in lines]
    assert out == ""


def test_progress_bar_on_stderr_when_reading_a_file(marian, expected, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(expected) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "translate", marian, "-i", src, "--threads", "1", "--device", "cpu")
    assert code == 0
    assert out.splitlines() == list(expected.values())
    assert "line/s" in err and "/6 " in err  # a tqdm bar that knows the line count


def test_stdin_to_stdout_without_final_newline_and_crlf(marian, expected, capsys, monkeypatch):
    sources = list(expected)
    data = f"{sources[0]}\r\n\r\n{sources[1]}".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run_cli(capsys, "translate", marian, *COMMON)
    assert code == 0, err
    assert out == f"{expected[sources[0]]}\n\n{expected[sources[1]]}\n"
    assert err == ""


def test_invalid_utf8_is_replaced_with_a_warning(marian, expected, capsys, monkeypatch):
    sources = list(expected)
    data = sources[0].encode() + b"\n\xff\xfe broken \xc3\n" + sources[1].encode() + b"\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run_cli(capsys, "translate", marian, *COMMON)
    assert code == 0
    lines = out.split("\n")
    assert len(lines) == 4 and lines[0] == expected[sources[0]] and lines[2] == expected[sources[1]]
    assert err.strip() == ("warning: 1 input line(s) were not valid UTF-8 (line 2); "
                           "the bad bytes were replaced with U+FFFD")


def test_line_breaks_other_than_newline_do_not_shift_lines(marian, expected, capsys, monkeypatch):
    sources = list(expected)
    data = f"{sources[0]}\u2028{sources[1]}\x0b\x1c\n{sources[2]}\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, _ = run_cli(capsys, "translate", marian, *COMMON)
    assert code == 0
    lines = out.split("\n")
    assert len(lines) == 3 and lines[1] == expected[sources[2]]


def test_json_lines_with_scores_and_nbest(marian, expected, tmp_path, capsys):
    sources = list(expected)[:3]
    src = tmp_path / "in.txt"
    src.write_text(f"{sources[0]}\n\n{sources[1]}\n{sources[2]}\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "translate", marian, "-i", src, "--json", "--beam", "4", "--n-best", "3",
                             "--precision", "float32", *COMMON)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 4
    assert records[1] == {"text": "", "score": None, "hypotheses": []}
    reference = Translator(marian, engine="ct2", precision="float32", device="cpu", threads=1).translate(
        [sources[0]], beam_size=4, num_hypotheses=3, return_scores=True)[0]
    first = records[0]
    assert first["text"] == reference.text and first["score"] == pytest.approx(reference.score, rel=1e-5)  # float32 sums; 1.2e-6 seen
    assert [h["text"] for h in first["hypotheses"]] == [h.text for h in reference.hypotheses]
    assert all(len(r["hypotheses"]) == 3 for r in records if r["text"])
    scores = [h["score"] for h in first["hypotheses"]]
    assert scores == sorted(scores, reverse=True)


def test_split_sentences_keeps_one_line(marian, tiny_dev_pairs, capsys, monkeypatch):
    named = next(s for s, _ in tiny_dev_pairs if s[0].isupper())
    data = f"{tiny_dev_pairs[0][0]}. {named}.\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, _ = run_cli(capsys, "translate", marian, "--split-sentences", *COMMON)
    assert code == 0 and out.count("\n") == 1 and out.strip()


@pytest.mark.parametrize("args, message", [
    (["--beam", "0"], "error: --beam must be at least 1, got '0'"),
    (["--beam", "four"], "error: --beam must be a positive integer, got 'four'"),
    (["--max-length", "0"], "error: --max-length must be at least 1, got '0'"),
    (["--beam", "2", "--n-best", "3"], "error: --n-best (3) cannot exceed --beam (2)"),
    (["--engine", "marian"], "error: unknown engine 'marian'; choose from ct2, onnx, torch"),
    (["--precision", "int16"], "error: bundle marian-unvalidated has no ct2 int16; it has "),
    (["--device", "tpu"], "error: unknown device 'tpu'"),
    (["-i", "/nonexistent/input.txt"], "error: input file not found: /nonexistent/input.txt"),
])
def test_user_mistakes_are_one_line(marian, capsys, monkeypatch, args, message):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"the cat\n")))
    code, out, err = run_cli(capsys, "translate", marian, *args, "--threads", "1", "--no-progress")
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1, err
    assert out == ""


def test_missing_bundle_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "translate", tmp_path / "nope")
    assert code == 2 and err == f"error: bundle not found: {tmp_path / 'nope'}\n"


def test_cuda_without_gpu_is_one_line(marian, capsys):
    from mtedge.engines import cuda_available

    if cuda_available("ct2"):
        pytest.skip("a CUDA GPU is present")
    code, _, err = run_cli(capsys, "translate", marian, "--device", "cuda")
    assert code == 2 and err.startswith("error: device 'cuda' was asked for") and err.count("\n") == 1


@pytest.mark.gpu("ct2")
def test_translate_on_cuda(marian, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"the cat\n\nthe dog\n")))
    code, out, err = run_cli(capsys, "translate", marian, "--device", "cuda", "--no-progress")
    assert code == 0, err
    lines = out.split("\n")
    assert len(lines) == 4 and lines[0] and lines[1] == "" and lines[2] and lines[3] == ""
