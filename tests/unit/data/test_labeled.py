"""Classification data: the built-in matching task, JSONL/CSV manifests and their errors, and a tiny run."""
import json
import warnings
from collections import Counter, defaultdict

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from omnigpt.data.builtin import matching
from omnigpt.data.builtin.scenes import COLORS
from omnigpt.data.labeled import read_labeled_manifest
from omnigpt.data.text import DataError


def _best_table_accuracy(rows, key) -> float:
    """What the best predictor that sees only key(row) can score: the majority label per key value."""
    table = defaultdict(Counter)
    for r in rows:
        table[key(r)][r.label] += 1
    return sum(max(c.values()) for c in table.values()) / len(rows)


def test_the_matching_task_needs_all_three_modalities():
    rows = [matching.sample(0, i, "train", draw=False) for i in range(20000)]
    assert 0.48 < sum(r.label == "match" for r in rows) / len(rows) < 0.52
    colors = lambda r: tuple(sorted({o.color for o in r.objects}))  # noqa: E731
    # Each pair of modalities, summarised by what could reveal the label (at most 90 table cells each).
    assert _best_table_accuracy(rows, lambda r: (r.text, r.number)) < 0.54  # question + spoken number
    assert _best_table_accuracy(rows, lambda r: (r.text, r.count)) < 0.54  # question + the image's answer
    assert _best_table_accuracy(rows, lambda r: (colors(r), r.number)) < 0.54  # image + spoken number
    assert _best_table_accuracy(rows, lambda r: (r.count, r.number)) == 1.0  # all three decide it
    r = rows[0]
    for r in rows[:200]:
        values = [getattr(o, "color" if r.attribute in COLORS else "shape") for o in r.objects]
        assert values.count(r.attribute) == r.count and (r.count == r.number) == (r.label == "match")
    assert sorted(Counter(o.color for o in r.objects).values()) == [1, 2]
    assert {r.count for r in rows} == {r.number for r in rows} == {0, 1, 2}


def test_matching_samples_are_reproducible_and_drawn():
    a, b = matching.sample(3, 11, "test"), matching.sample(3, 11, "test")
    assert a.text == b.text and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.image.size == (64, 64) and matching.sample(3, 11, "val").objects != a.objects
    with pytest.raises(ValueError, match="unknown matching split"):
        matching.sample(0, 0, "compositional")


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
    from test_classifier import tiny_classifier_config

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


def test_compare_fusion_trains_each_strategy_and_resumes(tmp_path, capsys):
    from test_classifier import tiny_classifier_config

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


def test_held_out_rows_cover_every_class_and_training_keeps_each():
    from omnigpt.data.examples import stratified_split

    labels = [f"c{k}" for k in range(10) for _ in range(10)] + ["rare"]
    train, val = stratified_split(labels, 0.1)
    assert {labels[i] for i in val} == {f"c{k}" for k in range(10)}  # one of each; the single "rare" stays
    assert {labels[i] for i in train} == set(labels) and not set(train) & set(val)


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
