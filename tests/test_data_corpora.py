"""The offline parts of the corpus recipes: verse clean-up, chapter hold-out, gettext extraction, and
byte-identical rebuilds. Nothing here downloads anything."""

import json
import sqlite3

import polib
import pytest

from benchmarks.corpora.bible import build_from_db, clean_verse
from benchmarks.corpora.common import clean_and_split
from benchmarks.corpora.gettext_catalogs import catalog_pairs
from benchmarks.corpora.sysmsg import PINNED, check_not_reserved, reserved
from mtedge.data import Pair, read_tsv


def test_clean_verse_removes_edition_markup():
    assert clean_verse("As an offering of first -[fruits] you shall offer") == "As an offering of first-fruits you shall offer"
    assert clean_verse("He shall offer [even] an offering to God`s altar,") == "He shall offer even an offering to God's altar,"
    assert clean_verse("preisen, daß wir uns rühmen deines Lobes! * * *") == "preisen, daß wir uns rühmen deines Lobes!"


def _tiny_bible(path, chapters=30, verses=6):
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE bible (id INTEGER, bbName TEXT, bNumber INTEGER, cNumber INTEGER, "
                   "vNumber INTEGER, vText TEXT)")
        rows = []
        for c in range(1, chapters + 1):
            for v in range(1, verses + 1):
                book = 1 + c % 3
                rows.append(("4", book, c, v, f"In chapter {c} verse {v} [the] Lord`s word came."))
                rows.append(("e", book, c, v, f"In Kapitel {c} Vers {v} kam des Herrn Wort. * * *"))
                rows.append(("k", book, c, v, f"In chapter {c}, verse {v}, came the word of the LORD."))
                rows.append(("s", book, c, v, f"Im Kapitel {c}, Vers {v}, kam das Wort des HERRN."))
                rows.append(("9", book, c, v, "another edition, ignored"))
        db.executemany("INSERT INTO bible VALUES (0, ?, ?, ?, ?, ?)", rows)
    return path


def test_bible_holds_out_whole_chapters_and_rebuilds_byte_identically(tmp_path):
    db = _tiny_bible(tmp_path / "bible.db")
    first = build_from_db(db, seed=7, out_root=tmp_path / "a", dev=12, test=18)
    second = build_from_db(db, seed=7, out_root=tmp_path / "b", dev=12, test=18)
    assert first["splits"] == second["splits"]
    assert (tmp_path / "a/bible/manifest.json").read_bytes() == (tmp_path / "b/bible/manifest.json").read_bytes()
    splits = {name: read_tsv(tmp_path / "a/bible" / f"{name}.tsv") for name in ("train", "dev", "test")}
    # train: the 150 verses outside the held-out chapters in each of the four pairings (4-e, 4-s, k-e, k-s)
    assert (len(splits["dev"]), len(splits["test"]), len(splits["train"])) == (12, 18, 600)
    chapter_of = lambda pair: int(pair.src.split()[2].rstrip(","))  # noqa: E731
    chapters = {name: {chapter_of(p) for p in pairs} for name, pairs in splits.items()}
    assert not chapters["train"] & chapters["dev"] and not chapters["train"] & chapters["test"]
    assert not chapters["dev"] & chapters["test"]
    german_chapter = lambda pair: int(pair.tgt.split()[2].rstrip(","))  # noqa: E731
    assert not {german_chapter(p) for p in splits["train"]} & (chapters["dev"] | chapters["test"])
    assert {p.src.split()[0] for p in splits["dev"] + splits["test"]} == {"In"}  # dev/test: WEB -> Elberfelder
    assert all(p.tgt.startswith("In Kapitel") for p in splits["dev"] + splits["test"])
    assert {p.tgt.split()[0] for p in splits["train"]} == {"In", "Im"}  # both German editions trained on
    assert all(sum(chapter_of(p) == c for p in splits["test"]) == 6 for c in chapters["test"])  # whole chapters
    assert splits["test"][0].src.endswith("the Lord's word came.") and "*" not in splits["test"][0].tgt
    manifest = json.loads((tmp_path / "a/bible/manifest.json").read_text())
    assert manifest["sources"]["aligned_verses"] == 180
    assert manifest["sources"]["train_pairings"]["k-s"]["kept"] == 150
    assert manifest["sources"]["train_pairings"]["2-e"]["kept"] == 0  # an edition the database lacks
    other_seed = build_from_db(db, seed=8, out_root=tmp_path / "c", dev=12, test=18)
    assert other_seed["splits"]["test"]["sha256"] != first["splits"]["test"]["sha256"]


def test_gettext_recipe_extracts_from_mo_and_keeps_sources_out_of_train(tmp_path):
    files = []
    for name, entries in {"b": [("Open", "Öffnen"), ("_Close", "_Schließen")],
                          "a": [("Open", "Aufmachen"), ("%s", "%s"), ("Quit", "Beenden")]}.items():
        po = polib.POFile()
        po.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
        for msgid, msgstr in entries:
            po.append(polib.POEntry(msgid=msgid, msgstr=msgstr))
        path = tmp_path / f"{name}.mo"
        po.save_as_mofile(str(path))
        files.append((name, path))
    pairs, records = catalog_pairs(files)
    assert [r["file"] for r in records] == ["a", "b"]  # sorted by label, whatever order they came in
    # catalogs in label order; inside a .mo, entries sorted by msgid ("Open" < "_Close")
    assert pairs == [Pair("Open", "Aufmachen"), Pair("Quit", "Beenden"), Pair("Open", "Öffnen"),
                     Pair("Close", "Schließen")]
    extra = [Pair(f"message {i}", f"Meldung {i}") for i in range(20)]
    splits, report = clean_and_split(pairs + extra, group_of=lambda p: p.src, seed=0, dev=3, test=4)
    test_sources = {p.src for p in splits.test}
    assert not test_sources & {p.src for p in splits.train + splits.dev}
    opens = [name for name, part in zip(("train", "dev", "test"), splits) for p in part if p.src == "Open"]
    assert len(opens) == 2 and len(set(opens)) == 1  # both translations of "Open" in the same split
    assert report["read"] == 24


def test_sysmsg_package_list_holds_no_reserved_package():
    assert len(PINNED) >= 110
    assert not [name for name in PINNED if reserved(name)]
    for name in ("systemd", "systemd-timesyncd", "libsystemd0", "grep", "sed", "man-db", "psmisc", "polkitd",
                 "policykit-1", "libelf1", "libpam-runtime", "avahi-daemon", "packagekit", "gnome-packagekit",
                 "appstream", "libappstream4", "libgdk-pixbuf2.0-common", "libgdk-pixbuf-2.0-0"):
        assert reserved(name), name
    assert not reserved("grepcidr") and not reserved("sedutil") and not reserved("coreutils")
    with pytest.raises(ValueError, match="grep"):
        check_not_reserved({**PINNED, "grep": "3.8-5"})
