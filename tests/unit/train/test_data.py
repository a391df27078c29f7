"""A run's data: sources drawn by weight, a plain-text source, validation loss per source, an audio manifest."""
import json

import pytest

from conftest import tiny_asr_config, tiny_omni_config
from omnigpt import train
from omnigpt.data.builtin import speech
from omnigpt.config import Config, ConfigError
from omnigpt.train import distributed
from omnigpt.train.data import prepare


def _config(tmp_path, weights, **train_kw):
    (tmp_path / "notes.txt").write_text("the quick brown fox jumps over the lazy dog. " * 60)
    d = tiny_omni_config("prefix", **train_kw).to_dict()
    d["data"]["sources"] = ["builtin:scenes", f"text:{tmp_path / 'notes.txt'}"]
    d["data"]["source_weights"] = weights
    return Config.from_dict(d)


def test_sources_are_drawn_by_weight(tmp_path):
    env = distributed.setup()
    for weights, text_share in (([0.0, 1.0], 1.0), ([1.0, 0.0], 0.0), ([1.0, 3.0], 0.75)):
        run = tmp_path / f"run{text_share}"
        run.mkdir()
        data = prepare(_config(tmp_path, weights), run, env)
        batches = [data.train_batch(step, 32, 0, 32) for step in range(6)]
        tasks = [t for b in batches for t in b.tasks]
        share = tasks.count("text") / len(tasks)
        assert share == pytest.approx(text_share, abs=0.08), weights
    text_rows = [r for r, t in enumerate(batches[0].tasks) if t == "text"]
    assert batches[0].images is not None and len(text_rows) > 0


def test_per_source_batches_hold_one_source_each(tmp_path):
    cfg = _config(tmp_path, [1.0, 3.0])
    cfg.data.batch_mode = "per_source"
    data = prepare(cfg, tmp_path, distributed.setup())
    kinds, lengths = [], {True: set(), False: set()}
    for step in range(40):
        batch = data.train_batch(step, 8, 0, 8)
        text = set(batch.tasks) == {"text"}
        assert text or "text" not in batch.tasks, batch.tasks  # never a mix of text and scenes
        halves = [set(data.train_batch(step, 8, a, b).tasks) == {"text"} for a, b in ((0, 4), (4, 8))]
        assert halves == [text, text]  # micro-batches (and processes) of a step draw the same source
        kinds.append(text)
        lengths[text].add(batch.ids.shape[1])
    assert 0.55 <= sum(kinds) / len(kinds) <= 0.95  # 0.75 expected
    assert max(lengths[False]) < min(lengths[True])  # scene batches are not padded to the text pieces


def test_each_source_gets_its_validation_loss(tmp_path):
    train(_config(tmp_path, [1.0, 1.0], max_steps=4, eval_interval=2, save_interval=4), tmp_path / "run",
          progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"]
    assert {r.get("task") for r in val} == {None, "builtin:scenes", f"text:{tmp_path / 'notes.txt'}"}
    assert all(r["loss"] > 0 for r in val)


def test_source_weights_must_match_the_sources(tmp_path):
    with pytest.raises(ConfigError, match="one weight >= 0 per source"):
        _config(tmp_path, [1.0])
    with pytest.raises(ConfigError, match="not all 0"):
        _config(tmp_path, [0.0, 0.0])


def test_text_sources_are_cut_into_pieces_of_text_chars(tmp_path):
    cfg = _config(tmp_path, [1.0, 1.0])
    cfg.data.text_chars = 60
    data = prepare(cfg, tmp_path, distributed.setup())
    pieces = data.train_set.parts[1].pieces + data.val_set.parts[1].pieces
    assert all(len(p) <= 60 + 10 for p in pieces) and all(len(p) >= 60 - 1 for p in pieces[:-1])
    assert " ".join(pieces).split() == ("the quick brown fox jumps over the lazy dog. " * 60).split()
    cfg.data.text_chars = 0
    with pytest.raises(ConfigError, match="text_chars"):
        cfg.validate()


def test_an_audio_manifest_trains(tmp_path, speech_cache):
    manifest = speech.write_speech_dataset(tmp_path / "sd", "train", 6)
    cfg = tiny_asr_config(speech_cache, max_steps=2)
    cfg.data.sources = [str(manifest)]
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.step == 2 and result.val_loss is not None
