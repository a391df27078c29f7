"""Labelled manifests for classification: JSONL and CSV, their quirks and errors."""
import json
import warnings

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from omnigpt.data.labeled import read_labeled_manifest
from omnigpt.data.text import DataError


def _files(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)


def test_jsonl_and_csv_manifests(tmp_path):
    _files(tmp_path)
    rows = [{"text": "a red bike", "image": "a.png", "label": "ok"}, {"audio": "a.wav", "label": "spam"},
            {"text": "hello", "image": "a.png", "audio": "a.wav", "label": 3}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    got = read_labeled_manifest(tmp_path / "m.jsonl")
    assert [r.label for r in got] == ["ok", "spam", "3"] and [r.line for r in got] == [1, 2, 3]
    assert got[0].image == tmp_path / "a.png" and got[1].text is None and got[2].audio == tmp_path / "a.wav"
    (tmp_path / "m.csv").write_text("text,image,audio,label\na red bike,a.png,,ok\n,,a.wav,spam\n")
    got = read_labeled_manifest(tmp_path / "m.csv")
    assert [(r.text, r.image, r.audio, r.label, r.line) for r in got] == [
        ("a red bike", tmp_path / "a.png", None, "ok", 2), (None, None, tmp_path / "a.wav", "spam", 3)]


@pytest.mark.parametrize("row, message", [
    ('{"text": "x"}', "line 2: missing key 'label'"),
    ('{"label": "ok"}', "line 2: no input"),
    ('{"text": "  ", "label": "ok"}', "line 2: 'text' is empty"),
    ('{"image": "gone.png", "label": "ok"}', "line 2: image not found"),
    ('{"text": "x", "label": "other"}', "line 2: label 'other' is not one of the model's classes"),
    ('{"text": "x", "label": "ok"', "line 2: not valid JSON"),
])
def test_a_bad_row_is_named_by_line_and_skipped_or_fatal(tmp_path, row, message):
    _files(tmp_path)
    path = tmp_path / "m.jsonl"
    path.write_text('{"text": "fine", "label": "ok"}\n' + row + "\n")
    with pytest.raises(DataError, match=message):
        read_labeled_manifest(path, labels=["ok", "spam"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = read_labeled_manifest(path, "skip", labels=["ok", "spam"])
    assert [r.line for r in kept] == [1] and "skipped 1 of 2" in str(caught[0].message)
    (tmp_path / "bad.csv").write_text("text,colour,label\nx,red,ok\n")
    with pytest.raises(DataError, match="unknown CSV column"):
        read_labeled_manifest(tmp_path / "bad.csv")


def test_csv_quirks_and_empty_manifests(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("\ufefftext, label\nhello,ok\n", encoding="utf-8")  # Excel's byte-order mark, a spaced header
    assert [(r.text, r.label) for r in read_labeled_manifest(path)] == [("hello", "ok")]
    path.write_text("text,label\na red bike, barely used,ok\n")
    with pytest.raises(DataError, match="line 2: the row has 3 fields but the header has 2: quote"):
        read_labeled_manifest(path)
    for name, text in (("e.jsonl", ""), ("h.csv", "text,label\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match="has no rows"):
            read_labeled_manifest(tmp_path / name)
