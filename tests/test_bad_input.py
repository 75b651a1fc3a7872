"""Hostile input, table by table: every case must give a clear answer (one ``error:`` line and exit 2 on
the command line, a :class:`UserError` from Python) or a documented non-error (blank in, blank out; a
capped thread count with one warning line), never a traceback, a hang, garbage or a destroyed file.

The bundles are the real tiny trained fixtures (tests/fixtures/bundles.py); command-line cases run
``mtedge`` in a real subprocess, so streams, file descriptors, pipes and exit codes are the real ones.
tests/README.md lists the classes covered.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mtedge import Translator
from mtedge.data import Pair, load_pairs, read_pairs, write_tsv
from mtedge.errors import BundleError, DataError, UserError
from mtedge.tokenizer import BundleTokenizer

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

SENTENCE = "the cat sees the dog"
CLI = [sys.executable, "-m", "mtedge.cli"]
FAST = ["--threads", "1", "--device", "cpu", "--no-progress"]
TIMEOUT = 120  # a case that runs longer than this hangs (2 shared cores, model load included)


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def marian(tiny_unvalidated_bundles) -> Path:
    return tiny_unvalidated_bundles("marian")


def mtedge(*args, stdin: bytes | None = b"", timeout: float = TIMEOUT, **kw) -> subprocess.CompletedProcess:
    """``mtedge ARGS`` in a subprocess: the real exit code, stdout and stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(CLI + [str(a) for a in args], input=stdin, capture_output=True, timeout=timeout,
                          env=env, **kw)


