"""The text tasks from the command line: a tiny GPT fine-tunes on a handful of rows written here, then
`evaluate --task` prints the task's metrics as JSON."""
import itertools
import json

import pytest

from omnigpt import Config
from omnigpt.cli import main

pytestmark = pytest.mark.slow

WORDS = {"red": "rouge", "blue": "bleu", "green": "vert", "big": "grand", "cat": "chat", "dog": "chien"}


def config(path, **data):
    Config.from_dict({
        "model": {"vocab_size": 300, "block_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 64, "position": "rope"},
        "data": {"tokenizer": "bpe", **data},
        "train": {"seed": 1, "batch_size": 8, "max_steps": 150, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 5,
                  "eval_interval": 150, "save_interval": 150, "eval_batches": 1},
    }).save(path)
    return str(path)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def run(tmp_path, capsys, cfg, data, *evaluate):
    main(["finetune", "--config", cfg, "--data", data, "--val", data, "--out", str(tmp_path / "run"), "--quiet"])
    capsys.readouterr()
    main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", data, "--quiet", *evaluate])
    return json.loads(capsys.readouterr().out)


def test_a_tiny_gpt_learns_to_translate_eight_phrases(tmp_path, capsys):
    rows = [{"source": f"the {a} {b} sleeps", "target": f"le {WORDS[b]} {WORDS[a]} dort"}
            for a, b in itertools.product(["red", "blue", "green", "big"], ["cat", "dog"])]
    cfg = config(tmp_path / "tr.yaml", source_lang="English", target_lang="French")
    got = run(tmp_path, capsys, cfg, write(tmp_path / "tr.jsonl", rows), "--task", "translate")
    assert {"bleu", "chrf", "count", "samples"} <= set(got) and got["count"] == 8
    assert got["samples"][0] == {"prediction": "le chat rouge dort", "reference": "le chat rouge dort"}
    assert got["bleu"] == pytest.approx(100.0) and got["chrf"] == pytest.approx(100.0)


def test_a_tiny_gpt_learns_to_label_texts_and_flags_the_toxic_ones(tmp_path, capsys):
    ok = ["thanks a lot", "have a nice day", "great work friend", "i like this", "well done", "you are kind"]
    toxic = ["you are stupid", "shut up idiot", "i hate you", "go away loser", "you are dumb", "stupid idiot"]
    data = write(tmp_path / "cl.jsonl", [{"text": t, "label": "ok"} for t in ok] +
                 [{"text": t, "label": "toxic"} for t in toxic])
    got = run(tmp_path, capsys, config(tmp_path / "cl.yaml"), data, "--task", "classify", "--positive", "toxic",
              "--threshold", "0.5", "--plot", str(tmp_path / "cm.png"))
    assert got["accuracy"] == 1.0 and got["macro_f1"] == 1.0 and got["confusion"] == [[6, 0, 0], [0, 6, 0]]
    assert got["flagged"] == {"ok": 0.0, "toxic": 1.0} and got["positive"] == "toxic"
    main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", data, "--quiet", "--task", "classify",
          "--plot", str(tmp_path / "cm.png")])
    written = json.loads(capsys.readouterr().out)  # the labels the model writes
    assert written["accuracy"] == 1.0 and "flagged" not in written
    # the run keeps the labels it learned; a test row of another label is named, or skipped on request
    assert Config.load(tmp_path / "run" / "config.yaml").data.labels == ["ok", "toxic"]
    strange = write(tmp_path / "strange.jsonl", [{"text": "hello", "label": "ok"}, {"text": "hm", "label": "spam"}])
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", strange, "--quiet", "--task", "classify"])
    assert "strange.jsonl line 2: label 'spam' is not one the model learned ['ok', 'toxic']" in capsys.readouterr().err
    main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", strange, "--quiet", "--task", "classify",
          "--on-bad-file", "skip", "--plot", str(tmp_path / "cm.png")])
    out, err = capsys.readouterr()
    assert json.loads(out)["count"] == 1 and "skipped 1 row(s) whose label the model never learned" in err
