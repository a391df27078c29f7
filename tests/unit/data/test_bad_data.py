"""Data that used to end in a traceback or be taken silently: clips of a few samples, special tokens in a
pretraining corpus, a damaged data/meta.json, and manifest paths outside data.media_root."""
import json
import os
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from conftest import tiny_asr_config, tiny_config, tiny_omni_config
from omnigpt import train
from omnigpt.data.examples import Example, TextExamples, read_sources
from omnigpt.data.inputs import InputError, Inputs
from omnigpt.data.labeled import read_labeled_manifest
from omnigpt.data.sources import DataWarning, read_audio_source, read_coco_captions, read_source
from omnigpt.data.text import DataError, check_plain_text, load_tokens, prepare_tokens, read_corpus
from omnigpt.tokenizer import Tokenizer


# ----------------------------------------------------------------------------------------------- short clips
@pytest.fixture
def inputs(tmp_path):
    return Inputs(tiny_asr_config(str(tmp_path)), Tokenizer.byte_level())


@pytest.mark.parametrize("samples", [1, 10, 200])
def test_a_clip_of_a_few_samples_is_padded_with_silence(inputs, tmp_path, samples):
    wave = np.full(samples, 0.25, np.float32)
    assert inputs.audio(wave).shape == (32, 1)
    sf.write(tmp_path / "short.wav", wave, 16000, subtype="FLOAT")
    assert inputs.audio(tmp_path / "short.wav").shape == (32, 1)
    features = inputs.features(Example("<audio> transcript:", "hi", "transcribe", audio=wave))
    assert features.audio[0].shape == (32, 1)
    assert features.prompt.count(inputs.tokenizer.audio_id) == inputs.tokens_per_clip(1)


def test_a_long_enough_clip_is_not_padded(inputs):
    assert inputs.audio(np.zeros(1600, np.float32)).shape == (32, 10)


def test_empty_or_non_finite_samples_are_input_errors(inputs):
    with pytest.raises(InputError, match="audio samples are empty"):
        inputs.audio(np.zeros(0, np.float32))
    with pytest.raises(InputError, match="NaN or infinite"):
        inputs.audio(np.array([0.1, np.nan, 0.2], np.float32))
    with pytest.raises(InputError, match="NaN or infinite"):
        inputs.audio(torch.tensor([np.inf] * 500))


# ------------------------------------------------------------------------------------ special tokens in text
def test_a_placeholder_in_a_corpus_names_the_file_and_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first line\nsecond line\nthis one has <image> in it\n")
    with pytest.raises(DataError, match=r"corpus.txt line 3: contains the special token <image>, which omnigpt "
                                        r"reserves .*'< image>'"):
        read_corpus([str(path)])
    path.write_text("an end of text marker <|eos|> on line 1")
    with pytest.raises(DataError, match=r"corpus.txt line 1: contains the special token <\|eos\|>"):
        read_corpus([str(path)])
    with pytest.raises(DataError, match=r"corpus.txt line 1: contains the special token"):
        TextExamples([str(path)])


def test_check_plain_text_for_a_flag():
    check_plain_text("is the bike red?", "--text")
    with pytest.raises(DataError, match=r"^--text: contains the special token <audio>"):
        check_plain_text("what is <audio>?", "--text")


def test_pretraining_refuses_a_corpus_with_a_placeholder(tmp_path):
    (tmp_path / "c.txt").write_text("The quick brown fox. " * 50 + "\nlook: <audio>\n")
    with pytest.raises(DataError, match=r"c.txt line 2: contains the special token <audio>"):
        train(tiny_config(str(tmp_path / "c.txt"), max_steps=1), tmp_path / "run", progress=False)


# -------------------------------------------------------------------------------------------- data/meta.json
@pytest.fixture
def prepared(tmp_path):
    return prepare_tokens(["hello world " * 20, "second doc"], Tokenizer.byte_level(), tmp_path / "data", 0.25)


@pytest.mark.parametrize("meta, found", [
    ("{not json", r"meta.json: not valid JSON \(Expecting property name"),
    ("", r"meta.json: not valid JSON"),
    (b"\xff\xfe", r"meta.json: invalid UTF-8"),
    ('["uint16"]', r"meta.json: expected an object with 'dtype' one of \['uint16', 'uint32'\], found 'list'"),
    ('{"dtype": "float64"}', r"found 'float64'"),
    ('{"dtype": "uint16", "train_tokens": "many"}', r"'train_tokens' must be a whole number >= 0, found 'many'"),
])
def test_a_damaged_meta_json_says_to_delete_the_data_folder(prepared, meta, found):
    path = prepared / "meta.json"
    path.write_bytes(meta) if isinstance(meta, bytes) else path.write_text(meta)
    with pytest.raises(DataError, match=found + r".*damaged: delete that folder and run again"):
        load_tokens(prepared, "train")


def test_a_token_file_that_does_not_match_meta_json(prepared):
    data = (prepared / "train.bin").read_bytes()
    (prepared / "train.bin").write_bytes(data[:-3])
    with pytest.raises(DataError, match=r"train.bin: \d+ bytes, but meta.json calls for \d+ \(\d+ tokens\)"):
        load_tokens(prepared, "train")
    (prepared / "val.bin").write_bytes(b"")
    with pytest.raises(DataError, match=r"val.bin: 0 bytes"):
        load_tokens(prepared, "val")


