"""Reading text files line by line with errors that name the file and the line.

``encoding_errors`` follows :func:`bytes.decode` (``"strict"``, ``"replace"``, ``"ignore"``).
With ``"strict"`` an invalid byte is a :class:`~mtedge.errors.DataError` that names the file and the
line and says how to get past it, instead of a bare ``UnicodeDecodeError`` from deep inside a loop.
"""

from __future__ import annotations

from pathlib import Path

from mtedge.errors import DataError

ENCODING_ERRORS_HINT = (
    'pass encoding_errors="replace" (CLI: --encoding-errors replace) to substitute U+FFFD for bad bytes'
)


def as_path(path, what: str = "data file") -> Path:
    """``path`` as a Path; anything that is not a path (None, a number) is a DataError, not a TypeError."""
    if isinstance(path, bytes):
        path = path.decode("utf-8", errors="surrogateescape")
    if not isinstance(path, (str, Path)) or (isinstance(path, str) and not path):
        shown = repr(path) if isinstance(path, str) else type(path).__name__
        raise DataError(f"the {what} must be a path (str or Path), got {shown}")
    return Path(path)


def require_file(path: str | Path) -> Path:
    path = as_path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not path.is_file():
        raise DataError(f"not a file: {path}")
    return path


def read_lines(path: str | Path, *, encoding_errors: str = "strict") -> list[str]:
    """The file's lines as text, without line terminators (``\\n``, ``\\r\\n``), UTF-8 with optional BOM."""
    path = require_file(path)
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    chunks = raw.split(b"\n")
    if chunks and chunks[-1] == b"":  # a final newline ends the last line; it does not start a new one
        chunks.pop()
    lines = []
    for lineno, chunk in enumerate(chunks, start=1):
        try:
            text = chunk.decode("utf-8", errors=encoding_errors)
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}:{lineno}: invalid UTF-8 (byte 0x{chunk[exc.start]:02x} at column {exc.start + 1}); "
                f"{ENCODING_ERRORS_HINT}"
            ) from None
        except LookupError:
            raise DataError(f"unknown encoding_errors={encoding_errors!r}; use 'strict', 'replace' or 'ignore'")
        lines.append(text[:-1] if text.endswith("\r") else text)
    return lines
