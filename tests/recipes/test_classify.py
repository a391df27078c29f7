"""A classifier trained end to end on a labelled manifest, then evaluated, used and compared through the CLI."""
import json

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

pytestmark = pytest.mark.slow


def _color_set(folder, n, seed):
    """A manifest whose label is the colour of the picture; the text and the audio carry no signal."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = ("red", "blue")[i % 2]
        pixels = np.clip(rng.normal(0, 25, (32, 32, 3)) + (200, 40, 40) if label == "red" else
                         rng.normal(0, 25, (32, 32, 3)) + (40, 40, 200), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        sf.write(folder / f"{i}.wav", (rng.normal(0, 0.1, 4000)).astype(np.float32), 16000)
        row = {"text": f"item {rng.integers(1000)}", "image": f"{i}.png", "label": label}
        if i % 3:
            row["audio"] = f"{i}.wav"  # some rows have no audio
        rows.append(row)
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder / "data.jsonl"


def test_a_tiny_classifier_learns_and_the_commands_work(tmp_path, capsys):
    from conftest import tiny_classifier_config

    from omnigpt.cli import main

    train_set, test_set = _color_set(tmp_path / "train", 48, 0), _color_set(tmp_path / "test", 20, 1)
    cfg = tiny_classifier_config("attention", labels=[], modality_dropout=0.2, class_weights="balanced").to_dict()
    cfg["data"] = {"sources": [str(train_set)], "tokenizer": "byte"}
    cfg["train"] = {"batch_size": 16, "max_steps": 60, "lr": 3e-3, "warmup_steps": 5, "eval_interval": 30,
                    "eval_batches": 1, "save_interval": 30}
    from omnigpt.config import Config
    Config.from_dict(cfg).save(tmp_path / "cls.yaml")
    main(["finetune", "--config", str(tmp_path / "cls.yaml"), "--out", str(tmp_path / "run"), "--quiet"])
    assert Config.load(tmp_path / "run" / "config.yaml").classifier.labels == ["blue", "red"]
    capsys.readouterr()
    main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(test_set), "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 20 and result["accuracy"] >= 0.9 and result["macro_f1"] >= 0.9
    assert result["dropped"]["image"] <= 0.75  # the picture is what tells the classes apart
    assert (tmp_path / "run" / "confusion.png").stat().st_size > 0
    main(["classify", "--checkpoint", str(tmp_path / "run"), "--image", str(tmp_path / "test" / "0.png"),
          "--text", "item 7"])
    out = json.loads(capsys.readouterr().out)
    assert out["label"] == "red" and sum(out["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(SystemExit):
        main(["classify", "--checkpoint", str(tmp_path / "run")])
    assert "give at least one input" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["classify", "--checkpoint", str(tmp_path / "run"), "--text", "item <image> 7"])
    assert "--text holds <image>, which the model reads as a placeholder" in capsys.readouterr().err


def test_compare_fusion_trains_each_strategy_and_resumes(tmp_path, capsys):
    from conftest import tiny_classifier_config

    from omnigpt.cli import main
    from omnigpt.config import Config

    train_set, test_set = _color_set(tmp_path / "train", 32, 0), _color_set(tmp_path / "test", 10, 1)
    cfg = tiny_classifier_config("concat", labels=[]).to_dict()
    cfg["data"] = {"sources": [str(train_set)], "tokenizer": "byte"}
    cfg["train"] = {"batch_size": 8, "max_steps": 6, "warmup_steps": 1, "eval_interval": 6, "eval_batches": 1,
                    "save_interval": 6}
    Config.from_dict(cfg).save(tmp_path / "cls.yaml")
    args = ["compare-fusion", "--config", str(tmp_path / "cls.yaml"), "--out", str(tmp_path / "cmp"),
            "--strategies", "concat,weighted_sum,early", "--test", str(test_set), "--quiet"]
    main(args)
    table = capsys.readouterr().out
    assert table.startswith("| strategy | params | accuracy | macro-F1 | train time | steps | without audio |")
    rows = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert [r["strategy"] for r in rows] == ["concat", "weighted_sum", "early"]
    assert all(r["steps"] == 6 and 0 <= r["accuracy"] <= 1 and set(r["dropped"]) == {"text", "image", "audio"}
               for r in rows)
    assert sum(rows[1]["modality_weights"].values()) == pytest.approx(1.0)
    for f in ("results.md", "fusion.png", "concat/confusion.png", "early/confusion.png"):
        assert (tmp_path / "cmp" / f).stat().st_size > 0
    before = (tmp_path / "cmp" / "concat" / "metrics.jsonl").read_text()
    main(args)  # finished runs are evaluated again, not retrained
    assert (tmp_path / "cmp" / "concat" / "metrics.jsonl").read_text() == before
    assert json.loads((tmp_path / "cmp" / "results.json").read_text()) == rows
    with pytest.raises(SystemExit):
        main(args[:-3] + ["--strategies", "late", "--quiet"])
    assert "unknown fusion strategy" in capsys.readouterr().err
    lines = test_set.read_text().splitlines()
    lines[2] = lines[2].replace('"label": "red"', '"label": "green"')
    (tmp_path / "test" / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit):  # refused before any strategy trains
        main(["compare-fusion", "--config", str(tmp_path / "cls.yaml"), "--out", str(tmp_path / "cmp2"),
              "--test", str(tmp_path / "test" / "bad.jsonl"), "--quiet"])
    err = capsys.readouterr().err
    assert "bad.jsonl line 3: label 'green' is not one of the model's classes ['blue', 'red']" in err
    assert not (tmp_path / "cmp2" / "concat").exists()
