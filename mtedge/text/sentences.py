"""A small rule-based sentence splitter, and the join that puts translated sentences back together.

Boundaries:
- every line break (paragraph and line structure survive a round trip);
- ``.`` ``!`` ``?`` ``…`` (and runs such as ``?!`` or ``...``), optionally followed by closing quotes or
  brackets, then whitespace, then something that can start a sentence: an upper-case or caseless
  letter, a digit, an opening quote or bracket. "e.g. this" and "3.5" therefore stay whole;
- not after a known abbreviation ("Dr.", "e.g.", "z.B.") or a single-letter initial ("J. Smith");
- ``。`` ``！`` ``？`` end a sentence with or without whitespace after them.

:func:`split_sentences` keeps the whitespace in front of each sentence, so :func:`join_segments`
restores the original layout (blank lines included) around the translations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st vs etc e.g i.e cf fig figs no nos vol vols approx inc ltd co corp dept est
jan feb mar apr jun jul aug sep sept oct nov dec mt ft gen col lt sgt capt rev hon ed eds al p pp
z.b bzw usw ca evtl ggf u.a d.h vgl nr str hr fr abs s.o s.u sog inkl zzgl bspw
""".split())

_OPENERS = "\"'“‘«‹([{¿¡„‚"
_LATIN_END = re.compile(r"[.!?…‽]+[\"'”’»›)\]]*(?=\s)")
_CJK_END = re.compile(r"[。！？]+[\"'”’」』）)]*")
_LINE_BREAK = re.compile(r"[ \t]*(?:\r\n|\r|\n)\s*")
_WORD_BEFORE = re.compile(r"(\S+)$")


@dataclass(frozen=True)
class Segment:
    text: str
    before: str = ""     # the whitespace that separated it from the previous segment ("" for the first)


def _starts_sentence(char: str) -> bool:
    return char.isdigit() or char in _OPENERS or (char.isalpha() and not char.islower())


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the ``.`` at ``text[dot]`` ends an abbreviation or an initial rather than a sentence."""
    match = _WORD_BEFORE.search(text, 0, dot)
    if not match:
        return False
    word = match.group(1).lstrip(_OPENERS).lower()
    if len(word) == 1 and word.isalpha():
        return True  # an initial: "J. Smith", "U. S."
    if re.fullmatch(r"(?:[^\W\d_]\.)+[^\W\d_]", word):
        return True  # dotted letters: "U.S", "z.B", "e.g"
    return word in ABBREVIATIONS


def _line_boundaries(line: str) -> list[int]:
    """Offsets in ``line`` where a sentence ends."""
    ends = []
    for match in _LATIN_END.finditer(line):
        end = match.end()
        rest = line[end:].lstrip()
        if not rest or not _starts_sentence(rest[0]):
            continue
        if match.group(0).startswith(".") and match.group(0).rstrip("\"'”’»›)]") == "." \
                and _is_abbreviation(line, match.start()):
            continue
        ends.append(end)
    for match in _CJK_END.finditer(line):
        if match.end() < len(line):
            ends.append(match.end())
    return sorted(set(ends))


def split_sentences(text: str) -> list[Segment]:
    """Sentences of ``text`` (stripped), each with the whitespace that preceded it."""
    segments: list[Segment] = []
    pending = ""  # whitespace waiting to be the ``before`` of the next segment
    position = 0
    pieces = []
    for match in _LINE_BREAK.finditer(text):
        pieces.append((text[position:match.start()], match.group(0)))
        position = match.end()
    pieces.append((text[position:], ""))
    for line, line_break in pieces:
        start = 0
        for end in _line_boundaries(line) + [len(line)]:
            chunk = line[start:end]
            stripped = chunk.strip()
            if stripped:
                lead = chunk[:len(chunk) - len(chunk.lstrip())]
                segments.append(Segment(stripped, (pending + lead) if segments else ""))
                pending = chunk[len(chunk.rstrip()):]
            else:
                pending += chunk
            start = end
        pending += line_break
    return segments


def _is_wide(char: str) -> bool:
    return "\u2e80" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff" or "\uff00" <= char <= "\uffef" \
        or "\u3000" <= char <= "\u303f" or "\uac00" <= char <= "\ud7af"


def join_segments(segments: list[Segment], translations: list[str]) -> str:
    """The translations laid out with the segments' original separators.

    Sentences that touched in the source (Chinese/Japanese) get a space between them when neither
    side of the join is a wide (CJK) character in the translation.
    """
    out = []
    for index, (segment, translation) in enumerate(zip(segments, translations)):
        if index:
            separator = segment.before
            previous = out[-1] if out else ""
            if not separator and previous and translation \
                    and not _is_wide(previous[-1]) and not _is_wide(translation[0]):
                separator = " "
            out.append(separator)
        out.append(translation)
    return "".join(out)
