"""The demo: one model on text, scenes and speech, every task scored, report.json and report.html."""
import json
import re

import pytest

from conftest import CORPUS, tiny_config, tiny_omni_config
from omnigpt import Config, train
from omnigpt.cli import main
from omnigpt.data.builtin import scenes as builtin_scenes
from omnigpt.recipes.demo import DemoError, run_demo

pytestmark = pytest.mark.slow


def omni_config(tmp_path, cache, **train_kw) -> Config:
    (tmp_path / "notes.txt").write_text(CORPUS)
    d = tiny_omni_config("prefix", **train_kw).to_dict()
    d["audio"] = {"n_mels": 32, "width": 32, "n_layer": 1, "n_head": 2, "pool": 2, "max_seconds": 10.0}
    d["data"].update({"sources": ["builtin:scenes", "builtin:speech", f"text:{tmp_path / 'notes.txt'}"],
                      "tasks": ["caption", "vqa", "transcribe"], "source_weights": [0.4, 0.4, 0.2],
                      "batch_mode": "per_source", "builtin_utterances": 8, "cache_dir": str(cache)})
    return Config.from_dict(d)


def test_the_demo_scores_every_task_and_writes_its_report(tmp_path, speech_cache, capsys):
    cfg = omni_config(tmp_path, speech_cache, max_steps=3, save_interval=3, eval_interval=3)
    run = tmp_path / "run"
    summary = run_demo(run, minutes=5, scenes=4, utterances=3, progress=False, config=cfg)
    report = json.loads((run / "report.json").read_text())
    for key in ("caption_exact_match", "vqa_accuracy", "wer", "text_val_loss", "unigram_loss", "seconds"):
        assert report[key] == summary[key]
    assert 0 <= report["caption_exact_match"] <= 1 and 0 <= report["vqa_accuracy"] <= 1 and report["wer"] >= 0
    assert report["steps"] == 3 and set(report["vqa_by_type"]) == set(report["majority_by_type"])
    shown = report["samples"]
    assert [c["prompt"] for c in shown["completions"]] == ["The for statement", "A class definition",
                                                           "Exceptions are"]
    first = builtin_scenes.scenes("test", 1, size=32)[0]
    assert shown["scenes"][0]["reference"] == first.caption
    assert [q["question"] for q in shown["scenes"][0]["questions"]] == [q.question for q in first.qas]
    assert all(s["match"] == builtin_scenes.caption_matches(s["caption"], s["reference"]) for s in shown["scenes"])
    assert len(shown["utterances"]) == 3
    page = (run / "report.html").read_text()
    sources = re.findall(r"""src=['"]([^'"]+)['"]""", page)
    assert len(sources) >= 1 + 3 + 3  # the loss curves, the scenes, the utterances (and attention maps)
    assert all((run / s).is_file() for s in sources), [s for s in sources if not (run / s).is_file()]
    for k, scene in enumerate(shown["scenes"], start=1):  # an attention map for every caption with words
        assert (f"report/attention-{k}.png" in sources) == bool(scene["caption"].strip(" ,."))
    assert "<h2>Config</h2>" in page and "builtin:speech" in page
    out = capsys.readouterr().out
    assert f"omnigpt chat --checkpoint {run}" in out and "word error rate" in out and ">>> The for statement" in out
    again = run_demo(run, minutes=5, scenes=4, utterances=3, progress=False, config=cfg)  # continues: done
    assert again["steps"] == 3 and again["wer"] == summary["wer"]
    capsys.readouterr()
    main(["evaluate", "--checkpoint", str(run), "--limit", "3", "--quiet"])  # every task, as the demo does
    scored = json.loads(capsys.readouterr().out)
    assert set(scored["tasks"]) == {"scenes", "speech", "text"} and scored["tasks"]["speech"]["utterances"] == 3
    assert scored["text_val_loss"] == pytest.approx(summary["text_val_loss"], rel=1e-6)


def test_a_run_with_captions_only_gets_a_report_of_captions(tmp_path, capsys):
    cfg = tiny_omni_config("prefix", max_steps=2, save_interval=2, eval_interval=2)
    cfg.data.tasks = ["caption"]
    summary = run_demo(tmp_path / "cap", minutes=5, scenes=2, utterances=1, progress=False, config=cfg)
    assert "caption_exact_match" in summary and not {"vqa_accuracy", "wer", "text_val_loss"} & set(summary)
    page = (tmp_path / "cap" / "report.html").read_text()
    assert "2 test scenes" in page and "Speech" not in page and "Questions by type" not in page
    shown = json.loads((tmp_path / "cap" / "report.json").read_text())["samples"]
    assert len(shown["scenes"]) == 2 and "questions" not in shown["scenes"][0]
    assert "captions" in capsys.readouterr().out


def test_the_demo_trains_for_what_set_up_leaves_of_its_total_minutes(tmp_path, capsys):
    cfg = tiny_omni_config("prefix", max_steps=1_000_000, max_minutes=5.0, decay_over="minutes",
                           save_interval=1_000_000, eval_interval=1_000_000)
    cfg.data.tasks = ["caption"]
    summary = run_demo(tmp_path / "cap", scenes=2, utterances=1, progress=False, config=cfg, total_minutes=0.1)
    budget = Config.load(tmp_path / "cap" / "config.yaml").train.max_minutes
    assert 0 < budget < 0.1 and summary["train_seconds"] <= 60 * budget + 2 and summary["steps"] > 2
    assert summary["seconds"] < 6 + 20  # the 6 seconds asked for, and the report it overran by (not 5 minutes)
    assert "as long as set-up leaves of 0.1 minutes in all" in capsys.readouterr().out


def test_the_demo_refuses_a_folder_of_another_model(tmp_path, corpus_file, capsys):
    train(tiny_config(str(corpus_file), max_steps=2, save_interval=2), tmp_path / "old", progress=False)
    with pytest.raises(DemoError, match="no image or audio encoder"):
        run_demo(tmp_path / "old", minutes=1)
    for argv, message in ((["--out", str(tmp_path / "old")], "give another --out"),
                          (["--minutes", "0"], "--minutes: must be a finite number above 0, got 0")):
        with pytest.raises(SystemExit) as exc:
            main(["demo", *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_the_demo_refuses_a_run_it_cannot_continue_with_its_optimizer(tmp_path, speech_cache):
    train(omni_config(tmp_path, speech_cache, max_steps=2, save_interval=2), tmp_path / "old", progress=False)
    muon = omni_config(tmp_path, speech_cache, max_steps=2, optimizer="muon")
    with pytest.raises(DemoError, match="holds a demo trained with adamw, whose state the demo's muon cannot"):
        run_demo(tmp_path / "old", minutes=1, config=muon)
