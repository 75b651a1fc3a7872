"""``mtedge translate``: translate text line by line with a bundle.

Exactly one output line per input line: an empty (or whitespace-only) line stays empty, a line is
never split or merged (use ``--split-sentences`` to translate a long line sentence by sentence, it
still comes out as one line). Input is read as UTF-8; bytes that are not UTF-8 become U+FFFD with a
warning on stderr instead of an error. Lines end at ``\\n`` only (``\\r\\n`` is accepted), so
other line-break characters inside a line cannot shift the alignment.

Light: no torch/transformers unless ``--engine torch`` is asked for.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import click

from mtedge.engines import check_engine
from mtedge.errors import UserError

# Lines read, translated and written per round: output appears as it is ready, memory stays bounded.
CHUNK_LINES = 256
# How the Translator's parameters are spelled on this command line, for its error messages.
FLAG_NAMES = {"beam_size": "--beam", "max_length": "--max-length", "length_penalty": "--length-penalty",
              "num_hypotheses": "--n-best", "batch_tokens": "--batch-tokens", "threads": "--threads",
              "workers": "--workers"}


class _Number(click.ParamType):
    """An int or float option whose mistakes are a one-line UserError, not a usage dump."""

    def __init__(self, kind: type, minimum: float | None, name: str):
        self.kind, self.minimum, self.name = kind, minimum, name

    def convert(self, value, param, ctx):
        flag = param.opts[0] if param is not None else "value"
        if isinstance(value, self.kind):
            number = value
        else:
            try:
                number = self.kind(value)
            except (TypeError, ValueError):
                raise UserError(f"{flag} must be a {self.name}, got {value!r}") from None
        if self.minimum is not None and number < self.minimum:
            raise UserError(f"{flag} must be at least {self.minimum}, got {value!r}")
        return number


POSITIVE = _Number(int, 1, "positive integer")
NON_NEGATIVE = _Number(int, 0, "non-negative integer")
FLOAT = _Number(float, None, "number")


def _read_lines(stream) -> Iterator[tuple[str, bool]]:
    """(line without its line break, whether bytes had to be replaced) for each line of a binary stream."""
    for raw in stream:
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            yield raw.decode("utf-8"), False
        except UnicodeDecodeError:
            yield raw.decode("utf-8", errors="replace"), True


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _one_line(text: str) -> str:
    """Keep the one-line-per-input contract even if a model emits a line break."""
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


@contextlib.contextmanager
def _one_line_warnings():
    """Warnings (e.g. a truncated input) as ``warning: …`` lines on stderr, not Python's two-line form."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        click.echo(f"warning: {message}", err=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


class _StdoutClosed(Exception):
    """The reader of stdout went away (``| head -1``): stop quietly, exit 0."""


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so that the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass


