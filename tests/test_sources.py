import json
import re

import pytest
from PIL import Image

from omnigpt.data.sources import (DataWarning, ImageText, read_coco_captions, read_manifest, read_source,
                                  references_by_image)
from omnigpt.data.text import DataError


def png(path, color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def jsonl(path, *lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


@pytest.fixture
def folder(tmp_path):
    png(tmp_path / "imgs" / "a.png")
    png(tmp_path / "imgs" / "b.png", (20, 200, 20))
    return tmp_path


def test_manifest_resolves_image_paths_against_its_folder(folder, tmp_path):
    elsewhere = png(tmp_path / "other" / "c.png")
    path = jsonl(folder / "train.jsonl",
                 {"image": "imgs/a.png", "text": "a red square"},
                 "",
                 {"image": "imgs/b.png", "caption": "a green square"},
                 {"image": str(elsewhere), "question": "what color?", "answer": "red"})
    rows = read_manifest(path)
    assert rows == [
        ImageText(folder / "imgs" / "a.png", "a red square", 1, str(path)),
        ImageText(folder / "imgs" / "b.png", "a green square", 3, str(path)),
        ImageText(elsewhere, "red", 4, str(path), question="what color?"),
    ]


def test_manifest_relative_to_its_folder_not_the_working_directory(folder, monkeypatch, tmp_path):
    jsonl(folder / "train.jsonl", {"image": "imgs/a.png", "text": "x"})
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    [row] = read_manifest("../train.jsonl")
    assert row.image.is_absolute() and row.image.resolve() == (folder / "imgs" / "a.png").resolve()


BAD_ROWS = [
    ('{"image": "imgs/a.png", "text": "unclosed', r"line 2: not valid JSON"),
    ({"text": "no image"}, r"line 2: missing key 'image'"),
    ({"image": "imgs/a.png"}, r"line 2: missing key 'text'"),
    ({"image": "imgs/a.png", "text": 3}, r"line 2: 'text' must be a string, got int 3"),
    ({"image": 7, "text": "x"}, r"line 2: 'image' must be a string"),
    ({"image": "imgs/a.png", "question": "what?"}, r"line 2: a VQA row needs both 'question' and 'answer'"),
    ({"image": "imgs/a.png", "text": "x", "caption": "y"}, r"line 2: give 'text' or its alias 'caption'"),
    ('["imgs/a.png", "x"]', r"line 2: expected a JSON object, got list"),
    ({"image": "imgs/missing.png", "text": "x"}, r"line 2: image not found: .*missing\.png"),
]


@pytest.mark.parametrize("bad, message", BAD_ROWS)
def test_bad_manifest_row_is_an_error_naming_file_and_line(folder, bad, message):
    path = jsonl(folder / "train.jsonl", {"image": "imgs/a.png", "text": "good"}, bad)
    with pytest.raises(DataError, match="train.jsonl " + message):
        read_manifest(path)


@pytest.mark.parametrize("bad, message", BAD_ROWS)
def test_bad_manifest_row_is_skipped_with_a_counted_warning(folder, bad, message):
    path = jsonl(folder / "train.jsonl", {"image": "imgs/a.png", "text": "good"}, bad,
                 {"image": "imgs/b.png", "text": "also good"})
    with pytest.warns(DataWarning, match="skipped 1 of 3 examples") as record:
        rows = read_manifest(path, on_error="skip")
    assert [r.line for r in rows] == [1, 3]
    assert len(record) == 1
    assert re.search(message, str(record[0].message))


def test_corrupt_image_bytes(folder):
    (folder / "imgs" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    full = png(folder / "imgs" / "full.png")
    (folder / "imgs" / "cut.png").write_bytes(full.read_bytes()[:40])
    path = jsonl(folder / "train.jsonl", {"image": "imgs/a.png", "text": "ok"},
                 {"image": "imgs/bad.png", "text": "x"}, {"image": "imgs/cut.png", "text": "y"})
    with pytest.raises(DataError, match=r"train.jsonl line 2: image unreadable: .*bad\.png"):
        read_manifest(path)
    with pytest.warns(DataWarning, match=r"skipped 2 of 3(.|\n)*line 2: image unreadable(.|\n)*line 3: image unr"):
        assert [r.line for r in read_manifest(path, on_error="skip")] == [1]
    assert len(read_manifest(path, check_images=False)) == 3  # the check can be turned off for huge sets


def test_manifest_with_nothing_usable_is_an_error_even_when_skipping(folder):
    path = jsonl(folder / "train.jsonl", {"image": "imgs/none.png", "text": "x"})
    with pytest.raises(DataError, match=r"no usable examples left(.|\n)*skipped 1 of 1"):
        read_manifest(path, on_error="skip")
    (folder / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match="manifest is empty"):
        read_manifest(folder / "empty.jsonl")
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(folder / "nope.jsonl")
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'error'"):
        read_manifest(path, on_error="ignore")


def coco_file(folder, annotations, images=None):
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "height": 8, "width": 8},
                                                {"id": 2, "file_name": "b.png", "height": 8, "width": 8}]
    path = folder / "annotations" / "captions_val2017.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return path


CAPTIONS = [{"id": 10, "image_id": 1, "caption": "a red square"},
            {"id": 11, "image_id": 2, "caption": "a green square"},
            {"id": 12, "image_id": 1, "caption": "something red"}]


def test_coco_captions_one_example_per_annotation_and_grouped_references(folder):
    path = coco_file(folder, CAPTIONS)
    rows = read_coco_captions(path, folder / "imgs")
    a, b = folder / "imgs" / "a.png", folder / "imgs" / "b.png"
    assert [(r.image, r.text) for r in rows] == [(a, "a red square"), (b, "a green square"), (a, "something red")]
    assert rows[0].where == f"{path} image id 1"
    assert references_by_image(rows) == {a: ["a red square", "something red"], b: ["a green square"]}


def test_coco_unknown_image_id_and_missing_image(folder):
    path = coco_file(folder, CAPTIONS + [{"id": 13, "image_id": 99, "caption": "lost"}],
                     images=[{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "gone.png"}])
    with pytest.raises(DataError, match=r"image id 99 \(annotations\[3\]\): no image with this id"):
        read_coco_captions(path, folder / "imgs")
    with pytest.warns(DataWarning, match=r"skipped 2 of 4(.|\n)*image id 99(.|\n)*image id 2: image not found"):
        rows = read_coco_captions(path, folder / "imgs", on_error="skip")
    assert [r.text for r in rows] == ["a red square", "something red"]


def test_coco_file_errors(folder):
    path = folder / "captions.json"
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match=r"not a COCO captions file: expected an object with 'images' and "
                                        r"'annotations' lists, found \['images'\]"):
        read_coco_captions(path, folder / "imgs")
    path.write_text('{"images": [}')
    with pytest.raises(DataError, match=r"captions.json: not valid JSON .* line 1 column 13"):
        read_coco_captions(path, folder / "imgs")
    good = coco_file(folder, CAPTIONS)
    with pytest.raises(DataError, match="COCO image folder not found"):
        read_coco_captions(good, folder / "nowhere")


