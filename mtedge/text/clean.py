"""Input cleaning before tokenization.

- Control characters (Unicode category Cc) are removed; the ones that separate words (tab, line
  breaks, form feed, the C1 next-line…) become a space, so words on either side stay apart.
  A segment is one line of text to the model; sentencepiece would keep some of them as pieces.
- A leading byte-order mark is dropped.
- Lone UTF-16 surrogates (from ``surrogateescape`` decoding or broken JSON) cannot be encoded
  as UTF-8 and would crash sentencepiece; each becomes U+FFFD.
"""

from __future__ import annotations

import re
import unicodedata

_SEPARATING_CONTROLS = "\t\n\v\f\r\x1c\x1d\x1e\x1f\x85"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _control_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for code in list(range(0x00, 0x20)) + list(range(0x7F, 0xA0)):
        if unicodedata.category(chr(code)) == "Cc":
            table[code] = " " if chr(code) in _SEPARATING_CONTROLS else None
    return table


_CONTROLS = _control_table()


def clean_text(text: str) -> str:
    """``text`` without control characters, BOM or lone surrogates (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    text = text.translate(_CONTROLS)
    if text.startswith("\ufeff"):
        text = text[1:]
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text


def is_blank(text: str) -> bool:
    """Empty or whitespace only: translated to an empty string without calling the engine."""
    return not text or text.isspace()
