"""hf:PATH sources: a dataset written by the `datasets` library (save_to_disk, Parquet, JSONL) read with its
columns renamed, as every reader reads a manifest."""
import json

import pytest

datasets = pytest.importorskip("datasets")

from omnigpt import Config  # noqa: E402
from omnigpt.data.examples import ChatExamples, TaskExamples, read_sources  # noqa: E402
from omnigpt.data.hf_datasets import dataset_rows, parse_columns, split_spec  # noqa: E402
from omnigpt.data.text import DataError  # noqa: E402

ARTICLES = {"article": ["The cat sat on the mat all day.", "Rain fell over the hills at night."],
            "highlights": ["A cat sat.", "It rained."]}


def text_config(tmp_path, sources, **data) -> Config:
    return Config.from_dict({"model": {"vocab_size": 300, "block_size": 128, "n_layer": 1, "n_head": 2,
                                       "n_embd": 32},
                             "data": {"sources": sources, "cache_dir": str(tmp_path / "cache"), **data}})


def test_a_saved_dataset_is_read_with_its_columns_renamed(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(ARTICLES),
                          "test": datasets.Dataset.from_dict({k: v[:1] for k, v in ARTICLES.items()})}
                         ).save_to_disk(str(tmp_path / "cnn"))
    spec = f"hf:{tmp_path / 'cnn'}:train"
    cfg = text_config(tmp_path, [spec], columns={"document": "article", "summary": "highlights"})
    (rows,) = read_sources(cfg, [spec], "train")
    assert isinstance(rows, TaskExamples) and len(rows) == 2
    ex = rows.example(0)
    assert ex.task == "summarize" and ex.target == "A cat sat." and "The cat sat on the mat" in ex.text
    (test,) = read_sources(cfg, [f"hf:{tmp_path / 'cnn'}:test"], "val")
    assert len(test) == 1
    with pytest.raises(DataError, match=r"choose a split with hf:.*:SPLIT, one of \['test', 'train'\]"):
        read_sources(cfg, [f"hf:{tmp_path / 'cnn'}"], "train")
    with pytest.raises(DataError, match=r"no column 'body' .*the dataset has \['article', 'highlights'\]"):
        dataset_rows(spec, {"document": "body"}, tmp_path / "cache")


def test_parquet_and_jsonl_files_hold_conversations_or_any_rows(tmp_path):
    talk = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    datasets.Dataset.from_dict({"messages": [talk, talk]}).to_parquet(str(tmp_path / "chat.parquet"))
    (chats,) = read_sources(text_config(tmp_path, ["x"]), [f"hf:{tmp_path / 'chat.parquet'}"], "train")
    assert isinstance(chats, ChatExamples) and chats.example(1).messages == talk
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "train-0.jsonl").write_text(json.dumps({"source": "hallo", "target": "hello"}) + "\n")
    (tmp_path / "rows" / "test-0.jsonl").write_text(json.dumps({"source": "ja", "target": "yes"}) + "\n")
    (pairs,) = read_sources(text_config(tmp_path, ["x"]), [f"hf:{tmp_path / 'rows'}:test"], "train")
    assert pairs.example(0).target == "yes"


def test_specs_and_mappings_are_checked(tmp_path):
    assert split_spec("hf:data/cnn:train") == ("data/cnn", "train")
    assert split_spec("hf:data/cnn") == ("data/cnn", None)
    assert parse_columns("text=article, summary=highlights") == {"text": "article", "summary": "highlights"}
    with pytest.raises(DataError, match="expected OURS=THEIRS pairs"):
        parse_columns("text")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="expected a save_to_disk folder, or Parquet, JSON or JSONL files"):
        dataset_rows(f"hf:{tmp_path / 'notes.txt'}", {}, tmp_path / "cache")
