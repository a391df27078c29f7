"""Commands that need no trained model (the end-to-end ones are in tests/recipes/test_commands.py)."""
import json

from omnigpt.cli import main


def run(capsys, *argv):
    main([str(a) for a in argv])
    return capsys.readouterr().out


def test_tokenizer_train(tmp_path, capsys, corpus_file):
    info = json.loads(run(capsys, "tokenizer", "train", "--input", corpus_file, "--vocab-size", "300",
                          "--out", tmp_path / "tok"))
    assert info["kind"] == "bpe" and info["vocab_size"] <= 300 and (tmp_path / "tok" / "tokenizer.json").is_file()
    info = json.loads(run(capsys, "tokenizer", "train", "--kind", "byte", "--out", tmp_path / "b"))
    assert info["vocab_size"] == 264