def test_read_source_dispatches_and_explains_what_it_accepts(folder):
    jsonl(folder / "train.jsonl", {"image": "imgs/a.png", "text": "a red square"})
    coco = coco_file(folder, CAPTIONS)
    assert [r.text for r in read_source(str(folder / "train.jsonl"))] == ["a red square"]
    assert len(read_source(f"coco:{coco}", images=str(folder / "imgs"))) == 3
    with pytest.raises(DataError, match="needs its image folder"):
        read_source(f"coco:{coco}")
    with pytest.raises(DataError, match=r"unknown source prefix 'builtin'.*accepted: PATH.jsonl.*coco:"):
        read_source("builtin:scenes")
    with pytest.raises(DataError, match=r"unknown source '.*notes.txt'; accepted"):
        read_source(str(folder / "notes.txt"))
    with pytest.raises(DataError, match="images= applies to coco: sources only"):
        read_source(str(folder / "train.jsonl"), images=str(folder / "imgs"))


def test_text_holding_a_special_token_is_refused_with_its_line(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_text('{"image": "a.png", "text": "fine"}\n{"image": "a.png", "text": "a <image> cat"}\n')
    with pytest.raises(DataError, match=r"m.jsonl line 2: 'text' contains the special token <image>"):
        read_manifest(tmp_path / "m.jsonl")


def test_an_image_too_large_to_decode_is_reported_before_training(tmp_path, monkeypatch):
    import omnigpt.data.sources as sources_module

    Image.new("L", (3000, 2000)).save(tmp_path / "big.png")  # small on disk, 6 megapixels
    (tmp_path / "m.jsonl").write_text('{"image": "big.png", "text": "x"}\n')
    monkeypatch.setattr(sources_module, "MAX_PIXELS", 5_000_000)
    with pytest.raises(DataError, match=r"line 1: image too large: .*big.png \(3000x2000 pixels"):
        read_manifest(tmp_path / "m.jsonl")
