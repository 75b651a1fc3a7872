"""The corpus input: its rows, numbered, cut into fixed shards.

A row is one line of a text, TSV or JSONL file — blank lines included, they are rows whose translation
is blank — or one row of a Parquet file. Rows are numbered from 1 (the line number, for line files);
that number is the row's id in shard files, error messages and JSONL/Parquet output. Shard k holds
rows ``k*S+1 .. (k+1)*S``: the boundaries depend only on the input and S, so a re-run finds the same
shards.

Lines end at ``\\n`` only (``\\r\\n`` is accepted), as in ``mtedge translate``, so a line-break
character inside a segment cannot shift the rows. A UTF-8 BOM at the start of the file is dropped.

A malformed row (bytes that are not UTF-8, a TSV row without the column, a JSONL line that is not a
JSON object with a string under the key, a Parquet null) has an error message and an empty text; the
caller decides whether that stops the run or becomes an empty translation.

Pure Python (pyarrow for Parquet only, imported when a Parquet file is read): ``scan`` runs on the
driver, ``read_shard`` in Ray's read tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mtedge.errors import UserError

FORMATS = ("text", "tsv", "jsonl", "parquet")
_EXTENSIONS = {".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
_BOM = b"\xef\xbb\xbf"
# Malformed rows kept for the error message and the report; the rest are only counted.
KEEP_MALFORMED = 20


def detect_format(path: Path) -> str:
    """``.tsv``, ``.jsonl``, ``.parquet`` by extension; anything else is text, one segment a line."""
    return _EXTENSIONS.get(Path(path).suffix.lower(), "text")


@dataclass(frozen=True)
class InputSpec:
    """What to read: ``field`` is the 0-based TSV column, or the JSONL key / Parquet column."""

    path: str
    fmt: str
    field: int | str | None = None

    @classmethod
    def make(cls, path: Path, fmt: str | None, field_name: str | None) -> "InputSpec":
        fmt = fmt or detect_format(path)
        if fmt not in FORMATS:
            raise UserError(f"unknown input format {fmt!r}; choose from {', '.join(FORMATS)}")
        if fmt == "text":
            if field_name is not None:
                raise UserError("--field is for TSV, JSONL and Parquet input; a text file is one segment a line")
            return cls(os.path.abspath(path), fmt, None)
        if fmt == "tsv":
            text = "1" if field_name is None else field_name
            if not text.isdigit() or int(text) < 1:
                raise UserError(f"--field for TSV input is a column number (1 = the first), got {text!r}")
            return cls(os.path.abspath(path), fmt, int(text) - 1)
        if field_name is not None and not field_name:
            raise UserError("--field must not be empty")
        return cls(os.path.abspath(path), fmt, field_name or "text")

    def describe(self) -> str:
        if self.fmt == "text":
            return "text, one segment a line"
        if self.fmt == "tsv":
            return f"TSV, column {self.field + 1}"
        return f"{'JSONL key' if self.fmt == 'jsonl' else 'Parquet column'} {self.field!r}"


@dataclass(frozen=True)
class Shard:
    index: int
    first_row: int      # the id of its first row
    rows: int
    start: int          # byte offset (line files) or 0-based row offset (Parquet)
    end: int            # exclusive
    input_sha256: str   # of its input: a resumed run reuses the shard only if this still matches

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"

    @property
    def ids(self) -> range:
        return range(self.first_row, self.first_row + self.rows)


@dataclass
class Scan:
    shards: list[Shard]
    rows: int
    blank: int
    malformed: list[tuple[int, str]] = field(default_factory=list)  # the first KEEP_MALFORMED
    malformed_count: int = 0

    def note(self, row: int, text: str, error: str | None) -> None:
        if error is not None:
            self.malformed_count += 1
            if len(self.malformed) < KEEP_MALFORMED:
                self.malformed.append((row, error))
        elif not text.strip():
            self.blank += 1


class InputChanged(UserError):
    """A shard's input is not what the driver scanned (edited during the run, or another file at that
    path on a worker node)."""


# -- rows ------------------------------------------------------------------------------------------
def parse_line(raw: bytes, spec: InputSpec, first: bool = False) -> tuple[str, str | None]:
    """(segment, error) of one line; a malformed line gives ``("", message)``."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if first and raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
    if spec.fmt == "text":
        return line, None
    if not line.strip():
        return "", None  # a blank line stays a (blank) row in every line format: alignment first
    if spec.fmt == "tsv":
        cells = line.split("\t")
        if spec.field >= len(cells):
            return "", f"no column {spec.field + 1} (the row has {len(cells)} tab-separated column(s))"
        return cells[spec.field], None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return "", f"invalid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(record, dict):
        return "", f"not a JSON object but {_json_kind(record)}"
    if spec.field not in record:
        keys = ", ".join(repr(k) for k in list(record)[:5]) + (", …" if len(record) > 5 else "")
        return "", f"no key {spec.field!r} (keys: {keys or 'none'})"
    value = record[spec.field]
    if not isinstance(value, str):
        return "", f"{spec.field!r} is {_json_kind(value)}, not a string"
    return value, None


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _value(value, spec: InputSpec) -> tuple[str, str | None]:
    """(segment, error) of one Parquet value (the column's type was checked by ``scan``)."""
    if value is None:
        return "", f"{spec.field!r} is null"
    return value, None


