"""Reading and writing parallel data: TSV, JSONL, gettext (.po/.mo), two aligned text files, and dev/test
files whose references may be missing (:func:`read_eval_pairs`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from mtedge.data.gettext import read_gettext
from mtedge.data.pairs import Pair
from mtedge.data.textio import as_path, read_lines, require_file
from mtedge.errors import DataError

FORMATS = ("tsv", "jsonl", "po", "mo", "text")
_EXTENSIONS = {".tsv": "tsv", ".jsonl": "jsonl", ".po": "po", ".mo": "mo"}


def detect_format(path: str | Path, target_path: str | Path | None = None) -> str:
    """The format named by the file extension; two files (``target_path`` given) are aligned plain text."""
    if target_path is not None:
        return "text"
    suffix = Path(path).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise DataError(
        f"cannot tell the format of {path} from its extension {suffix or '(none)'!r}: use .tsv, .jsonl, "
        f".po or .mo, pass fmt=one of {FORMATS}, or give a target file for two aligned text files"
    )


def read_pairs(
    path: str | Path, *, fmt: str | None = None, target_path: str | Path | None = None,
    src_key: str = "src", tgt_key: str = "tgt", encoding_errors: str = "strict",
) -> list[Pair]:
    """Read parallel pairs as they are in the file (no cleaning; see :func:`mtedge.data.load_pairs`).

    Formats (``fmt``; by default from the extension):
    - ``tsv``: ``source<TAB>target`` per line; blank lines are skipped.
    - ``jsonl``: one JSON object per line with string fields ``src_key`` and ``tgt_key``.
    - ``po`` / ``mo``: gettext catalogs (see :mod:`mtedge.data.gettext` for which entries count).
    - ``text``: ``path`` is the source file and ``target_path`` the target file, aligned line by line.
    """
    path = as_path(path)
    if target_path is not None:
        target_path = as_path(target_path, "target file")
    if fmt is not None and not isinstance(fmt, str):
        raise DataError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    fmt = (fmt or detect_format(path, target_path)).lower()
    if fmt == "tsv":
        return read_tsv(path, encoding_errors=encoding_errors)
    if fmt == "jsonl":
        return read_jsonl(path, src_key=src_key, tgt_key=tgt_key, encoding_errors=encoding_errors)
    if fmt in ("po", "mo"):
        return read_gettext(path, fmt=fmt, encoding_errors=encoding_errors)
    if fmt == "text":
        if target_path is None:
            raise DataError(f"fmt='text' needs target_path: the file aligned line by line with {path}")
        return read_aligned_text(path, target_path, encoding_errors=encoding_errors)
    raise DataError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}")


def read_tsv(path: str | Path, *, encoding_errors: str = "strict") -> list[Pair]:
    """``source<TAB>target`` lines. A line without exactly one tab is an error naming file and line."""
    pairs = []
    for lineno, line in enumerate(read_lines(path, encoding_errors=encoding_errors), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            found = "no tab" if len(fields) == 1 else f"{len(fields)} tab-separated columns"
            raise DataError(f"{path}:{lineno}: expected 'source<TAB>target', found {found}")
        pairs.append(Pair(fields[0], fields[1]))
    return pairs


def _one_line(text: str) -> str:
    # A tab or newline inside a sentence would break the TSV's shape; they carry no meaning in a sentence.
    return " ".join(text.split())


def _surrogate_at(text: str) -> int | None:
    """Index of the first lone UTF-16 surrogate in ``text`` (not valid Unicode text; cannot be written as
    UTF-8), or None."""
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            return i
    return None


def write_tsv(pairs: Iterable[Pair], path: str | Path) -> Path:
    """Write ``source<TAB>target`` lines (UTF-8, ``\\n``); whitespace runs inside the text become one space."""
    path = as_path(path, "output file")
    lines = []
    for row, pair in enumerate(pairs, start=1):
        src, tgt = pair
        if not isinstance(src, str) or not isinstance(tgt, str):
            raise DataError(f"cannot write {path}: pair {row} is not two strings ({type(src).__name__}, "
                            f"{type(tgt).__name__})")
        for side, text in (("source", src), ("target", tgt)):
            if (at := _surrogate_at(text)) is not None:
                raise DataError(f"cannot write {path}: pair {row}'s {side} has a lone surrogate "
                                f"(U+{ord(text[at]):04X} at character {at + 1}), which is not valid Unicode text")
        lines.append(f"{_one_line(src)}\t{_one_line(tgt)}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)
    return path


def _json_object(line: str, path, lineno: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        # json's messages can end in "at" ("Unterminated string starting at"): don't say "at at"
        message = exc.msg[:-3] if exc.msg.endswith(" at") else exc.msg
        raise DataError(f"{path}:{lineno}: not valid JSON ({message} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, found {type(record).__name__}")
    return record


def read_jsonl(
    path: str | Path, *, src_key: str = "src", tgt_key: str = "tgt", encoding_errors: str = "strict",
) -> list[Pair]:
    """One JSON object per line carrying ``src_key`` and ``tgt_key`` strings; blank lines are skipped."""
    pairs = []
    for lineno, line in enumerate(read_lines(path, encoding_errors=encoding_errors), start=1):
        if not line.strip():
            continue
        record = _json_object(line, path, lineno)
        missing = [key for key in (src_key, tgt_key) if key not in record]
        if missing:
            raise DataError(
                f"{path}:{lineno}: missing key(s) {', '.join(map(repr, missing))} "
                f"(src_key={src_key!r}, tgt_key={tgt_key!r}; the line has {sorted(record)})"
            )
        src, tgt = record[src_key], record[tgt_key]
        if not isinstance(src, str) or not isinstance(tgt, str):
            raise DataError(f"{path}:{lineno}: {src_key!r} and {tgt_key!r} must be strings")
        for key, text in ((src_key, src), (tgt_key, tgt)):
            if (at := _surrogate_at(text)) is not None:
                raise DataError(f"{path}:{lineno}: {key!r} has a lone surrogate (\\u{ord(text[at]):04x} at "
                                f"character {at + 1}), which is not valid Unicode text")
        pairs.append(Pair(src, tgt))
    return pairs


def read_aligned_text(
    source_path: str | Path, target_path: str | Path, *, encoding_errors: str = "strict",
) -> list[Pair]:
    """Two plain-text files, line i of one translating line i of the other."""
    require_file(source_path)
    require_file(target_path)
    sources = read_lines(source_path, encoding_errors=encoding_errors)
    targets = read_lines(target_path, encoding_errors=encoding_errors)
    if len(sources) != len(targets):
        raise DataError(
            f"aligned files differ in length: {source_path} has {len(sources)} lines, "
            f"{target_path} has {len(targets)} lines"
        )
    return [Pair(s, t) for s, t in zip(sources, targets)]


# Evaluation files name their fields in more ways than training data: ours, the short forms, and the HF
# datasets layout ({"translation": {"en": ..., "de": ...}}); the first key present wins.
EVAL_SOURCE_KEYS = ("source", "src", "en")
EVAL_REFERENCE_KEYS = ("target", "tgt", "ref", "reference", "de")


def read_eval_pairs(path: str | Path, *, encoding_errors: str = "strict") -> list[tuple[str, str | None]]:
    """(source, reference or None) rows of a dev/test file, where a reference may be missing.

    - ``.jsonl`` / ``.json``: one JSON object per line, fields named by :data:`EVAL_SOURCE_KEYS` and
      :data:`EVAL_REFERENCE_KEYS`, at the top level or inside ``"translation"``;
    - anything else: ``source[<TAB>reference[<TAB>...]]`` lines (further columns are ignored).

    Blank lines are skipped; an empty reference is None.
    """
    path = as_path(path)
    as_json = path.suffix.lower() in {".jsonl", ".json"}
    rows = []
    for lineno, line in enumerate(read_lines(path, encoding_errors=encoding_errors), start=1):
        if not line.strip():
            continue
        if not as_json:
            src, _, ref = line.partition("\t")
            rows.append((src, ref.split("\t")[0] or None))
            continue
        record = _json_object(line, path, lineno)
        if isinstance(record.get("translation"), dict):
            record = record["translation"]
        src = next((record[k] for k in EVAL_SOURCE_KEYS if k in record), None)
        ref = next((record[k] for k in EVAL_REFERENCE_KEYS if k in record), None)
        if src is None:
            raise DataError(f"{path}:{lineno}: no source field (expected one of {', '.join(EVAL_SOURCE_KEYS)})")
        if not isinstance(src, str) or not isinstance(ref, (str, type(None))):
            raise DataError(f"{path}:{lineno}: the source and the reference must be strings")
        rows.append((src, ref or None))
    return rows
