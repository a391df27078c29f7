"""Files whose header is fine but whose data is not (a truncated JPEG passes Pillow's verify(), a WAV of NaN
samples passes the header check): under data.on_bad_file skip training draws the row again, warns once with
the manifest line and counts it in metrics.jsonl, the same on resume and however the batch is split; under
error the run stops naming the manifest and line."""
import io
import json
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from conftest import speechlike, tiny_classifier_config, tiny_omni_config
from scene_files import write_scene_dataset
from omnigpt import load_checkpoint, train
from omnigpt.data.sources import DataWarning
from omnigpt.data.text import DataError

BAD_LINES = (3, 6)  # the truncated JPEG's row, the NaN WAV's row


def _truncated_jpeg(path):
    buf = io.BytesIO()
    rs = np.random.RandomState(0)
    Image.fromarray((rs.rand(48, 48, 3) * 255).astype("uint8")).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _nan_wav(path):
    wave = speechlike(0.3, 1)
    wave[100:140] = np.nan
    sf.write(path, wave, 16000, subtype="FLOAT")


def labeled_dataset(folder):
    """train.jsonl: 8 rows with text, image and audio, row 3's image a truncated JPEG, row 6's clip NaN samples;
    val.jsonl: 4 good rows."""
    (folder / "img").mkdir(parents=True)
    (folder / "wav").mkdir()
    for i in range(8):
        Image.new("RGB", (32, 32), (40 * i, 255 - 30 * i, 90)).save(folder / "img" / f"{i}.png")
        sf.write(folder / "wav" / f"{i}.wav", speechlike(0.3 + 0.05 * i, i), 16000)
    _truncated_jpeg(folder / "img" / "cut.jpg")
    _nan_wav(folder / "wav" / "nan.wav")

    def row(i, label, image=None, audio=None):
        return json.dumps({"text": f"item {i} is {label}", "image": image or f"img/{i}.png",
                           "audio": audio or f"wav/{i}.wav", "label": label})

    rows = [row(i, "match" if i % 2 else "mismatch") for i in range(8)]
    rows[BAD_LINES[0] - 1] = row(2, "mismatch", image="img/cut.jpg")
    rows[BAD_LINES[1] - 1] = row(5, "match", audio="wav/nan.wav")
    (folder / "train.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "val.jsonl").write_text("\n".join(row(i, "match" if i % 2 else "mismatch") for i in (0, 1, 4, 7)) + "\n")
    return folder / "train.jsonl", folder / "val.jsonl"


def classifier_config(train_manifest, val_manifest, on_bad_file="skip", **train_kw):
    cfg = tiny_classifier_config()
    cfg.data.sources, cfg.data.val_sources = [str(train_manifest)], [str(val_manifest)]
    cfg.data.tokenizer, cfg.data.on_bad_file = "byte", on_bad_file
    t = {"seed": 11, "max_steps": 6, "batch_size": 4, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 1,
         "eval_interval": 3, "eval_batches": 1, "save_interval": 3}
    t.update(train_kw)
    cfg.train = type(cfg.train)(**t)
    return cfg.validate()


def train_rows(run):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]


def caught_data_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return labeled_dataset(tmp_path_factory.mktemp("labeled"))


def test_skip_finishes_counts_and_warns_once_with_the_manifest_line(dataset, tmp_path):
    cfg = classifier_config(*dataset)
    messages = caught_data_warnings(lambda: train(cfg, tmp_path / "run", progress=False))
    assert train_rows(tmp_path / "run")[-1]["step"] == 6
    skipped = sum(r.get("skipped_files", 0) for r in train_rows(tmp_path / "run"))
    assert skipped >= 2
    for line, name, problem in ((BAD_LINES[0], "cut.jpg", "truncated"), (BAD_LINES[1], "nan.wav", "NaN")):
        found = [m for m in messages if f"train.jsonl line {line}: " in m]
        assert len(found) == 1, messages  # warned once, however often the row is drawn
        assert name in found[0] and problem in found[0] and "skipped" in found[0]


def test_a_resumed_or_split_run_skips_the_same_rows(dataset, tmp_path):
    cfg = classifier_config(*dataset)
    caught_data_warnings(lambda: train(cfg, tmp_path / "straight", progress=False))
    caught_data_warnings(lambda: train(cfg, tmp_path / "resumed", stop_at_step=3, progress=False))
    caught_data_warnings(lambda: train(cfg, tmp_path / "resumed", resume=True, progress=False))
    halves = classifier_config(*dataset, batch_size=2, grad_accum=2)
    caught_data_warnings(lambda: train(halves, tmp_path / "halves", progress=False))
    straight = train_rows(tmp_path / "straight")
    assert train_rows(tmp_path / "resumed") == straight
    split = train_rows(tmp_path / "halves")
    assert [r.get("skipped_files") for r in split] == [r.get("skipped_files") for r in straight]
    assert [r["loss"] for r in split] == pytest.approx([r["loss"] for r in straight], rel=1e-4)
    a, b = (load_checkpoint(tmp_path / run).model.state_dict() for run in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_error_names_the_manifest_and_line(dataset, tmp_path):
    cfg = classifier_config(*dataset, on_bad_file="error")
    with pytest.raises(DataError, match=r"train\.jsonl line (3|6): .*(cut\.jpg|nan\.wav).*--on-bad-file skip"):
        train(cfg, tmp_path / "run", progress=False)


def test_a_generator_skips_a_truncated_jpeg_of_an_image_manifest(tmp_path):
    manifest = write_scene_dataset(tmp_path / "scenes", "train", 8, size=32)
    _truncated_jpeg(tmp_path / "scenes" / "cut.jpg")
    lines = manifest.read_text().splitlines()
    lines[1] = json.dumps({"image": "cut.jpg", "text": "a picture cut short"})
    manifest.write_text("\n".join(lines) + "\n")
    cfg = tiny_omni_config(max_steps=3, batch_size=8, eval_interval=3, save_interval=3)
    cfg.data.sources, cfg.data.on_bad_file = [str(manifest)], "skip"
    messages = caught_data_warnings(lambda: train(cfg, tmp_path / "run", progress=False))
    assert sum(r.get("skipped_files", 0) for r in train_rows(tmp_path / "run")) > 0
    assert [m for m in messages if "train.jsonl line 2: " in m and "cut.jpg" in m]
    cfg.data.on_bad_file = "error"
    with pytest.raises(DataError, match=r"train\.jsonl line 2: .*cut\.jpg: cannot decode image"):
        train(cfg, tmp_path / "run2", progress=False)


def test_built_in_speech_longer_than_the_encoder_takes_is_refused_before_training(tmp_path, speech_cache):
    from conftest import tiny_asr_config

    from omnigpt.data.text import DataError
    from omnigpt.recipes.train import train

    cfg = tiny_asr_config(speech_cache, max_steps=2)
    cfg.audio.max_seconds = 1.0
    with pytest.raises(DataError, match=r"builtin:speech \(train\) holds clips of up to .* longer than "
                                        r"audio.max_seconds \(1\): raise it to at least"):
        train(cfg, tmp_path / "run", progress=False)