class _Sink:
    """Where translations go: stdout, a device/FIFO written in place, or a regular file written to a
    temporary file next to it and renamed over it only when the whole run succeeded (a failed run
    leaves an existing file as it was). Write errors are one-line UserErrors naming the target."""

    def __init__(self, path: Path | None):
        self.path, self.temp, self.wrapped = path, None, False
        if path is None:
            if sys.stdout is None:
                raise UserError("standard output is closed; give -o FILE to write the translations to a file")
            buffer = getattr(sys.stdout, "buffer", None)
            if buffer is None:
                self.handle = sys.stdout
            else:
                self.handle = io.TextIOWrapper(buffer, encoding="utf-8", newline="\n", write_through=True)
                self.wrapped = True
            return
        target = Path(os.path.realpath(path))  # write through a symlink, replace what it points to
        try:
            if target.exists() and not target.is_file():  # /dev/full, /dev/stdout, a FIFO: no rename
                self.handle = open(target, "w", encoding="utf-8", newline="\n")
                return
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        except OSError as exc:
            raise UserError(f"cannot write {path}: cannot create a file in {target.parent} "
                            f"({exc.strerror or exc})") from None
        self.target, self.temp = target, Path(temp)
        try:
            os.fchmod(fd, stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o666 & ~_umask())
        except OSError:
            pass
        self.handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def _fail(self, exc: OSError):
        if self.path is None and isinstance(exc, BrokenPipeError):
            raise _StdoutClosed() from None
        where = self.path if self.path is not None else "standard output"
        raise UserError(f"cannot write {where}: {exc.strerror or exc}") from None

    def write(self, text: str) -> None:
        try:
            self.handle.write(text)
        except OSError as exc:
            self._fail(exc)

    def flush(self) -> None:
        try:
            self.handle.flush()
        except OSError as exc:
            self._fail(exc)

    def commit(self) -> None:
        """Close (the last write errors show up here: /dev/full, a full disk) and move into place."""
        if self.wrapped:
            self.flush()
            self.handle.detach()  # leave sys.stdout usable
            return
        if self.path is None:
            self.flush()
            return
        try:
            self.handle.close()
            if self.temp is not None:
                os.replace(self.temp, self.target)
                self.temp = None
        except OSError as exc:
            self._fail(exc)

    def discard(self) -> None:
        """After a failure: drop the temporary file, never touch the target."""
        if self.wrapped:
            with contextlib.suppress(OSError, ValueError):
                self.handle.detach()
            return
        if self.path is None:
            return
        with contextlib.suppress(OSError):
            self.handle.close()
        if self.temp is not None:
            with contextlib.suppress(OSError):
                self.temp.unlink()
            self.temp = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_paths(input_path: Path | None, output_path: Path | None) -> None:
    """Refuse what cannot work before loading a model: a missing input, an output that is the input
    (same inode, through symlinks and hard links: the translation would wipe it), a missing directory."""
    if input_path is not None:
        if not os.path.lexists(input_path):
            raise UserError(f"input file not found: {input_path}")
        if not input_path.exists():
            raise UserError(f"input file not found: {input_path} (a symbolic link to a missing file)")
        if input_path.is_dir():
            raise UserError(f"input path is a directory: {input_path}")
    if output_path is None:
        return
    if output_path.is_dir():
        raise UserError(f"output path is a directory: {output_path}")
    parent = Path(os.path.realpath(output_path)).parent
    if not parent.is_dir():
        if parent.exists():
            raise UserError(f"cannot write {output_path}: {parent} is not a directory")
        raise UserError(f"output directory does not exist: {parent}")
    try:
        out_stat = os.stat(output_path)
    except OSError:
        return  # a new file
    if not stat.S_ISREG(out_stat.st_mode):
        return  # /dev/null, /dev/stdout, a FIFO: nothing to destroy
    try:
        in_stat = os.stat(input_path) if input_path is not None else os.fstat(sys.stdin.fileno())
    except (OSError, AttributeError, ValueError):
        return
    if (in_stat.st_dev, in_stat.st_ino) == (out_stat.st_dev, out_stat.st_ino):
        shown = input_path if input_path is not None else "standard input"
        raise UserError(f"output {output_path} is the input file ({shown}); writing it would destroy the "
                        f"input: choose another output file")


def _open_input(input_path: Path | None):
    if input_path is None:
        if sys.stdin is None:
            raise UserError("standard input is closed; give -i FILE")
        return sys.stdin.buffer
    try:
        return open(input_path, "rb")
    except OSError as exc:
        raise UserError(f"cannot read {input_path}: {exc.strerror or exc}") from None


def _read_errors(lines, input_path):
    """``_read_lines`` with a read error (EIO, EISDIR on an odd device…) as one line."""
    try:
        yield from lines
    except OSError as exc:
        raise UserError(f"cannot read {input_path or 'standard input'}: {exc.strerror or exc}") from None


def _record(translation) -> dict:
    return {"text": _one_line(translation.text), "score": translation.score,
            "hypotheses": [{"text": _one_line(h.text), "score": h.score} for h in translation.hypotheses]}


def _translate_stream(translator, lines, sink, options: dict, as_json: bool, replaced: list, bar) -> None:
    """Translate ``lines`` CHUNK_LINES at a time, writing each chunk's output as soon as it is done."""
    number = 0
    while True:
        chunk = []
        for text, bad in lines:
            number += 1
            if bad:
                replaced.append(number)
            chunk.append(text)
            if len(chunk) == CHUNK_LINES:
                break
        if not chunk:
            return
        for translation in translator.translate(chunk, **options):
            sink.write((json.dumps(_record(translation), ensure_ascii=False) if as_json
                        else _one_line(translation.text)) + "\n")
        sink.flush()
        if bar is not None:
            bar.update(len(chunk))


# --shortlist's help, shared with translate-corpus
SHORTLIST_HELP = ("Score only the bundle's vocabulary shortlist (`mtedge shortlist`; ct2, onnx): faster; on ct2 a "
                  "{unit}'s output may then depend on the {unit}s batched with it.")