def _value_digest(digest, value: str | None) -> None:
    # Length-prefixed, so that ("ab", "c") and ("a", "bc") hash differently; a null is its own mark.
    if value is None:
        digest.update(b"\x00N")
    else:
        data = value.encode("utf-8", errors="surrogatepass")
        digest.update(b"\x00S%d:" % len(data) + data)


# -- scanning (the driver) -------------------------------------------------------------------------
def scan(spec: InputSpec, shard_rows: int) -> Scan:
    """Rows, shards (with input hashes) and malformed rows of the whole input, in one pass."""
    try:
        return _scan_parquet(spec, shard_rows) if spec.fmt == "parquet" else _scan_lines(spec, shard_rows)
    except OSError as exc:
        raise UserError(f"cannot read {spec.path}: {exc.strerror or exc}") from None


def _scan_lines(spec: InputSpec, shard_rows: int) -> Scan:
    result = Scan([], 0, 0)
    start = offset = count = 0
    digest = hashlib.sha256()
    with open(spec.path, "rb") as handle:
        for raw in handle:
            result.rows += 1
            text, error = parse_line(raw, spec, first=result.rows == 1)
            result.note(result.rows, text, error)
            digest.update(raw)
            offset += len(raw)
            count += 1
            if count == shard_rows:
                result.shards.append(Shard(len(result.shards), result.rows - count + 1, count, start, offset,
                                           digest.hexdigest()))
                start, count, digest = offset, 0, hashlib.sha256()
    if count:
        result.shards.append(Shard(len(result.shards), result.rows - count + 1, count, start, offset,
                                   digest.hexdigest()))
    return result


def _parquet_file(spec: InputSpec):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(spec.path)
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        raise UserError(f"{spec.path} is not a readable Parquet file: {exc}") from None
    schema = parquet.schema_arrow
    if spec.field not in schema.names:
        shown = ", ".join(repr(n) for n in schema.names[:10]) + (", …" if len(schema.names) > 10 else "")
        raise UserError(f"{spec.path} has no column {spec.field!r} (columns: {shown}); choose one with --field")
    kind = schema.field(spec.field).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
        raise UserError(f"{spec.path}: column {spec.field!r} holds {kind}, not strings")
    return parquet


def _scan_parquet(spec: InputSpec, shard_rows: int) -> Scan:
    parquet = _parquet_file(spec)
    result = Scan([], 0, 0)
    count = 0
    digest = hashlib.sha256()
    for batch in parquet.iter_batches(columns=[spec.field], batch_size=65536):
        for value in batch.column(0).to_pylist():
            result.rows += 1
            text, error = _value(value, spec)
            result.note(result.rows, text, error)
            _value_digest(digest, value)
            count += 1
            if count == shard_rows:
                first = result.rows - count + 1
                result.shards.append(Shard(len(result.shards), first, count, first - 1, result.rows,
                                           digest.hexdigest()))
                count, digest = 0, hashlib.sha256()
    if count:
        first = result.rows - count + 1
        result.shards.append(Shard(len(result.shards), first, count, first - 1, result.rows, digest.hexdigest()))
    return result


# -- reading one shard (a Ray read task) -----------------------------------------------------------
def read_shard(spec: InputSpec, shard: Shard) -> tuple[list[str], list[str | None]]:
    """(texts, errors) of the shard's rows, in row order; its input must hash as it did in ``scan``."""
    if spec.fmt == "parquet":
        values = _read_parquet_rows(spec, shard)
        digest = hashlib.sha256()
        for value in values:
            _value_digest(digest, value)
        parsed = [_value(value, spec) for value in values]
    else:
        with open(spec.path, "rb") as handle:
            handle.seek(shard.start)
            data = handle.read(shard.end - shard.start)
        digest = hashlib.sha256(data)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the shard's last line ended with a line break
        parsed = [parse_line(raw, spec, first=shard.start == 0 and n == 0) for n, raw in enumerate(lines)]
    if digest.hexdigest() != shard.input_sha256 or len(parsed) != shard.rows:
        raise InputChanged(f"{spec.path} rows {shard.first_row}-{shard.first_row + shard.rows - 1} are not what "
                           f"was scanned at the start (the file changed, or another file has this path "
                           f"on a worker node); run again")
    return [text for text, _ in parsed], [error for _, error in parsed]


def _read_parquet_rows(spec: InputSpec, shard: Shard) -> list:
    parquet = _parquet_file(spec)
    groups, first_offset, offset = [], None, 0
    for group in range(parquet.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        if offset < shard.end and offset + size > shard.start:
            groups.append(group)
            first_offset = offset if first_offset is None else first_offset
        offset += size
    if not groups:
        return []
    table = parquet.read_row_groups(groups, columns=[spec.field])
    return table.column(0).slice(shard.start - first_offset, shard.end - shard.start).to_pylist()