def test_a_run_with_a_corrupt_meta_json_resumes_after_its_data_folder_is_deleted(corpus_file, tmp_path):
    cfg = tiny_config(str(corpus_file), max_steps=3, save_interval=2, eval_interval=2)
    train(cfg, tmp_path / "run", stop_at_step=2, progress=False)
    (tmp_path / "run" / "data" / "meta.json").write_text('{"dtype": "uint16", "vocab')
    with pytest.raises(DataError, match=r"run/data/meta.json: not valid JSON .*delete that folder"):
        train(cfg, tmp_path / "run", resume=True, progress=False)
    for f in (tmp_path / "run" / "data").iterdir():
        f.unlink()
    (tmp_path / "run" / "data").rmdir()
    assert train(cfg, tmp_path / "run", resume=True, progress=False).step == 3


# ---------------------------------------------------------------------------------------------- media_root
@pytest.fixture
def tree(tmp_path):
    """root/ holds the media and manifests; outside/ holds a real image and clip next to it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    for folder in (root / "m", root / "img", outside):
        folder.mkdir(parents=True)
    for folder in (root / "img", outside):
        Image.new("RGB", (8, 8), "red").save(folder / "a.png")
        sf.write(folder / "a.wav", np.zeros(1600, np.float32), 16000)
    return root, outside


def _jsonl(path, *rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("given, exists", [("../../outside/a.png", True), ("../../outside/missing.png", False),
                                           ("{outside}/a.png", True), ("{outside}/missing.png", False)])
def test_media_root_refuses_an_image_outside_it_without_saying_whether_it_exists(tree, given, exists):
    root, outside = tree
    given = given.format(outside=outside)
    manifest = _jsonl(root / "m" / "train.jsonl", {"image": "../img/a.png", "text": "a red square"},
                      {"image": given, "text": "somewhere else"})
    if exists:
        assert len(read_source(str(manifest))) == 2  # no media_root: anywhere
    with pytest.raises(DataError) as exc:
        read_source(str(manifest), root=root)
    message = str(exc.value)
    assert "train.jsonl line 2: " in message and "is outside data.media_root" in message
    assert "not found" not in message and "unreadable" not in message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = read_source(str(manifest), on_error="skip", root=root)
    assert [r.line for r in rows] == [1]
    assert any(issubclass(w.category, DataWarning) and "outside data.media_root" in str(w.message) for w in caught)


def test_media_root_refuses_a_symbolic_link_out_of_it(tree):
    root, outside = tree
    os.symlink(outside / "a.png", root / "img" / "link.png")
    manifest = _jsonl(root / "m" / "train.jsonl", {"image": "../img/link.png", "text": "a link"})
    with pytest.raises(DataError, match=r"line 1: .*link.png is outside data.media_root"):
        read_source(str(manifest), root=root)


def test_media_root_confines_audio_labeled_and_coco_sources_and_the_manifest_itself(tree):
    root, outside = tree
    audio = _jsonl(root / "m" / "speech.jsonl", {"audio": "../img/a.wav", "text": "hi"},
                   {"audio": str(outside / "a.wav"), "text": "ho"})
    with pytest.raises(DataError, match=r"speech.jsonl line 2: .*a.wav is outside data.media_root"):
        read_audio_source(str(audio), root=root)
    labeled = _jsonl(root / "m" / "cls.jsonl", {"text": "x", "image": "../img/a.png", "label": "a"},
                     {"text": "y", "audio": "../../outside/a.wav", "label": "b"})
    with pytest.raises(DataError, match=r"cls.jsonl line 2: .*a.wav is outside data.media_root"):
        read_labeled_manifest(labeled, root=root)
    coco = root / "m" / "captions.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "../../outside/a.png"}],
                                "annotations": [{"image_id": 1, "caption": "red"}, {"image_id": 2, "caption": "red"}]}))
    with pytest.raises(DataError, match=r"image id 2: .*a.png is outside data.media_root"):
        read_coco_captions(coco, root / "img", root=root)
    with pytest.raises(DataError, match=r"COCO image folder .*outside is outside data.media_root"):
        read_coco_captions(coco, outside, root=root)
    elsewhere = _jsonl(outside / "train.jsonl", {"image": "a.png", "text": "red"})
    with pytest.raises(DataError, match=r"manifest .*outside/train.jsonl is outside data.media_root"):
        read_source(str(elsewhere), root=root)
    with pytest.raises(DataError, match=r"manifest .*nowhere.jsonl is outside data.media_root"):
        read_source(str(outside / "nowhere.jsonl"), root=root)
    with pytest.raises(DataError, match=r"audio folder .* is outside data.media_root"):
        read_audio_source(f"audiofolder:{outside}", root=root)


def test_data_media_root_is_read_from_the_config(tree):
    root, outside = tree
    manifest = _jsonl(root / "m" / "train.jsonl", {"image": str(outside / "a.png"), "text": "red"})
    cfg = tiny_omni_config()  # a model that reads image manifests
    assert len(read_sources(cfg, [str(manifest)], "train")[0]) == 1  # no media_root: anywhere
    cfg.data.media_root = str(root)
    with pytest.raises(DataError, match=r"train.jsonl line 1: .*a.png is outside data.media_root"):
        read_sources(cfg, [str(manifest)], "train")
    with pytest.raises(DataError, match=r"text source .*c.txt is outside data.media_root"):
        read_sources(cfg, [f"text:{outside / 'c.txt'}"], "train")
    cfg.data.media_root = str(root / "nope")
    with pytest.raises(DataError, match=r"data.media_root is not a folder"):
        read_sources(cfg, [str(manifest)], "train")
