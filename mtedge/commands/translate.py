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
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import click

from mtedge.errors import UserError

ENGINES = ("ct2", "onnx", "torch")
# Lines read, translated and written per round: output appears as it is ready, memory stays bounded.
CHUNK_LINES = 256


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


def _stdout():
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        return sys.stdout, False
    return io.TextIOWrapper(buffer, encoding="utf-8", newline="\n", write_through=True), True


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
@click.option("--json", "as_json", is_flag=True, help="JSON lines: text, score and the n-best hypotheses.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: on when reading a file).")
def command(bundle, input_path, output_path, engine, precision, device, beam_size, max_length, length_penalty,
            num_hypotheses, batch_tokens, threads, workers, split_sentences, as_json, progress):
    """Translate BUNDLE's source language to its target language, one line at a time."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if input_path is not None and not input_path.is_file():
        raise UserError(f"input file not found: {input_path}")
    if output_path is not None and output_path.is_dir():
        raise UserError(f"output path is a directory: {output_path}")

    from mtedge.translator import DEFAULT_BATCH_TOKENS, Translator

    translator = Translator(bundle, engine=engine, precision=precision, device=device, threads=threads,
                            workers=workers, batch_tokens=batch_tokens or DEFAULT_BATCH_TOKENS)
    options = dict(beam_size=beam_size, max_length=max_length, length_penalty=length_penalty,
                   num_hypotheses=num_hypotheses, return_scores=as_json, split_sentences=split_sentences)
    translator.decode_options(beam_size, max_length, 0, length_penalty, num_hypotheses)  # fail before reading

    source = open(input_path, "rb") if input_path is not None else sys.stdin.buffer
    if output_path is not None:
        sink, wrapped = open(output_path, "w", encoding="utf-8", newline="\n"), False
    else:
        sink, wrapped = _stdout()
    show_bar = progress if progress is not None else input_path is not None
    bar = None
    if show_bar:
        from tqdm import tqdm

        total = _count_lines(input_path) if input_path is not None else None
        bar = tqdm(total=total, unit="line", file=sys.stderr, dynamic_ncols=True, leave=False)
    replaced = []
    try:
        with _one_line_warnings():
            _translate_stream(translator, _read_lines(source), sink, options, as_json, replaced, bar)
    finally:
        if bar is not None:
            bar.close()
        if input_path is not None:
            source.close()
        if output_path is not None:
            sink.close()
        elif wrapped:
            sink.detach()  # leave sys.stdout usable
        translator.close()
    if replaced:
        shown = ", ".join(map(str, replaced[:5])) + (" …" if len(replaced) > 5 else "")
        click.echo(f"warning: {len(replaced)} input line(s) were not valid UTF-8 (line {shown}); "
                   f"the bad bytes were replaced with U+FFFD", err=True)
