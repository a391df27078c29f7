import json
import re

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from omnigpt.data.sources import (AudioText, DataWarning, ImageText, read_audio_folders, read_audio_manifest,
                                  read_audio_source, read_coco_captions, read_librispeech, read_manifest,
                                  read_source, references_by_image)
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



def test_an_audio_row_in_an_image_manifest_is_pointed_to_the_audio_reader(tmp_path):
    path = jsonl(tmp_path / "m.jsonl", {"audio": "a.wav", "text": "hello"})
    with pytest.raises(DataError, match=r"line 1: missing key 'image' \(this row has 'audio': an audio manifest, given where image rows"):
        read_manifest(path)


# ------------------------------------------------------------------------------------------------ audio

def sound(path, frames=320, rate=16000):
    """A short 440 Hz tone; the format (WAV, FLAC, OGG) follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * np.arange(frames) / rate).astype(np.float32), rate)
    return path


@pytest.fixture
def clips(tmp_path):
    sound(tmp_path / "clips" / "a.wav")
    sound(tmp_path / "clips" / "b.flac", frames=480)
    (tmp_path / "clips" / "bad.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVE not really audio")
    sound(tmp_path / "clips" / "silent.wav", frames=0)
    return tmp_path


def test_audio_manifest_resolves_paths_against_its_folder_and_reads_labels(clips, tmp_path, monkeypatch):
    elsewhere = sound(tmp_path / "other" / "c.wav")
    path = jsonl(clips / "train.jsonl",
                 {"audio": "clips/a.wav", "text": "turn on the light", "duration": 0.02, "voice": "en-US"},
                 "",
                 {"audio": "clips/b.flac", "label": "dog"},
                 {"audio": str(elsewhere), "text": "a bark", "label": "dog"})
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # relative to the manifest, not to the working directory
    rows = read_audio_manifest(path)
    assert rows == [
        AudioText(clips / "clips" / "a.wav", "turn on the light", 1, str(path)),
        AudioText(clips / "clips" / "b.flac", "dog", 3, str(path), label="dog"),
        AudioText(elsewhere, "a bark", 4, str(path), label="dog"),
    ]
    assert rows[1].where == f"{path} line 3"


BAD_AUDIO_ROWS = [
    ('{"audio": "clips/a.wav", "text": "unclosed', r"line 2: not valid JSON"),
    ({"text": "no audio"}, r"line 2: missing key 'audio'$"),
    ({"image": "a.png", "text": "x"}, r"line 2: missing key 'audio' \(this row has 'image': an image manifest, given where audio rows are read\)"),
    ({"audio": "clips/a.wav"}, r"line 2: missing key 'text' \(a transcript\) or 'label' \(a class\)"),
    ({"audio": "clips/a.wav", "text": ["x"]}, r"line 2: 'text' must be a string, got list"),
    ({"audio": "clips/a.wav", "label": 3}, r"line 2: 'label' must be a string, got int 3"),
    ({"audio": "clips/a.wav", "text": "  "}, r"line 2: 'text' is empty"),
    ({"audio": "clips/a.wav", "text": "say <image>"}, r"line 2: 'text' contains the special token <image>"),
    ('"clips/a.wav"', r"line 2: expected a JSON object, got str"),
    ({"audio": "clips/missing.wav", "text": "x"}, r"line 2: audio not found: .*missing\.wav"),
    ({"audio": "clips", "text": "x"}, r"line 2: audio is not a file: .*clips"),
    ({"audio": "clips/bad.wav", "text": "x"}, r"line 2: audio unreadable: .*bad\.wav \(LibsndfileError"),
    ({"audio": "clips/silent.wav", "text": "x"}, r"line 2: audio has no samples: .*silent\.wav \(0 frames\)"),
]


@pytest.mark.parametrize("bad, message", BAD_AUDIO_ROWS)
def test_bad_audio_manifest_row_is_an_error_naming_file_and_line(clips, bad, message):
    path = jsonl(clips / "train.jsonl", {"audio": "clips/a.wav", "text": "good"}, bad)
    with pytest.raises(DataError, match="train.jsonl " + message):
        read_audio_manifest(path)


@pytest.mark.parametrize("bad, message", BAD_AUDIO_ROWS)
def test_bad_audio_manifest_row_is_skipped_with_a_counted_warning(clips, bad, message):
    path = jsonl(clips / "train.jsonl", {"audio": "clips/a.wav", "text": "good"}, bad,
                 {"audio": "clips/b.flac", "text": "also good"})
    with pytest.warns(DataWarning, match="skipped 1 of 3 examples") as record:
        rows = read_audio_manifest(path, on_error="skip")
    assert [r.line for r in rows] == [1, 3]
    assert len(record) == 1
    assert re.search(message, str(record[0].message), re.MULTILINE)


def test_audio_manifest_file_checks_can_be_turned_off_and_nothing_usable_is_an_error(clips):
    path = jsonl(clips / "train.jsonl", {"audio": "clips/missing.wav", "text": "x"})
    assert [r.audio.name for r in read_audio_manifest(path, check_audio=False)] == ["missing.wav"]
    with pytest.raises(DataError, match=r"no usable examples left(.|\n)*skipped 1 of 1"):
        read_audio_manifest(path, on_error="skip")
    (clips / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="manifest is empty"):
        read_audio_manifest(clips / "empty.jsonl")


def transcript(path, *lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def libri(tmp_path):
    """A LibriSpeech split: speakers 19 and 26, one chapter each, two utterances a chapter."""
    root = tmp_path / "LibriSpeech" / "dev-clean"
    transcript(root / "19" / "198" / "19-198.trans.txt", "19-198-0000 NORTHANGER ABBEY", "19-198-0001 THIS LITTLE WORK")
    transcript(root / "26" / "495" / "26-495.trans.txt", "26-495-0000 CHAPTER ONE", "26-495-0001 MISSUS RACHEL LYNDE")
    for utt in ("19-198-0000", "19-198-0001"):
        sound(root / "19" / "198" / f"{utt}.flac")
    for utt in ("26-495-0000", "26-495-0001"):
        sound(root / "26" / "495" / f"{utt}.flac")
    return root


def test_librispeech_one_example_per_transcript_line(libri):
    rows = read_librispeech(libri)
    trans = libri / "19" / "198" / "19-198.trans.txt"
    assert [(r.audio, r.text, r.line) for r in rows] == [
        (libri / "19" / "198" / "19-198-0000.flac", "NORTHANGER ABBEY", 1),
        (libri / "19" / "198" / "19-198-0001.flac", "THIS LITTLE WORK", 2),
        (libri / "26" / "495" / "26-495-0000.flac", "CHAPTER ONE", 1),
        (libri / "26" / "495" / "26-495-0001.flac", "MISSUS RACHEL LYNDE", 2),
    ]
    assert rows[1].where == f"{trans} line 2" and rows[1].label is None


def _append(path, line):
    path.write_text(path.read_text() + line + "\n")


def _unreadable_flac(root):
    (root / "19" / "198" / "19-198-0002.flac").write_bytes(b"fLaC broken")
    _append(root / "19" / "198" / "19-198.trans.txt", "19-198-0002 BROKEN AUDIO")


BREAKERS = {  # each adds one problem to the 4 good utterances
    "missing flac": (lambda root: _append(root / "19" / "198" / "19-198.trans.txt", "19-198-0002 NO AUDIO HERE"),
                     r"19-198\.trans\.txt line 3: audio not found: .*19-198-0002\.flac"),
    "unreadable flac": (_unreadable_flac, r"19-198\.trans\.txt line 3: audio unreadable: .*19-198-0002\.flac"),
    "no text": (lambda root: _append(root / "19" / "198" / "19-198.trans.txt", "19-198-0002"),
                r"19-198\.trans\.txt line 3: expected 'SPEAKER-CHAPTER-UTTERANCE TEXT', got '19-198-0002'"),
    "no id": (lambda root: _append(root / "26" / "495" / "26-495.trans.txt", "HELLO WORLD"),
              r"26-495\.trans\.txt line 3: expected 'SPEAKER-CHAPTER-UTTERANCE TEXT', got 'HELLO WORLD'"),
    "chapter without transcript": (lambda root: (root / "26" / "777").mkdir(),
                                   r"26/777: chapter folder without a transcript \(expected 26-777\.trans\.txt\)"),
    "speaker without chapters": (lambda root: (root / "40").mkdir(),
                                 r"40: speaker folder without chapter folders"),
    "empty transcript": (lambda root: transcript(root / "26" / "888" / "26-888.trans.txt"),
                         r"26-888\.trans\.txt: transcript is empty"),
}


@pytest.mark.parametrize("name", BREAKERS)
def test_librispeech_problem_is_an_error_naming_file_and_line(libri, name):
    breaker, message = BREAKERS[name]
    breaker(libri)
    with pytest.raises(DataError, match=message):
        read_librispeech(libri)


@pytest.mark.parametrize("name", BREAKERS)
def test_librispeech_problem_is_skipped_with_a_counted_warning(libri, name):
    breaker, message = BREAKERS[name]
    breaker(libri)
    with pytest.warns(DataWarning, match="skipped 1 of 5 examples") as record:
        rows = read_librispeech(libri, on_error="skip")
    assert [r.audio.stem for r in rows] == ["19-198-0000", "19-198-0001", "26-495-0000", "26-495-0001"]
    assert len(record) == 1 and re.search(message, str(record[0].message))


def test_librispeech_folder_errors(libri, tmp_path):
    with pytest.raises(DataError, match="LibriSpeech folder not found"):
        read_librispeech(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no LibriSpeech transcripts under .*: expected SPEAKER/CHAPTER/"
                                        r"SPEAKER-CHAPTER\.trans\.txt; .* holds the splits dev-clean: point at one"):
        read_librispeech(libri.parent)
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match=r"no LibriSpeech transcripts under .*plain: expected"):
        read_librispeech(tmp_path / "plain")


@pytest.fixture
def classes(tmp_path):
    """root/cat/{a.wav, b.WAV}, root/dog/{x.flac, notes.txt}, plus entries the reader ignores."""
    root = tmp_path / "sounds"
    sound(root / "dog" / "x.flac")
    (root / "dog" / "notes.txt").write_text("recorded in a park")
    sound(root / "cat" / "b.WAV")
    sound(root / "cat" / "a.wav")
    sound(root / "loose.wav")  # not in a class folder
    sound(root / ".cache" / "old.wav")  # hidden folder
    return root


def test_audio_folders_label_by_folder_in_a_fixed_order(classes):
    rows = read_audio_folders(classes)
    assert [(r.audio.relative_to(classes).as_posix(), r.label, r.text) for r in rows] == [
        ("cat/a.wav", "cat", "cat"), ("cat/b.WAV", "cat", "cat"), ("dog/x.flac", "dog", "dog")]
    assert rows[0].where == f"{classes} class cat" and rows[0].audio.is_absolute()


def test_audio_folders_report_empty_classes_and_unreadable_files(classes):
    with pytest.raises(DataError, match=r"sounds/cat: class 'cat' has no audio files \(\.flac\)"):
        read_audio_folders(classes, extensions=(".flac",))
    with pytest.warns(DataWarning, match=r"skipped 1 of 2 examples(.|\n)*class 'cat' has no audio files"):
        rows = read_audio_folders(classes, extensions=".FLAC", on_error="skip")  # one suffix, any case
    assert [r.audio.name for r in rows] == ["x.flac"]
    (classes / "dog" / "y.wav").write_bytes(b"not audio at all")
    with pytest.raises(DataError, match=r"sounds class dog: audio unreadable: .*y\.wav"):
        read_audio_folders(classes)


def test_audio_folders_errors(classes, tmp_path):
    with pytest.raises(DataError, match=r"cat: no class folders \(expected .*/LABEL/\*\.wav\); it holds 2 audio "
                                        r"files itself: pass the folder above the class folders"):
        read_audio_folders(classes / "cat")
    with pytest.raises(DataError, match="audio folder not found"):
        read_audio_folders(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="extensions must be suffixes with their dot"):
        read_audio_folders(classes, extensions=("wav",))


def test_read_audio_source_dispatches_and_explains_what_it_accepts(libri, classes, clips):
    jsonl(clips / "train.jsonl", {"audio": "clips/a.wav", "text": "hello"})
    assert len(read_audio_source(f"librispeech:{libri}")) == 4
    assert [r.label for r in read_audio_source(f"audiofolder:{classes}")] == ["cat", "cat", "dog"]
    assert [r.text for r in read_audio_source(str(clips / "train.jsonl"))] == ["hello"]
    _append(libri / "19" / "198" / "19-198.trans.txt", "19-198-0009 NO AUDIO")
    with pytest.warns(DataWarning, match="skipped 1 of 5"):
        assert len(read_audio_source(f"librispeech:{libri}", on_error="skip")) == 4
    assert len(read_audio_source(f"librispeech:{libri}", check_audio=False)) == 5
    with pytest.raises(DataError, match=r"unknown audio source prefix 'builtin'.*accepted: PATH\.jsonl.*"
                                        r"librispeech:FOLDER.*audiofolder:FOLDER"):
        read_audio_source("builtin:speech")
    with pytest.raises(DataError, match=r"'coco:c\.json' is an image source, where audio sources are read"):
        read_audio_source("coco:c.json")
    with pytest.raises(DataError, match=r"unknown audio source '.*clips'; accepted"):
        read_audio_source(str(clips / "clips"))
    with pytest.raises(DataError, match=r"is an audio source, where image sources are read"):
        read_source(f"librispeech:{libri}")