@click.command("translate")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("-i", "--input", "input_path", type=click.Path(path_type=Path), default=None,
              help="Text file, one segment per line (default: stdin).")
@click.option("-o", "--output", "output_path", type=click.Path(path_type=Path), default=None,
              help="Where to write the translations (default: stdout).")
@click.option("--engine", default="ct2", show_default=True, help="ct2 | onnx | torch (the PyTorch reference).")
@click.option("--precision", default=None, help="Engine precision (default: int8; fp32 for torch).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda.")
@click.option("--beam", "beam_size", type=POSITIVE, default=None, help="Beam size (default: the bundle's).")
@click.option("--max-length", type=POSITIVE, default=None,
              help="Most target tokens per sentence, </s> included (default: the bundle's).")
@click.option("--length-penalty", type=FLOAT, default=None, help="HF length penalty (default: the bundle's).")
@click.option("--n-best", "num_hypotheses", type=POSITIVE, default=1, show_default=True,
              help="Hypotheses per line in --json output (at most --beam).")
@click.option("--batch-tokens", type=POSITIVE, default=None, help="Padded source tokens per engine call.")
@click.option("--threads", type=POSITIVE, default=None, help="Compute threads (default: the engine's).")
@click.option("--workers", type=POSITIVE, default=1, show_default=True,
              help="Engine calls that may run at once (CTranslate2 only).")
@click.option("--split-sentences", is_flag=True, help="Translate each sentence of a line separately.")
@click.option("--shortlist", is_flag=True, help=SHORTLIST_HELP.format(unit="line"))
@click.option("--json", "as_json", is_flag=True, help="JSON lines: text, score and the n-best hypotheses.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: on when reading a file).")
def command(bundle, input_path, output_path, engine, precision, device, beam_size, max_length, length_penalty,
            num_hypotheses, batch_tokens, threads, workers, split_sentences, shortlist, as_json, progress):
    """Translate BUNDLE's source language to its target language, one line at a time."""
    check_engine(engine)  # before any input is read
    _check_paths(input_path, output_path)

    from mtedge.translator import DEFAULT_BATCH_TOKENS, Translator, available_cpus

    cpus = available_cpus()
    for flag, value in (("--threads", threads), ("--workers", workers)):
        if value is not None and value > cpus:
            click.echo(f"warning: {flag} {value} is more than the {cpus} CPU(s) available; using {cpus}", err=True)
    threads = None if threads is None else min(threads, cpus)
    workers = min(workers, cpus)
    replaced = []
    with _one_line_warnings():
        translator = Translator(bundle, engine=engine, precision=precision, device=device, threads=threads,
                                workers=workers, batch_tokens=batch_tokens or DEFAULT_BATCH_TOKENS,
                                shortlist=shortlist)
        try:
            options = dict(beam_size=beam_size, max_length=max_length, length_penalty=length_penalty,
                           num_hypotheses=num_hypotheses, return_scores=as_json, split_sentences=split_sentences)
            translator.decode_options(beam_size, max_length, 0, length_penalty, num_hypotheses,
                                      names=FLAG_NAMES)  # fail before reading
            _run(translator, input_path, output_path, options, as_json, progress, replaced)
        finally:
            translator.close()
    if replaced:
        shown = ", ".join(map(str, replaced[:5])) + (" …" if len(replaced) > 5 else "")
        click.echo(f"warning: {len(replaced)} input line(s) were not valid UTF-8 (line {shown}); "
                   f"the bad bytes were replaced with U+FFFD", err=True)


def _run(translator, input_path, output_path, options, as_json, progress, replaced) -> None:
    source = _open_input(input_path)
    bar = None
    try:
        sink = _Sink(output_path)
    except BaseException:
        if input_path is not None:
            source.close()
        raise
    try:
        show_bar = progress if progress is not None else input_path is not None
        if show_bar:
            from tqdm import tqdm

            regular = input_path is not None and input_path.is_file()  # not a pipe or /dev/stdin
            total = _count_lines(input_path) if regular else None
            bar = tqdm(total=total, unit="line", file=sys.stderr, dynamic_ncols=True, leave=False)
        _translate_stream(translator, _read_errors(_read_lines(source), input_path), sink, options, as_json,
                          replaced, bar)
        sink.commit()
    except _StdoutClosed:
        sink.discard()
        _silence_stdout()
        raise click.exceptions.Exit(0) from None
    except BaseException:
        sink.discard()
        raise
    finally:
        if bar is not None:
            bar.close()
        if input_path is not None:
            source.close()
