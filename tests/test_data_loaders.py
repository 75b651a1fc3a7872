"""mtedge.data readers: every format, and every kind of bad input, on files built in tmp_path."""

import json

import polib
import pytest

from mtedge.data import DataError, Pair, load_pairs, read_eval_pairs, read_pairs, read_tsv, write_tsv


def test_tsv_round_trip_normalizes_tabs_and_newlines(tmp_path):
    pairs = [Pair("Hello\tworld", "Hallo\nWelt"), Pair("Good  night", "Gute Nacht")]
    path = write_tsv(pairs, tmp_path / "c.tsv")
    assert path.read_text(encoding="utf-8") == "Hello world\tHallo Welt\nGood night\tGute Nacht\n"
    assert read_tsv(path) == [Pair("Hello world", "Hallo Welt"), Pair("Good night", "Gute Nacht")]
    assert read_pairs(path) == read_tsv(path)


def test_tsv_skips_blank_lines_and_handles_crlf_and_bom(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes("\ufeffa\tb\r\n\r\nc\td\r\n".encode())
    assert read_pairs(path) == [Pair("a", "b"), Pair("c", "d")]


def test_pair_unpacks_as_source_and_target():
    # the bench and other callers iterate `for src, tgt in load_pairs(...)`
    src, tgt = Pair("Hello", "Hallo")
    assert (src, tgt) == ("Hello", "Hallo") and Pair("a", "b").tgt == "b"
    assert len({Pair("a", "b"), Pair("a", "b")}) == 1


def test_jsonl_with_custom_keys(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [{"en": "One", "de": "Eins", "id": 1}, {"en": "Two", "de": "Zwei"}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n", encoding="utf-8")
    assert read_pairs(path, src_key="en", tgt_key="de") == [Pair("One", "Eins"), Pair("Two", "Zwei")]


def _catalog() -> polib.POFile:
    po = polib.POFile()
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8", "Plural-Forms": "nplurals=2; plural=(n != 1);"}
    po.append(polib.POEntry(msgid="Open file %s", msgstr="Datei %s öffnen"))
    po.append(polib.POEntry(msgid="_Save", msgstr="_Speichern"))                       # GTK mnemonic
    po.append(polib.POEntry(msgid="&Quit", msgstr="&Beenden"))                         # Qt mnemonic
    po.append(polib.POEntry(msgid="_Print", msgstr="Drucken"))                         # only one side: keep
    po.append(polib.POEntry(msgid="set max_connections", msgstr="max_connections setzen"))  # identifier
    po.append(polib.POEntry(msgid="Show _Private Items", msgstr="_Private Elemente zeigen"))  # kept word
    po.append(polib.POEntry(msgid="Fi_le", msgstr="_Datei"))                           # mid-word mnemonic
    po.append(polib.POEntry(msgid="Tom &amp; &Jerry", msgstr="Tom &amp; &Jerry"))      # entity is no mnemonic
    po.append(polib.POEntry(msgid="Hello {name}, %(count)d new", msgstr="Hallo {name}, %(count)d neu"))
    po.append(polib.POEntry(msgid="Line one\nline two\n", msgstr="Zeile eins\nZeile zwei\n"))
    po.append(polib.POEntry(msgid="%s: %s", msgstr="%s: %s"))                          # only placeholders
    po.append(polib.POEntry(msgid="(%d)", msgstr="(%d)"))
    po.append(polib.POEntry(msgid="Untranslated", msgstr=""))
    po.append(polib.POEntry(msgid="Fuzzy one", msgstr="Unscharf", flags=["fuzzy"]))
    po.append(polib.POEntry(msgid="Gone", msgstr="Weg", obsolete=True))
    po.append(polib.POEntry(msgid="%d file", msgid_plural="%d files", msgstr_plural={0: "%d Datei", 1: "%d Dateien"}))
    po.append(polib.POEntry(msgid="May", msgstr="Mai", msgctxt="month"))
    po.append(polib.POEntry(msgid="May", msgstr="Mai", msgctxt="short month"))
    return po


EXPECTED_CATALOG = [
    Pair("Open file %s", "Datei %s öffnen"),
    Pair("Save", "Speichern"),
    Pair("Quit", "Beenden"),
    Pair("_Print", "Drucken"),
    Pair("set max_connections", "max_connections setzen"),
    Pair("Show Private Items", "Private Elemente zeigen"),
    Pair("File", "Datei"),
    Pair("Tom &amp; Jerry", "Tom &amp; Jerry"),
    Pair("Hello {name}, %(count)d new", "Hallo {name}, %(count)d neu"),
    Pair("Line one line two", "Zeile eins Zeile zwei"),
    Pair("%d file", "%d Datei"),
    Pair("%d files", "%d Dateien"),
    Pair("May", "Mai"),
    Pair("May", "Mai"),
]


def test_po_catalog(tmp_path):
    path = tmp_path / "de.po"
    _catalog().save(str(path))
    assert read_pairs(path) == EXPECTED_CATALOG


def test_mo_catalog(tmp_path):
    path = tmp_path / "de.mo"
    _catalog().save_as_mofile(str(path))  # .mo drops fuzzy/obsolete entries itself and sorts by msgid
    assert sorted(read_pairs(path), key=repr) == sorted(EXPECTED_CATALOG, key=repr)


def test_context_duplicates_are_removed_by_cleaning(tmp_path):
    path = tmp_path / "de.po"
    _catalog().save(str(path))
    assert load_pairs(path).count(Pair("May", "Mai")) == 1


def test_aligned_text_files(tmp_path):
    (tmp_path / "a.en").write_text("One\nTwo\n", encoding="utf-8")
    (tmp_path / "a.de").write_text("Eins\nZwei", encoding="utf-8")  # no final newline: still two lines
    assert read_pairs(tmp_path / "a.en", target_path=tmp_path / "a.de") == [Pair("One", "Eins"), Pair("Two", "Zwei")]


# --- bad input -------------------------------------------------------------------------------------------

def test_mismatched_line_counts_name_both_files_and_counts(tmp_path):
    (tmp_path / "a.en").write_text("One\nTwo\nThree\n", encoding="utf-8")
    (tmp_path / "a.de").write_text("Eins\nZwei\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_pairs(tmp_path / "a.en", target_path=tmp_path / "a.de")
    message = str(err.value)
    assert "a.en" in message and "a.de" in message and "3 lines" in message and "2 lines" in message


def test_invalid_utf8_names_file_line_and_the_way_out(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes(b"a\tb\nc\td\xff\n")
    with pytest.raises(DataError) as err:
        read_pairs(path)
    message = str(err.value)
    assert f"{path}:2" in message and 'encoding_errors="replace"' in message and "--encoding-errors replace" in message
    assert read_pairs(path, encoding_errors="replace") == [Pair("a", "b"), Pair("c", "d\ufffd")]


def test_invalid_utf8_in_po(tmp_path):
    path = tmp_path / "de.po"
    _catalog().save(str(path))
    path.write_bytes(path.read_bytes().replace("öffnen".encode(), b"\xf6ffnen"))
    with pytest.raises(DataError, match=r"de\.po:\d+: invalid UTF-8"):
        read_pairs(path)
    assert Pair("Open file %s", "Datei %s \ufffdffnen") in read_pairs(path, encoding_errors="replace")


def test_invalid_utf8_in_jsonl_and_aligned_text(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_bytes(b'{"src": "a", "tgt": "b"}\n{"src": "\xff", "tgt": "c"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:2: invalid UTF-8 \(byte 0xff"):
        read_pairs(jsonl)
    assert read_pairs(jsonl, encoding_errors="replace")[1] == Pair("\ufffd", "c")
    (tmp_path / "a.en").write_text("One\nTwo\n", encoding="utf-8")
    (tmp_path / "a.de").write_bytes(b"Eins\nZw\xe9i\n")  # Latin-1, not UTF-8
    with pytest.raises(DataError, match=r"a\.de:2: invalid UTF-8"):
        read_pairs(tmp_path / "a.en", target_path=tmp_path / "a.de")
    pairs = read_pairs(tmp_path / "a.en", target_path=tmp_path / "a.de", encoding_errors="ignore")
    assert pairs == [Pair("One", "Eins"), Pair("Two", "Zwi")]


def test_invalid_utf8_in_mo_names_the_file_and_replace_works(tmp_path):
    path = tmp_path / "de.mo"
    _catalog().save_as_mofile(str(path))
    path.write_bytes(path.read_bytes().replace("öffnen".encode(), b"\xf6ffnen"))
    with pytest.raises(DataError, match=r"de\.mo: invalid text in the catalog.*encoding_errors=\"replace\""):
        read_pairs(path)
    pairs = read_pairs(path, encoding_errors="replace")
    assert Pair("Open file %s", "Datei %s \ufffdffnen") in pairs
    assert Pair("%d files", "%d Dateien") in pairs  # plural forms decoded the same way
    assert len(pairs) == len(EXPECTED_CATALOG)


def test_corrupt_mo_is_a_data_error(tmp_path):
    path = tmp_path / "de.mo"
    path.write_bytes(b"not a catalog")
    with pytest.raises(DataError, match=r"de\.mo: not a readable gettext mo file"):
        read_pairs(path)


def test_empty_file_says_it_is_empty(tmp_path):
    (tmp_path / "c.tsv").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no pairs in .*c\.tsv: an empty file"):
        load_pairs(tmp_path / "c.tsv")
    po = polib.POFile()
    po.append(polib.POEntry(msgid="Untranslated", msgstr=""))
    po.save(str(tmp_path / "de.po"))
    with pytest.raises(DataError, match="no translated entries"):
        load_pairs(tmp_path / "de.po")


def test_empty_after_filtering_says_what_was_read_and_dropped(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text(" \tleer\na b c\td e f\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"read 2, the filters dropped 2 \(1 empty, 1 too long\)"):
        load_pairs(path, max_words=2)
    assert load_pairs(path, max_words=3) == [Pair("a b c", "d e f")]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_pairs(tmp_path / "nope.tsv")
    (tmp_path / "a.en").write_text("x\n")
    with pytest.raises(DataError, match="nope.de"):
        read_pairs(tmp_path / "a.en", target_path=tmp_path / "nope.de")


def test_tsv_line_without_tab(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("a\tb\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.tsv:2: .*no tab"):
        read_pairs(path)


def test_malformed_jsonl_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"src": "a", "tgt": "b"}\n{"src": "a",\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:2: not valid JSON"):
        read_pairs(path)


def test_jsonl_missing_keys_are_named(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"en": "a", "de": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:1: missing key\(s\) 'src', 'tgt'"):
        read_pairs(path)


def test_eval_files_may_lack_references_and_name_fields_many_ways(tmp_path):
    # dev/test files for validation: a missing reference is None, not an error
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("a\tA\textra\n\nb\nc\t\n", encoding="utf-8")
    assert read_eval_pairs(tsv) == [("a", "A"), ("b", None), ("c", None)]
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_text('{"source": "a", "target": "A"}\n{"translation": {"en": "b", "de": "B"}}\n{"src": "c"}\n',
                     encoding="utf-8")
    assert read_eval_pairs(jsonl) == [("a", "A"), ("b", "B"), ("c", None)]
    jsonl.write_text('{"tgt": "A"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"dev\.jsonl:1: no source field \(expected one of source, src, en\)"):
        read_eval_pairs(jsonl)
    jsonl.write_text('["a", "A"]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"dev\.jsonl:1: expected a JSON object, found list"):
        read_eval_pairs(jsonl)


def test_unknown_extension_asks_for_fmt(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("a,b\n")
    with pytest.raises(DataError, match="fmt="):
        read_pairs(path)
    path.write_text("a\tb\n")
    assert read_pairs(path, fmt="tsv") == [Pair("a", "b")]


def test_data_error_is_a_user_error():
    from mtedge.errors import UserError

    assert issubclass(DataError, UserError)
