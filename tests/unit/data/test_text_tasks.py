"""Rows of the text tasks: read and checked (bad rows named by file and line), asked with their prompts, found
by their keys among a run's sources, and the loss on the target only."""
import json
import warnings

import pytest

from omnigpt import Config, Tokenizer
from omnigpt.config import IGNORE_INDEX
from omnigpt.data.examples import TaskExamples, hold_out, read_sources, text_task_of
from omnigpt.data.inputs import Inputs
from omnigpt.data.text import DataError
from omnigpt.data.text_tasks import read_task_rows


def write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def text_config(*sources, **data) -> Config:
    return Config.from_dict({"model": {"vocab_size": 300, "block_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 32},
                             "data": {"sources": [str(s) for s in sources], **data}})


def test_each_task_is_asked_with_its_prompt_and_learns_its_last_field(tmp_path):
    files = {"translate": {"source": "the cat", "target": "le chat"},
             "summarize": {"document": "It rained all day in Paris.", "summary": "Rain."},
             "qa": {"context": "Ada was born in 1815.", "question": "When was Ada born?", "answer": "1815"},
             "classify": {"text": "you idiot", "label": "toxic"}}
    got = {}
    for task, row in files.items():
        path = write(tmp_path / f"{task}.jsonl", [row, row])
        assert text_task_of(str(path)) == task
        (examples,) = read_sources(text_config(path), [str(path)], "train")
        ex = examples.example(0)
        got[task] = (ex.text, ex.target, ex.task, ex.where)
    assert got == {
        "translate": ("source: the cat\ntarget:", "le chat", "translate", f"{tmp_path}/translate.jsonl line 1"),
        "summarize": ("document: It rained all day in Paris.\nsummary:", "Rain.", "summarize",
                      f"{tmp_path}/summarize.jsonl line 1"),
        "qa": ("context: Ada was born in 1815.\nquestion: When was Ada born?\nanswer:", "1815", "qa",
               f"{tmp_path}/qa.jsonl line 1"),
        "classify": ("text: you idiot\nlabel:", "toxic", "classify", f"{tmp_path}/classify.jsonl line 1")}


def test_translation_languages_come_from_the_row_else_the_config(tmp_path):
    path = write(tmp_path / "t.jsonl", [{"source": "the cat", "target": "le chat", "source_lang": "English",
                                         "target_lang": "French"}, {"source": "the dog", "target": "le chien"}])
    (examples,) = read_sources(text_config(path, source_lang="en", target_lang="fr"), [str(path)], "train")
    assert [examples.example(i).text for i in range(2)] == ["English: the cat\nFrench:", "en: the dog\nfr:"]
    with pytest.raises(Exception, match="data.target_lang must be a language's name on one line"):
        text_config(path, target_lang="  ")


def test_classify_reads_csv_and_numeric_labels(tmp_path):
    (tmp_path / "c.csv").write_text('\ufefftext,label\nhello there,ok\n"a, b",3\n')
    assert text_task_of(str(tmp_path / "c.csv")) == "classify"
    rows = read_task_rows(tmp_path / "c.csv", "classify")
    assert [(r.fields, r.where) for r in rows] == [({"text": "hello there", "label": "ok"}, f"{tmp_path}/c.csv line 2"),
                                                   ({"text": "a, b", "label": "3"}, f"{tmp_path}/c.csv line 3")]


@pytest.mark.parametrize("task, row, message", [
    ("translate", '{"source": "x"}', "line 2: missing key 'target': a translate row is {\"source\", \"target\"}"),
    ("translate", '{"source": "x", "target": 3}', "line 2: 'target' must be a string, got int 3"),
    ("summarize", '{"document": "x", "summary": "  "}', "line 2: 'summary' is empty"),
    ("qa", '{"context": "c", "question": "q <image>", "answer": "a"}', "line 2: 'question' contains the special"),
    ("qa", '["context", "question"]', "line 2: expected a JSON object"),
    ("classify", '{"text": "x", "label": "ok", "image": "a.png"}', "line 2: a classify row is text only"),
    ("classify", '{"text": "x", "label": true}', "line 2: 'label' must be a string"),
    ("classify", '{"text": "x", "label": "ok"', "line 2: not valid JSON"),
])
def test_a_bad_row_is_named_by_file_and_line_and_stops_or_is_skipped(tmp_path, task, row, message):
    good = {"translate": '{"source": "a", "target": "b"}', "summarize": '{"document": "a", "summary": "b"}',
            "qa": '{"context": "a", "question": "b", "answer": "c"}', "classify": '{"text": "a", "label": "b"}'}
    path = write(tmp_path / "rows.jsonl", [good[task], row])
    with pytest.raises(DataError, match=f"{tmp_path}/rows.jsonl " + message.replace("(", r"\(").replace("[", r"\[")):
        read_task_rows(path, task)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = read_task_rows(path, task, "skip")
    assert [r.where for r in kept] == [f"{path} line 1"] and "skipped 1 of 2" in str(caught[0].message)


def test_a_file_of_bad_rows_or_the_wrong_shape_is_refused(tmp_path):
    path = write(tmp_path / "rows.jsonl", ['{"source": "x"}'])
    with pytest.raises(DataError, match="no usable examples left"):
        read_task_rows(path, "translate", "skip")
    (tmp_path / "t.csv").write_text("source,target\na,b\n")
    with pytest.raises(DataError, match="a translate file is JSONL"):
        read_task_rows(tmp_path / "t.csv", "translate")


def test_a_text_model_given_other_rows_names_the_shapes_it_reads(tmp_path):
    path = write(tmp_path / "odd.jsonl", [{"src": "x", "tgt": "y"}])
    with pytest.raises(Exception, match=r"translate \{\"source\", \"target\"\}"):
        read_sources(text_config(path), [str(path)], "train")


def test_held_out_rows_and_the_tokenizer_texts(tmp_path):
    rows = [{"text": f"text {i}", "label": "ab"[i % 2]} for i in range(10)]
    path = write(tmp_path / "c.jsonl", rows)
    sets = read_sources(text_config(path), [str(path)], "train")
    (train,), (val,) = hold_out(sets, [str(path)], 0.2)
    assert isinstance(val, TaskExamples) and sorted(r.target for r in val.rows) == ["a", "b"]  # stratified
    assert len(train) + len(val) == 10
    assert sets[0].texts()[0] == "text: text 0\nlabel: a"


def test_the_loss_falls_on_the_target_and_end_of_text_only(tmp_path):
    path = write(tmp_path / "t.jsonl", [{"source": "the cat", "target": "le chat"}])
    cfg = text_config(path)
    (examples,) = read_sources(cfg, [str(path)], "train")
    tok = Tokenizer.byte_level()
    batch = Inputs(cfg, tok).batch([examples.example(0)])
    supervised = [t for t in batch.targets[0].tolist() if t != IGNORE_INDEX]
    assert supervised == tok.encode(" le chat") + [tok.eos_id]
