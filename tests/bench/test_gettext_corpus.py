"""bench/gettext_corpus.py: the real English-German (and other) message pairs that text_tasks.py --corpus
gettext trains on, read from compiled gettext catalogs; here from catalogs the test writes."""
import struct
from pathlib import Path

from gettext_corpus import catalogs, language_rows, split_by_message, translation_pairs

HEADER = "Content-Type: text/plain; charset=UTF-8\n"


def write_mo(path: Path, messages: dict[str, str]) -> Path:
    """A GNU .mo file (little-endian, no hash table) holding messages plus the charset header."""
    entries = sorted({"": HEADER, **messages}.items())
    keys = [k.encode() for k, _ in entries]
    values = [v.encode() for _, v in entries]
    n = len(entries)
    originals, translations = 28, 28 + 8 * n
    offset = 28 + 16 * n
    key_table, value_table, blob = [], [], b""
    for table, strings in ((key_table, keys), (value_table, values)):
        for s in strings:
            table.append((len(s), offset + len(blob)))
            blob += s + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, originals, translations, 0, 0)
    body = b"".join(struct.pack("<2I", *e) for e in key_table + value_table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + body + blob)
    return path


def test_pairs_take_sentences_and_the_most_common_translation(tmp_path):
    de = tmp_path / "locale" / "de" / "LC_MESSAGES"
    write_mo(de / "tool.mo", {"could not open file %s": "konnte Datei %s nicht öffnen",
                              "Save the   file\n now": "Datei jetzt speichern",
                              "too short": "zu kurz",                                  # two words
                              "menu\x04Open the file": "Datei öffnen",                 # a context
                              "same in both languages": "same in both languages"})
    write_mo(de / "other.mo", {"could not open file %s": "Datei %s konnte nicht geöffnet werden"})
    write_mo(de / "more.mo", {"could not open file %s": "konnte Datei %s nicht öffnen"})
    write_mo(de / "iso_3166-1.mo", {"United States of America": "Vereinigte Staaten von Amerika"})
    (de / "broken.mo").write_bytes(b"not a catalog")

    assert [p.name for p in catalogs("de", [tmp_path])] == ["broken.mo", "more.mo", "other.mo", "tool.mo"]
    pairs = translation_pairs("de", roots=[tmp_path])
    assert pairs == {"could not open file %s": "konnte Datei %s nicht öffnen",
                     "Save the file now": "Datei jetzt speichern"}
    assert translation_pairs("fr", roots=[tmp_path]) == {}


def test_language_rows_and_splits_keep_a_message_in_one_split(tmp_path):
    sources = [f"message number {i} of the program" for i in range(400)]
    for lang, word in (("de", "Nachricht"), ("fr", "message")):
        write_mo(tmp_path / lang / "LC_MESSAGES" / "p.mo", {s: f"{word} {i}" for i, s in enumerate(sources)})
    rows = language_rows(["de", "fr"], per_language=300, roots=[tmp_path])
    assert len(rows) == 600 and {lang for _, _, lang in rows} == {"de", "fr"}
    assert {s for s, _, lang in rows if lang == "de"} == {s for s, _, lang in rows if lang == "fr"}

    train, val, test = split_by_message(rows, lambda r: r[0], held_out=60)
    assert len(train) + len(val) + len(test) == 600
    assert 20 <= len(val) <= 110 and 20 <= len(test) <= 110
    sets = [{r[0] for r in part} for part in (train, val, test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert split_by_message(list(reversed(rows)), lambda r: r[0], held_out=60)[2] == list(reversed(test))