def shell(script: str, *args, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``bash -c SCRIPT`` where ``$MTEDGE`` runs the command line and ``$1``… are ``args``."""
    env = {**os.environ, "MTEDGE_PYTHON": sys.executable}
    script = script.replace("$MTEDGE", '"$MTEDGE_PYTHON" -m mtedge.cli')
    return subprocess.run(["bash", "-c", script, "bash", *map(str, args)], capture_output=True,
                          timeout=timeout, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    err = result.stderr.decode("utf-8", errors="replace")
    assert "Traceback" not in err, err
    assert result.returncode == 2, (result.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_one_line(exc: BaseException, *fragments: str) -> None:
    message = str(exc)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out, symlinks=True)
    return out


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")


def record_size(bundle: Path, relative: str) -> None:
    """After editing a bundle file on purpose: record its new size, so that what is tested is the
    parse of its content, not the size check that would otherwise catch it first."""
    directory, name = relative.rsplit("/", 1)

    def change(manifest):
        if directory == "tokenizer":
            files = manifest["tokenizer"]["files"]
        else:
            engine, precision = directory.split("/")
            files = manifest["engines"][engine][precision]["files"]
        files[name]["size"] = (bundle / relative).stat().st_size

    edit_manifest(bundle, change)


def scramble(path: Path) -> None:
    """Same size, wrong bytes: what the size check cannot see (only ``mtedge info --deep`` can)."""
    size = path.stat().st_size
    path.write_bytes(bytes((i * 7 + 3) % 256 for i in range(size)))


# -- 1. command-line options out of range or of the wrong kind --------------------------------------
OPTION_CASES = [
    # (args, fragment of the one error line)
    (["--max-length", "18446744073709551616"], "--max-length must be at most 128"),
    (["--max-length", "18446744073709551616", "--engine", "onnx"], "--max-length must be at most 128"),
    (["--max-length", "18446744073709551616", "--engine", "onnx", "--beam", "4"], "--max-length must be at most"),
    (["--max-length", "18446744073709551616", "--engine", "torch"], "--max-length must be at most 128"),
    (["--max-length", "129"], "--max-length must be at most 128 (the model's limit"),
    (["--max-length", "99999", "--precision", "float32"], "--max-length must be at most 128"),
    (["--max-length", "0"], "--max-length must be at least 1"),
    (["--max-length", "-5"], "--max-length must be at least 1"),
    (["--max-length", "1e3"], "--max-length must be a positive integer"),
    (["--length-penalty", "1e300", "--engine", "onnx"], "--length-penalty must be between -10 and 10"),
    (["--length-penalty", "1e300"], "--length-penalty must be between -10 and 10"),
    (["--length-penalty", "-1e300", "--engine", "onnx", "--beam", "4"], "--length-penalty must be between"),
    (["--length-penalty", "11"], "--length-penalty must be between -10 and 10, got 11.0"),
    (["--length-penalty", "inf"], "--length-penalty must be a finite number"),
    (["--length-penalty", "nan", "--engine", "onnx"], "--length-penalty must be a finite number"),
    (["--length-penalty", "long"], "--length-penalty must be a number"),
    (["--beam", "2", "--n-best", "3"], "--n-best (3) cannot exceed --beam (2); raise --beam to at least 3"),
    (["--n-best", "5"], "--n-best (5) cannot exceed --beam (4)"),
    (["--beam", "100000", "--engine", "onnx"], "--beam must be at most 180 (the target vocabulary's size)"),
    (["--beam", "99999999999999999999"], "--beam must be at most 180"),
    (["--beam", "0"], "--beam must be at least 1"),
    (["--beam", "1.5"], "--beam must be a positive integer"),
    (["--n-best", "0"], "--n-best must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--threads", "-1"], "--threads must be at least 1"),
    (["--threads", "two"], "--threads must be a positive integer"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--batch-tokens", "0"], "--batch-tokens must be at least 1"),
    (["--precision", ""], "unknown ct2 precision ''; choose from float32, int8"),
    (["--precision", " "], "unknown ct2 precision ' '"),
    (["--precision", "float8"], "unknown ct2 precision 'float8'"),
    (["--precision", "int3", "--engine", "onnx"], "unknown onnx precision 'int3'; choose from fp32, int8, int8_latency, int4, fp16"),
    (["--precision", "", "--engine", "onnx"], "unknown onnx precision ''"),
    (["--precision", "int8", "--engine", "torch"], "unknown torch precision 'int8'; choose from fp32"),
    (["--engine", ""], "unknown engine ''"),
    (["--device", ""], "unknown device ''"),
]


@pytest.mark.parametrize("args, fragment", OPTION_CASES, ids=[" ".join(a) or "empty" for a, _ in OPTION_CASES])
def test_option_mistakes_are_one_line(marian, args, fragment):
    result = mtedge("translate", marian, *FAST, *args, stdin=f"{SENTENCE}\n".encode())
    assert_one_line_error(result, fragment)
    assert result.stdout == b""


API_OPTION_CASES = [
    (dict(max_length=2 ** 64), "max_length must be at most 128"),
    (dict(max_length=10 ** 30, beam_size=4), "max_length must be at most 128"),
    (dict(length_penalty=1e300), "length_penalty must be between -10 and 10"),
    (dict(length_penalty=-1e300, beam_size=4), "length_penalty must be between -10 and 10"),
    (dict(beam_size=10 ** 6), "beam_size must be at most 180"),
    (dict(beam_size=2, num_hypotheses=3), "num_hypotheses (3) cannot exceed beam_size (2)"),
]


@pytest.mark.parametrize("engine", ["ct2", "onnx"])
@pytest.mark.parametrize("options, fragment", API_OPTION_CASES, ids=[str(o) for o, _ in API_OPTION_CASES])
def test_api_options_out_of_range_are_user_errors(translators, engine, options, fragment):
    translator = translators(engine)
    with pytest.raises(UserError) as info:
        translator.translate([SENTENCE], **options)
    assert_one_line(info.value, fragment)


def test_beam_search_memory_is_estimated_and_an_absurd_search_refused(translators, monkeypatch):
    from mtedge import translator as translator_mod

    # opus-mt-en-de's shape (vocab 58101, d512, 6 decoder layers): beam 50,000 cannot fit in any machine here
    opus = {"decoder_layers": 6, "d_model": 512}
    assert translator_mod.beam_search_bytes(50_000, 512, 58_101, opus) > 60 * 2**30
    assert translator_mod.beam_search_bytes(4, 256, 58_101, opus) < 2**25  # a normal search: tens of MB
    translator = translators("ct2")
    # the tiny model's beams are cheap, so the check is shown against a machine with 64 KiB to spare
    monkeypatch.setattr(translator_mod, "_available_memory", lambda: 64 * 1024)
    with pytest.raises(UserError) as info:
        translator.translate([SENTENCE], beam_size=100)
    assert_one_line(info.value, "beam_size 100 with max_length", "for a single sentence", "use a smaller beam")
    monkeypatch.setattr(translator_mod, "_available_memory", lambda: 2**34)
    assert translator.translate([SENTENCE], beam_size=100)[0].text


# -- 2. output paths: the input itself, nowhere to write, full devices, closed streams --------------
def _input(tmp_path: Path) -> Path:
    path = tmp_path / "same.txt"
    path.write_text(f"{SENTENCE}\nthe dog sees the cat\n", encoding="utf-8")
    return path


SAME_FILE_CASES = {
    "same path": lambda t, p: (["-i", p, "-o", p], None),
    "relative and absolute": lambda t, p: (["-i", p.name, "-o", p], t),
    "symlink to the input": lambda t, p: (["-i", p, "-o", _link(t / "link.txt", p)], None),
    "input through a symlink": lambda t, p: (["-i", _link(t / "link.txt", p), "-o", p], None),
    "hard link to the input": lambda t, p: (["-i", p, "-o", _hardlink(t / "hard.txt", p)], None),
    "dot-dot path": lambda t, p: (["-i", p, "-o", _subdir(t) / ".." / p.name], None),
}


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _hardlink(link: Path, target: Path) -> Path:
    os.link(target, link)
    return link


def _subdir(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    return tmp_path / "sub"


@pytest.mark.parametrize("case", list(SAME_FILE_CASES))
def test_output_that_is_the_input_is_refused_and_the_input_kept(marian, tmp_path, case):
    path = _input(tmp_path)
    before = path.read_bytes()
    args, cwd = SAME_FILE_CASES[case](tmp_path, path)
    result = mtedge("translate", marian, *FAST, *args, cwd=cwd)
    assert_one_line_error(result, "is the input file", "choose another output file")
    assert path.read_bytes() == before


def test_stdin_redirected_from_the_output_file_is_refused(marian, tmp_path):
    path = _input(tmp_path)
    before = path.read_bytes()
    result = shell('$MTEDGE translate "$1" --threads 1 --no-progress -o "$2" < "$2"', marian, path)
    assert_one_line_error(result, "is the input file (standard input)")
    assert path.read_bytes() == before


def test_dev_stdin_that_is_the_output_file_is_refused(marian, tmp_path):
    path = _input(tmp_path)
    before = path.read_bytes()
    result = shell('$MTEDGE translate "$1" --threads 1 --no-progress -i /dev/stdin -o "$2" < "$2"', marian, path)
    assert_one_line_error(result, "is the input file")
    assert path.read_bytes() == before


OUTPUT_ERRORS = {
    "missing directory": (lambda t: t / "no" / "such" / "dir" / "out.txt", "output directory does not exist"),
    "a directory": (lambda t: t, "output path is a directory"),
    "/dev/full": (lambda t: Path("/dev/full"), "cannot write /dev/full: No space left on device"),
    "under /proc": (lambda t: Path("/proc/version"), "cannot write /proc/version: cannot create a file in /proc"),
    "under a file": (lambda t: _file(t / "plain.txt") / "out.txt", "plain.txt is not a directory"),
}


def _file(path: Path) -> Path:
    path.write_text("x\n")
    return path


@pytest.mark.parametrize("case", list(OUTPUT_ERRORS))
def test_unwritable_outputs_are_one_line(marian, tmp_path, case):
    make, fragment = OUTPUT_ERRORS[case]
    result = mtedge("translate", marian, *FAST, "-o", make(tmp_path), stdin=f"{SENTENCE}\n".encode())
    assert_one_line_error(result, fragment)


def test_output_on_a_read_only_filesystem_is_one_line(marian):
    # opt-in: a directory on a read-only mount that this test may try (and fail) to write into
    mount = os.environ.get("MTEDGE_TEST_READONLY_DIR")
    if not mount:
        pytest.skip("set MTEDGE_TEST_READONLY_DIR to a directory on a read-only filesystem")
    result = mtedge("translate", marian, *FAST, "-o", Path(mount) / "mtedge-out.txt", stdin=f"{SENTENCE}\n".encode())
    assert_one_line_error(result, "cannot write", "Read-only file system")


def test_output_in_a_directory_without_write_permission_is_one_line(marian, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes through directory permissions")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = mtedge("translate", marian, *FAST, "-o", locked / "out.txt", stdin=f"{SENTENCE}\n".encode())
    finally:
        locked.chmod(0o700)
    assert_one_line_error(result, "cannot write", "Permission denied")


def test_a_failed_run_leaves_an_existing_output_untouched(marian, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("an earlier translation\n", encoding="utf-8")
    result = mtedge("translate", marian, *FAST, "-i", "/proc/self/mem", "-o", out)  # reading it: EIO
    assert_one_line_error(result, "cannot read /proc/self/mem")
    assert out.read_text(encoding="utf-8") == "an earlier translation\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temporary file left behind


def test_output_replaced_only_at_the_end_keeps_mode_and_symlink(marian, tmp_path):
    src = _input(tmp_path)
    real = tmp_path / "real.txt"
    real.write_text("old\n")
    real.chmod(0o640)
    link = _link(tmp_path / "link.txt", real)
    result = mtedge("translate", marian, *FAST, "-i", src, "-o", link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and len(real.read_text(encoding="utf-8").splitlines()) == 2
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_closed_stdout_is_one_line(marian, tmp_path):
    src = _input(tmp_path)
    result = shell('$MTEDGE translate "$1" --threads 1 --no-progress -i "$2" >&-', marian, src)
    assert_one_line_error(result, "standard output is closed", "-o FILE")


def test_closed_stdin_is_one_line(marian):
    result = shell('$MTEDGE translate "$1" --threads 1 --no-progress <&-', marian)
    assert_one_line_error(result, "standard input is closed", "-i FILE")


def test_reader_going_away_is_a_quiet_exit_0(marian, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text(f"{SENTENCE}\n" * 3000, encoding="utf-8")
    process = subprocess.Popen(CLI + ["translate", str(marian), *FAST, "-i", str(big)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    first = process.stdout.readline()
    process.stdout.close()  # like `| head -1`
    err = process.stderr.read().decode()
    assert process.wait(timeout=TIMEOUT) == 0, err
    assert first.strip() and err == ""


# -- 3. inputs that are streams, devices, links, or not there -------------------------------------
def test_dev_null_is_an_empty_input(marian):
    result = mtedge("translate", marian, *FAST, "-i", "/dev/null")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""


def test_dev_stdin_is_read(marian):
    result = mtedge("translate", marian, *FAST, "-i", "/dev/stdin", stdin=f"{SENTENCE}\n\n".encode())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 3 and lines[0] and lines[1] == ""


def test_process_substitution_is_read_with_a_progress_bar(marian):
    result = shell(f'$MTEDGE translate "$1" --threads 1 -i <(printf "{SENTENCE}\\n\\n{SENTENCE}\\n")', marian)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[0] == lines[2] != "" and lines[1] == ""
    assert b"Traceback" not in result.stderr


INPUT_ERRORS = {
    "missing": (lambda t: t / "nope.txt", "input file not found"),
    "dangling symlink": (lambda t: _link(t / "dangling.txt", t / "gone.txt"), "a symbolic link to a missing file"),
    "a directory": (lambda t: t, "input path is a directory"),
    "unreadable device": (lambda t: Path("/proc/self/mem"), "cannot read /proc/self/mem: Input/output error"),
}


@pytest.mark.parametrize("case", list(INPUT_ERRORS))
def test_bad_inputs_are_one_line(marian, tmp_path, case):
    make, fragment = INPUT_ERRORS[case]
    assert_one_line_error(mtedge("translate", marian, *FAST, "-i", make(tmp_path)), fragment)


# -- 4. threads: capped at the CPUs this process may use, with one warning line -------------------
THREAD_CASES = [
    (["--threads", "10000"], "--threads 10000"),
    (["--threads", "99999999999"], "--threads 99999999999"),
    (["--threads", "512", "--engine", "onnx"], "--threads 512"),
    (["--workers", "10000"], "--workers 10000"),
]


@pytest.mark.parametrize("args, fragment", THREAD_CASES, ids=[" ".join(a) for a, _ in THREAD_CASES])
def test_too_many_threads_are_capped_with_a_warning(marian, args, fragment):
    cpus = len(os.sched_getaffinity(0))
    if int(args[1]) <= cpus:
        pytest.skip("this machine has that many CPUs")
    result = mtedge("translate", marian, "--device", "cpu", "--no-progress", *args,
                    stdin=f"{SENTENCE}\n".encode(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip()
    assert result.stderr.decode().splitlines() == [
        f"warning: {fragment} is more than the {cpus} CPU(s) available; using {cpus}"]


def test_api_threads_are_capped_with_a_warning(marian):
    from mtedge.translator import ThreadsCappedWarning

    with pytest.warns(ThreadsCappedWarning, match="threads 1000000 is more than"):
        translator = Translator(marian, engine="onnx", device="cpu", threads=10 ** 6)
    assert translator.translate([SENTENCE])[0].text


# -- 5. inputs with nothing for the model to read: blank in, blank out, on every engine -----------
NO_PIECES = ["\u200b", "\ufffd", "\ud800", "\udfff", "\u200b\u200b\u200b", "\ufeff\u200b", "\ufffd \ufffd"]


@pytest.fixture(scope="module")
def translators(marian):
    made: dict[str, Translator] = {}

    def get(engine: str) -> Translator:
        if engine not in made:
            made[engine] = Translator(marian, engine=engine, device="cpu", threads=1)
        return made[engine]

    yield get
    for translator in made.values():
        translator.close()


@pytest.mark.parametrize("text", NO_PIECES, ids=[t.encode("unicode_escape", "backslashreplace").decode()
                                                 for t in NO_PIECES])
@pytest.mark.parametrize("engine", ["ct2", "onnx", "torch"])
def test_text_that_encodes_to_no_pieces_is_blank(translators, engine, text):
    translator = translators(engine)
    assert translator.tokenizer.encode_body(text) == []  # the premise: the tokenizer keeps nothing
    out = translator.translate([SENTENCE, text, text], beam_size=2, num_hypotheses=2, return_scores=True)
    assert out[0].text
    assert [(t.text, t.score, t.hypotheses) for t in out[1:]] == [("", None, [])] * 2
    assert translator.translate([text], split_sentences=True)[0].text == ""


def test_a_line_with_no_pieces_stays_blank_on_the_command_line(marian):
    result = mtedge("translate", marian, *FAST, "--engine", "onnx",
                    stdin=f"{SENTENCE}\n\u200b\n\ufffd\n{SENTENCE}\n".encode())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().split("\n")
    assert lines[1:3] == ["", ""] and lines[0] == lines[3] != ""


def test_tokenizer_reads_a_lone_surrogate_as_replacement_character(marian):
    tokenizer = BundleTokenizer(marian / "tokenizer")
    assert tokenizer.tokenize("the \ud800 cat") == tokenizer.tokenize("the \ufffd cat")


# -- 6. damaged bundles: manifest fields of the wrong type -----------------------------------------
def _set(*keys, value):
    def change(manifest):
        target = manifest
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


MANIFEST_CASES = {
    "engines a string": (_set("engines", value="ct2"), "engines must be an object"),
    "engines a list": (_set("engines", value=["ct2"]), "engines must be an object"),
    "precisions a string": (_set("engines", "ct2", value="int8"), "engines.ct2 must be an object"),
    "engine record a string": (_set("engines", "ct2", "int8", value="ct2/int8"), "engines.ct2.int8 must be an object"),
    "engine dir a number": (_set("engines", "ct2", "int8", "dir", value=5), "engines.ct2.int8.dir must be a string"),
    "engine files a list": (_set("engines", "ct2", "int8", "files", value=["model.bin"]), "engines.ct2.int8.files must be"),
    "file size a word": (_set("engines", "ct2", "int8", "files", "model.bin", "size", value="big"),
                         "engines.ct2.int8.files['model.bin'].size must be a byte count, got 'big'"),
    "file size negative": (_set("engines", "ct2", "int8", "files", "model.bin", "size", value=-1), "size must be a byte count"),
    "file record a string": (_set("engines", "ct2", "int8", "files", "model.bin", value="x"), "must be an object"),
    "sha256 a number": (_set("engines", "ct2", "int8", "files", "model.bin", "sha256", value=12), "sha256 must be a string"),
    "tokenizer a string": (_set("tokenizer", value="tokenizer"), "tokenizer must be an object"),
    "tokenizer files a list": (_set("tokenizer", "files", value=["vocab.json"]), "tokenizer.files must be an object"),
    "tokenizer dir a number": (_set("tokenizer", "dir", value=3), "tokenizer.dir must be a string"),
    "tokenizer file size a word": (_set("tokenizer", "files", "vocab.json", "size", value="big"), "size must be a byte count"),
    "generation a string": (_set("generation", value="beam"), "generation must be an object"),
    "num_beams a word": (_set("generation", "num_beams", value="four"), "generation.num_beams must be a positive integer"),
    "num_beams zero": (_set("generation", "num_beams", value=0), "generation.num_beams must be a positive integer"),
    "num_beams a float": (_set("generation", "num_beams", value=4.5), "generation.num_beams must be"),
    "max_new_tokens a word": (_set("generation", "max_new_tokens", value="many"), "generation.max_new_tokens must be"),
    "max_length negative": (_set("generation", "max_length", value=-1), "generation.max_length must be"),
    "length_penalty a word": (_set("generation", "length_penalty", value="long"), "generation.length_penalty must be a number"),
    "early_stopping a word": (_set("generation", "early_stopping", value="sometimes"), "generation.early_stopping must be"),
    "forced_eos a word": (_set("generation", "forced_eos_token_id", value="eos"), "generation.forced_eos_token_id"),
    "bad_words flat": (_set("generation", "bad_words_ids", value=[179]), "generation.bad_words_ids must be"),
    "repetition_penalty a word": (_set("generation", "repetition_penalty", value="no"), "repetition_penalty must be"),
    "model_shape a list": (_set("model_shape", value=[64]), "model_shape must be an object"),
    "d_model a string": (_set("model_shape", "d_model", value="64"), "model_shape.d_model must be"),
    "family a number": (_set("family", value=5), "family must be a string"),
    "name a list": (_set("name", value=["demo"]), "name must be a string"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_manifest_fields_of_the_wrong_type_are_named(marian, tmp_path, case):
    change, fragment = MANIFEST_CASES[case]
    bundle = copy_bundle(marian, tmp_path)
    edit_manifest(bundle, change)
    with pytest.raises(BundleError) as info:
        Translator(bundle, engine="ct2", device="cpu", threads=1)
    assert_one_line(info.value, "manifest.json is damaged", fragment)


@pytest.mark.parametrize("case", ["file size a word", "engines a string", "num_beams a word"])
@pytest.mark.parametrize("command", ["info", "translate"])
def test_damaged_manifest_on_the_command_line(marian, tmp_path, case, command):
    change, fragment = MANIFEST_CASES[case]
    bundle = copy_bundle(marian, tmp_path)
    edit_manifest(bundle, change)
    args = ["info", bundle] if command == "info" else ["translate", bundle, *FAST]
    assert_one_line_error(mtedge(*args, stdin=f"{SENTENCE}\n".encode()), "manifest.json is damaged", fragment)


# -- 7. damaged bundles: the tokenizer description ------------------------------------------------
def _spec(change):
    def apply(spec):
        return change(spec) or spec
    return apply


TOKENIZER_CASES = {
    "a JSON list": (lambda s: [s], "expected a JSON object, found a list"),
    "a JSON string": (lambda s: "marian", "expected a JSON object, found a str"),
    "eos_id a word": (lambda s: s.update(eos_id="zero"), "eos_id must be a token id, got 'zero'"),
    "eos_id a float": (lambda s: s.update(eos_id=0.5), "eos_id must be a token id"),
    "eos_id a bool": (lambda s: s.update(eos_id=False), "eos_id must be a token id"),
    "eos_id out of range": (lambda s: s.update(eos_id=100000), "eos_id 100000 is outside the vocabulary"),
    "pad_id negative": (lambda s: s.update(pad_id=-1), "pad_id -1 is outside the vocabulary"),
    "unk_id missing": (lambda s: s.pop("unk_id") and None, "it lacks 'unk_id'"),
    "source_spm a number": (lambda s: s.update(source_spm=5), "source_spm must be a file name"),
    "source_suffix a string": (lambda s: s.update(source_suffix="</s>"), "source_suffix must be a list of token strings"),
    "special_ids a string": (lambda s: s.update(special_ids="0,1"), "special_ids must be a list of token ids"),
    "model_max_length a string": (lambda s: s.update(model_max_length="512"), "model_max_length must be"),
    "vocab_size negative": (lambda s: s.update(vocab_size=-3), "vocab_size must be a positive integer"),
    "bad_words flat": (lambda s: s.update(bad_words_ids=[179]), "bad_words_ids must be a list of token-id lists"),
    "clean_up a string": (lambda s: s.update(clean_up_tokenization_spaces="no"), "must be true or false"),
}


@pytest.mark.parametrize("case", list(TOKENIZER_CASES))
def test_tokenizer_description_of_the_wrong_shape_is_named(marian, tmp_path, case):
    change, fragment = TOKENIZER_CASES[case]
    bundle = copy_bundle(marian, tmp_path)
    path = bundle / "tokenizer" / "mtedge_tokenizer.json"
    path.write_text(json.dumps(_spec(change)(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")
    record_size(bundle, "tokenizer/mtedge_tokenizer.json")
    with pytest.raises(BundleError) as info:
        Translator(bundle, engine="ct2", device="cpu", threads=1)
    assert_one_line(info.value, "mtedge_tokenizer.json", fragment)


# -- 8. damaged bundles: files of the right size with the wrong bytes -----------------------------
CORRUPT_FILES = [
    ("tokenizer/source.spm", "ct2"),
    ("tokenizer/target.spm", "ct2"),
    ("tokenizer/vocab.json", "ct2"),
    ("tokenizer/vocab.json", "onnx"),
    ("ct2/int8/model.bin", "ct2"),
    ("ct2/int8/config.json", "ct2"),
    ("ct2/int8/shared_vocabulary.json", "ct2"),
    ("ct2/float32/model.bin", "ct2"),
    ("onnx/int8/encoder_model.onnx", "onnx"),
    ("onnx/int8/decoder_model_merged.onnx", "onnx"),
    ("onnx/fp32/encoder_model.onnx", "onnx"),
]


def _precision(relative: str, engine: str) -> str:
    parts = relative.split("/")
    return parts[1] if parts[0] == engine else "int8"


@pytest.mark.parametrize("relative, engine", CORRUPT_FILES, ids=[f"{r}-{e}" for r, e in CORRUPT_FILES])
def test_same_size_corrupt_file_is_named(marian, tmp_path, relative, engine):
    bundle = copy_bundle(marian, tmp_path)
    scramble(bundle / relative)
    with pytest.raises(BundleError) as info:
        Translator(bundle, engine=engine, precision=_precision(relative, engine), device="cpu", threads=1)
    assert_one_line(info.value, f"{bundle / relative} is corrupt", f"mtedge info --deep {bundle}")


def test_vocab_json_that_is_not_a_map_is_named(marian, tmp_path):
    bundle = copy_bundle(marian, tmp_path)
    (bundle / "tokenizer" / "vocab.json").write_text('["</s>", "<unk>"]')
    record_size(bundle, "tokenizer/vocab.json")
    with pytest.raises(BundleError, match=r"vocab\.json is corrupt \(not an object of piece -> id\)"):
        Translator(bundle, engine="ct2", device="cpu", threads=1)


@pytest.mark.parametrize("relative", ["ct2/int8/model.bin", "tokenizer/source.spm", "ct2/int8/config.json"])
def test_corrupt_file_on_the_command_line(marian, tmp_path, relative):
    bundle = copy_bundle(marian, tmp_path)
    scramble(bundle / relative)
    result = mtedge("translate", bundle, *FAST, stdin=f"{SENTENCE}\n".encode())
    assert_one_line_error(result, f"{bundle / relative} is corrupt", "mtedge info --deep")


# -- 9. parallel data: truncated catalogs, unterminated strings, invalid text ---------------------
def _mo_bytes(tmp_path: Path) -> bytes:
    polib = pytest.importorskip("polib")
    catalog = polib.POFile()
    catalog.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    for src, tgt in [("Open file", "Datei öffnen"), ("Save", "Speichern"), ("Close window", "Fenster schließen")]:
        catalog.append(polib.POEntry(msgid=src, msgstr=tgt))
    catalog.save_as_mofile(str(tmp_path / "full.mo"))
    return (tmp_path / "full.mo").read_bytes()


@pytest.mark.parametrize("keep", [0, 3, 10, 19, 27, 60, -5, -2])
def test_truncated_mo_is_a_data_error_naming_the_file(tmp_path, keep):
    data = _mo_bytes(tmp_path)
    path = tmp_path / "cut.mo"
    path.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert_one_line(info.value, f"{path}: not a readable gettext mo file: ")


def test_whole_mo_still_reads(tmp_path):
    path = tmp_path / "ok.mo"
    path.write_bytes(_mo_bytes(tmp_path))
    assert sorted(load_pairs(path)) == [("Close window", "Fenster schließen"), ("Open file", "Datei öffnen"),
                                        ("Save", "Speichern")]


PO_CASES = {
    "msgid": ('msgid "Open file\nmsgstr "Datei öffnen"\n', 1),
    "msgstr": ('msgid "Open file"\nmsgstr "Datei öffnen\n', 2),
    "continuation": ('msgid ""\n"Open file\nmsgstr "Datei öffnen"\n', 2),
    "escaped quote at the end": ('msgid "Open \\"file\\"\nmsgstr "Datei öffnen"\n', 1),
    "msgctxt": ('msgctxt "menu\nmsgid "Open file"\nmsgstr "Datei öffnen"\n', 1),
    "plural form": ('msgid "file"\nmsgid_plural "files"\nmsgstr[0] "Datei"\nmsgstr[1] "Dateien\n', 4),
    "after a good entry": ('msgid "Save"\nmsgstr "Speichern"\n\nmsgid "Open file"\nmsgstr "Datei öffnen\n', 5),
}


@pytest.mark.parametrize("case", list(PO_CASES))
def test_unterminated_po_string_names_file_and_line(tmp_path, case):
    pytest.importorskip("polib")
    text, line = PO_CASES[case]
    path = tmp_path / "bad.po"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_pairs(path)
    assert_one_line(info.value, f"{path}:{line}: unterminated string")


def test_po_with_escaped_quotes_still_reads(tmp_path):
    pytest.importorskip("polib")
    path = tmp_path / "ok.po"
    path.write_text('msgid "Open \\"file\\""\nmsgstr "Datei \\"öffnen\\""\n', encoding="utf-8")
    assert load_pairs(path) == [Pair('Open "file"', 'Datei "öffnen"')]


JSONL_SURROGATES = {
    "high in src": ('{"src": "the \\ud800 cat", "tgt": "die Katze"}', 1, "'src' has a lone surrogate (\\ud800"),
    "low in tgt": ('{"src": "the cat", "tgt": "die \\udfff Katze"}', 1, "'tgt' has a lone surrogate (\\udfff"),
    "on line 3": ('{"src": "a b", "tgt": "c d"}\n\n{"src": "x \\udc80", "tgt": "y z"}', 3, "lone surrogate"),
    "reversed pair": ('{"src": "the \\udc00\\ud800 cat", "tgt": "die Katze"}', 1, "lone surrogate (\\udc00"),
}


@pytest.mark.parametrize("case", list(JSONL_SURROGATES))
def test_lone_surrogate_in_jsonl_names_the_row(tmp_path, case):
    text, line, fragment = JSONL_SURROGATES[case]
    path = tmp_path / "bad.jsonl"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_pairs(path)
    assert_one_line(info.value, f"{path}:{line}:", fragment)


def test_a_real_surrogate_pair_in_jsonl_is_text(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text('{"src": "smile \\ud83d\\ude00", "tgt": "lächeln \\ud83d\\ude00"}\n', encoding="utf-8")
    assert read_pairs(path) == [Pair("smile \U0001F600", "lächeln \U0001F600")]


@pytest.mark.parametrize("pairs, fragment", [
    ([Pair("a b", "c d"), Pair("the \ud800 cat", "die Katze")], "pair 2's source has a lone surrogate"),
    ([Pair("the cat", "die \udfff Katze")], "pair 1's target has a lone surrogate"),
    ([Pair("the cat", None)], "pair 1 is not two strings"),
])
def test_write_tsv_refuses_what_it_cannot_write_and_writes_nothing(tmp_path, pairs, fragment):
    path = tmp_path / "out.tsv"
    with pytest.raises(DataError) as info:
        write_tsv(pairs, path)
    assert_one_line(info.value, str(path), fragment)
    assert not path.exists()


@pytest.mark.parametrize("line, fragment", [
    ('{"src": "a', "Unterminated string starting at column 9"),
    ('{"src": "a" "tgt": "b"}', "Expecting ',' delimiter at column 13"),
    ('{"src": ', "Expecting value at column 9"),
])
def test_jsonl_syntax_errors_read_cleanly(tmp_path, line, fragment):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_pairs(path)
    assert_one_line(info.value, f"{path}:1: not valid JSON ({fragment})")
    assert "at at" not in str(info.value)


# -- 10. the Python API called with the wrong types ------------------------------------------------
@pytest.mark.parametrize("texts, fragment", [
    (None, "takes a list of strings, got NoneType"),
    (5, "takes a list of strings, got int"),
    (3.5, "takes a list of strings, got float"),
    (b"the cat", "got bytes (decode it first)"),
    ("the cat", "single"),
    ([None], "input 0 is NoneType, not a string"),
    (["the cat", 5], "input 1 is int, not a string"),
    ([b"the cat"], "input 0 is bytes, not a string"),
])
@pytest.mark.parametrize("method", ["translate", "translate_iter"])
def test_translate_with_the_wrong_types_is_a_user_error(translators, texts, fragment, method):
    translator = translators("ct2")
    with pytest.raises(UserError) as info:
        list(getattr(translator, method)(texts))
    assert_one_line(info.value, fragment)


@pytest.mark.parametrize("call, fragment", [
    (lambda: load_pairs(None), "the data file must be a path (str or Path), got NoneType"),
    (lambda: load_pairs(5), "got int"),
    (lambda: load_pairs(""), "got ''"),
    (lambda: read_pairs(["a.tsv"]), "got list"),
    (lambda: read_pairs("a.txt", target_path=5), "the target file must be a path"),
    (lambda: read_pairs("a.tsv", fmt=5), "fmt must be one of"),
    (lambda: write_tsv([], None), "the output file must be a path"),
])
def test_data_api_with_the_wrong_types_is_a_data_error(call, fragment):
    with pytest.raises(DataError) as info:
        call()
    assert_one_line(info.value, fragment)
