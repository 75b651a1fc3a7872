"""Parallel pairs from gettext catalogs (``.po`` / ``.mo``), read with polib.

What becomes a pair:
- ``msgid -> msgstr`` of every translated entry. Skipped: the header, fuzzy, obsolete and untranslated
  entries (an empty ``msgstr``), and entries with no words on either side once placeholders are removed
  (``"%s: %s"``, ``"(%d)"``, ``"{0}"``) — there is nothing to translate in them.
- Plurals: ``msgid -> msgstr_plural[0]`` and ``msgid_plural -> msgstr_plural[1]`` (the German singular and
  plural forms; a missing or empty form is skipped).
- ``msgctxt`` is ignored for the pair; entries that differ only by context all become pairs (deduplicate
  later with :func:`mtedge.data.clean_pairs`).
- Placeholders (``%s``, ``%d``, ``%1$s``, ``%(name)s``, ``{name}``) stay as they are: the model must learn to
  copy them.
- Keyboard accelerators (``_File``, ``&File``) are removed only when the same marker style appears exactly
  once on both sides, unless the word is copied verbatim and does not start with ``_`` + capital (so
  ``max_connections``-style identifiers that the translation keeps are left alone, ``_Private`` is not).
- Newlines and tabs inside a message collapse to single spaces.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from mtedge.data.clean import normalize_text
from mtedge.data.pairs import Pair
from mtedge.errors import DataError

# printf-style (%s, %-10.3ld, %1$s, %(name)s, %%), brace-style ({0}, {name}, {name!r:>10}), shell ${VAR}.
PLACEHOLDER = re.compile(
    r"%(?:\([A-Za-z_][A-Za-z0-9_]*\)|\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t)?"
    r"[diouxXeEfFgGaAcspnm%]"
    r"|\{[A-Za-z0-9_.\[\]]*(?:![rsa])?(?::[^{}]*)?\}"
    r"|\$\{[A-Za-z_][A-Za-z0-9_]*\}"
)
ACCELERATOR_MARKERS = ("_", "&")
_HTML_ENTITY = re.compile(r"&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z]+);")


def has_words(text: str) -> bool:
    """True when a letter is left once placeholders are removed."""
    return any(ch.isalpha() for ch in PLACEHOLDER.sub(" ", text))


def _accelerator_positions(text: str, marker: str) -> list[int]:
    masked = _HTML_ENTITY.sub(lambda m: " " * len(m.group()), text) if marker == "&" else text
    positions = []
    for i, ch in enumerate(masked):
        if ch != marker or i + 1 >= len(masked):
            continue
        nxt, prev = masked[i + 1], masked[i - 1] if i else ""
        if nxt.isalnum() and prev != marker:  # "__" is gettext/GTK's escaped literal underscore
            positions.append(i)
    return positions


def _word_at(text: str, i: int) -> str:
    start = i
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    end = i
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[start:end]


def _starts_capitalized(text: str, i: int) -> bool:
    return (i == 0 or not text[i - 1].isalnum()) and text[i + 1].isupper()


def strip_accelerators(src: str, tgt: str) -> tuple[str, str]:
    """Remove one keyboard-mnemonic marker from each side when both sides carry one of the same style."""
    for marker in ACCELERATOR_MARKERS:
        at_src, at_tgt = _accelerator_positions(src, marker), _accelerator_positions(tgt, marker)
        if len(at_src) != 1 or len(at_tgt) != 1:
            continue
        word_src, word_tgt = _word_at(src, at_src[0]), _word_at(tgt, at_tgt[0])
        if word_src == word_tgt and not _starts_capitalized(src, at_src[0]):
            continue  # copied verbatim (max_connections): an identifier, not a mnemonic; "_Private" is one
        src = src[: at_src[0]] + src[at_src[0] + 1:]
        tgt = tgt[: at_tgt[0]] + tgt[at_tgt[0] + 1:]
    return src, tgt


def _entry_pairs(entry) -> list[tuple[str, str]]:
    if entry.msgid_plural:
        forms = entry.msgstr_plural or {}
        candidates = [(entry.msgid, forms.get(0, "")), (entry.msgid_plural, forms.get(1, ""))]
    else:
        candidates = [(entry.msgid, entry.msgstr)]
    return [(s, t) for s, t in candidates if s and t]


def catalog_pairs(catalog) -> list[Pair]:
    """Pairs from an open polib catalog (``POFile`` or ``MOFile``), in file order."""
    pairs = []
    for entry in catalog:
        if not entry.msgid or entry.obsolete or "fuzzy" in entry.flags:
            continue
        for src, tgt in _entry_pairs(entry):
            src, tgt = strip_accelerators(normalize_text(src), normalize_text(tgt))
            if has_words(src) and has_words(tgt):
                pairs.append(Pair(src, tgt))
    return pairs


def _polib():
    try:
        import polib
    except ImportError:  # polib is the optional `data` extra
        raise DataError("reading .po/.mo files needs polib: pip install 'mtedge[data]'") from None
    return polib


def _mofile_lenient(polib, path: Path, errors: str):
    """A ``.mo`` catalog whose bad bytes are decoded with ``errors`` (``"replace"``/``"ignore"``).

    polib has no errors= option and a ``.mo`` has no lines to hand it as text. Latin-1 maps every byte to
    one character and back, so: parse as Latin-1 (never fails), then decode each string's original bytes
    with the catalog's declared charset.
    """
    charset = polib.detect_encoding(str(path), True)
    catalog = polib.mofile(str(path), encoding="latin-1")

    def redecode(text: str) -> str:
        return text.encode("latin-1").decode(charset, errors=errors)

    for entry in catalog:
        entry.msgid, entry.msgstr = redecode(entry.msgid), redecode(entry.msgstr)
        entry.msgid_plural = redecode(entry.msgid_plural)
        entry.msgstr_plural = {k: redecode(v) for k, v in (entry.msgstr_plural or {}).items()}
    return catalog


_MO_MAGIC = {b"\xde\x12\x04\x95": "<", b"\x95\x04\x12\xde": ">"}
_PO_KEYWORD = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?)\s+(.*)$')


def check_mo(path: Path) -> None:
    """A DataError for a ``.mo`` file whose header or string tables point past its end (truncated) —
    polib would read such a file without complaint, cutting the last strings short."""
    data = path.read_bytes()
    order = _MO_MAGIC.get(data[:4])
    if order is None:
        raise DataError(f"{path}: not a readable gettext mo file: bad magic number")
    if len(data) < 20:
        raise DataError(f"{path}: not a readable gettext mo file: truncated ({len(data)} bytes, shorter "
                        f"than its header)")
    count, originals, translations = struct.unpack(f"{order}3I", data[8:20])
    for table in (originals, translations):
        if table + 8 * count > len(data):
            raise DataError(f"{path}: not a readable gettext mo file: truncated (its string table ends "
                            f"past the file's {len(data)} bytes)")
        for i in range(count):
            length, offset = struct.unpack(f"{order}2I", data[table + 8 * i: table + 8 * i + 8])
            if offset + length > len(data):  # a missing final NUL loses nothing; a cut string does
                raise DataError(f"{path}: not a readable gettext mo file: truncated (string {i + 1} of "
                                f"{count} ends past the file's {len(data)} bytes)")


def _po_string_end(text: str) -> int | None:
    """Index just past the closing quote of the C string ``text`` starts with, or None if unterminated."""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    return None


def check_po_strings(path: Path, lines: list[str]) -> None:
    """A DataError naming the line of a message string without its closing quote: polib reads
    ``msgid "Open file`` as ``Open fil`` (it drops the last character) instead of failing."""
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = _PO_KEYWORD.match(text)
        rest = match.group(2) if match else text
        if not rest.startswith('"'):
            continue  # not a string line; polib reports the syntax itself
        end = _po_string_end(rest)
        if end is None:
            raise DataError(f"{path}:{lineno}: unterminated string (no closing \" on the line)")


