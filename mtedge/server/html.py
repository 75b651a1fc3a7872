"""``format=html``: translate the text between tags and keep the markup as it was.

The document is read with the standard library's ``html.parser``: every tag, comment, doctype and
processing instruction is written back verbatim (start tags exactly as they came, attributes
untouched); each text run between tags is translated on its own, its leading and trailing
whitespace kept. Character references are decoded before translation and the translation is
escaped again (``&``, ``<``, ``>``), so ``&amp;`` stays correct markup. Not translated: the contents
of ``script``/``style``/``textarea``-like raw elements, and of any element marked ``translate="no"``
or ``class="notranslate"`` (the HTML and Google conventions). A run that is only whitespace or
punctuation is kept as is.

Text split by inline tags (``Hello <b>world</b>``) is translated piece by piece, as LibreTranslate's
own translatehtml does at its simplest; the markup always survives.
"""

from __future__ import annotations

import html
from html.parser import HTMLParser

# Elements whose content is not text to translate. script/style are raw-text elements for the parser.
SKIP = {"script", "style", "noscript", "template", "code", "pre", "textarea", "svg", "math"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Splitter(HTMLParser):
    """Cuts a document into pieces: markup (kept) and text runs (``None`` placeholders, translated)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.pieces: list[str | None] = []
        self.texts: list[str] = []
        self._stack: list[tuple[str, bool]] = []   # open elements and whether each one skips its text

    def _skipping(self) -> bool:
        return any(skip for _, skip in self._stack)

    def handle_starttag(self, tag, attrs):
        self.pieces.append(self.get_starttag_text())
        if tag in VOID:
            return
        values = dict(attrs)
        skip = (tag in SKIP or (values.get("translate") or "").lower() == "no"
                or "notranslate" in (values.get("class") or "").split())
        self._stack.append((tag, skip))

    def handle_startendtag(self, tag, attrs):
        self.pieces.append(self.get_starttag_text())

    def handle_endtag(self, tag):
        self.pieces.append(f"</{tag}>")
        for depth in range(len(self._stack) - 1, -1, -1):  # close up to the matching element, if open
            if self._stack[depth][0] == tag:
                del self._stack[depth:]
                break

    def handle_data(self, data):
        if self._stack and self._stack[-1][0] in ("script", "style"):
            self.pieces.append(data)  # raw text: the parser did not decode it, so it goes back as it came
            return
        if self._skipping() or not any(ch.isalnum() for ch in data):
            self.pieces.append(html.escape(data, quote=False))
            return
        self.pieces.append(None)
        self.texts.append(data)

    def handle_comment(self, data):
        self.pieces.append(f"<!--{data}-->")

    def handle_decl(self, decl):
        self.pieces.append(f"<!{decl}>")

    def unknown_decl(self, data):
        self.pieces.append(f"<![{data}]>")

    def handle_pi(self, data):
        self.pieces.append(f"<?{data}>")


class HtmlDocument:
    """``texts``: what to translate; ``render(translations)``: the document with them in place."""

    def __init__(self, source: str):
        parser = _Splitter()
        parser.feed(source)
        parser.close()
        self._pieces = parser.pieces
        self._runs = parser.texts
        self.texts = [run.strip() for run in parser.texts]

    def render(self, translations: list[str]) -> str:
        if len(translations) != len(self.texts):
            raise ValueError(f"{len(self.texts)} text runs, {len(translations)} translations")
        out, runs = [], iter(zip(self._runs, translations))
        for piece in self._pieces:
            if piece is not None:
                out.append(piece)
                continue
            run, translation = next(runs)
            lead = run[:len(run) - len(run.lstrip())]
            trail = run[len(run.rstrip()):]
            out.append(html.escape(lead + translation + trail, quote=False))
        return "".join(out)