def read_gettext(path: str | Path, *, fmt: str | None = None, encoding_errors: str = "strict") -> list[Pair]:
    """Pairs from a ``.po`` or ``.mo`` file (``fmt`` = ``"po"``/``"mo"``, else taken from the extension)."""
    from mtedge.data.textio import ENCODING_ERRORS_HINT, read_lines, require_file

    polib = _polib()
    path = require_file(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    try:
        if fmt == "mo":
            check_mo(path)
        else:
            check_po_strings(path, read_lines(path, encoding_errors="replace"))
        if fmt == "mo" and encoding_errors != "strict":
            catalog = _mofile_lenient(polib, path, encoding_errors)
        elif fmt == "mo":
            catalog = polib.mofile(str(path))
        elif polib.detect_encoding(str(path)).lower().replace("_", "-") not in ("utf-8", "utf8"):
            catalog = polib.pofile(str(path))  # a legacy charset declared in the header: polib decodes it
        elif encoding_errors == "strict":
            read_lines(path)  # a bad byte becomes a DataError with its line number
            catalog = polib.pofile(str(path), encoding="utf-8")
        else:
            # polib has no errors= option: decode here and hand it the text
            catalog = polib.pofile("\n".join(read_lines(path, encoding_errors=encoding_errors)) + "\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid text in the catalog ({exc.reason}); {ENCODING_ERRORS_HINT}") from None
    except (OSError, ValueError, struct.error, IndexError) as exc:
        raise DataError(f"{path}: not a readable gettext {fmt} file: {exc}") from None
    return catalog_pairs(catalog)
