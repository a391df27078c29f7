import json

import pytest

from omnigpt.cli import main


def run(capsys, *argv):
    main([str(a) for a in argv])
    return capsys.readouterr().out


def fail(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def run_dir(tiny, tmp_path, capsys):
    tiny(max_steps=6).save(tmp_path / "c.yaml")
    out = run(capsys, "pretrain", "--config", tmp_path / "c.yaml", "--out", tmp_path / "run", "--quiet")
    assert json.loads(out.strip().splitlines()[-1])["step"] == 6
    return tmp_path / "run"


def test_pretrain_generate_evaluate(run_dir, capsys, corpus_file):
    out = run(capsys, "generate", "--checkpoint", run_dir, "--prompt", "The quick", "--prompt", "Sphinx",
              "--max-new-tokens", "5", "--json")
    rows = json.loads(out)
    assert [r["prompt"] for r in rows] == ["The quick", "Sphinx"]
    result = json.loads(run(capsys, "evaluate", "--checkpoint", run_dir, "--data", corpus_file))
    assert result["tokens"] == corpus_file.stat().st_size  # byte tokens: every byte (and the EOS) but the first
    assert result["perplexity"] == pytest.approx(2.718281828 ** result["loss"])
    val = json.loads(run(capsys, "evaluate", "--checkpoint", run_dir))
    assert val["data"] == "validation split" and val["loss"] > 0


def test_stream_prints_prompt_and_continuation(run_dir, capsys):
    out = run(capsys, "generate", "--checkpoint", run_dir, "--prompt", "The", "--max-new-tokens", "4", "--stream",
              "--temperature", "1", "--seed", "0")
    assert out.startswith("The") and len(out.rstrip("\n")) > len("The")


def test_resume_extends_a_finished_run(run_dir, capsys):
    out = run(capsys, "pretrain", "--out", run_dir, "--resume", "--max-steps", "8", "--quiet")
    assert json.loads(out.strip().splitlines()[-1])["step"] == 8


def test_tokenizer_train(tmp_path, capsys, corpus_file):
    info = json.loads(run(capsys, "tokenizer", "train", "--input", corpus_file, "--vocab-size", "300",
                          "--out", tmp_path / "tok"))
    assert info["kind"] == "bpe" and info["vocab_size"] <= 300 and (tmp_path / "tok" / "tokenizer.json").is_file()
    info = json.loads(run(capsys, "tokenizer", "train", "--kind", "byte", "--out", tmp_path / "b"))
    assert info["vocab_size"] == 264


def test_errors_are_one_clear_line(tmp_path, capsys, run_dir):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  n_layers: 2\n")
    assert "unknown key 'model.n_layers'" in fail(capsys, "pretrain", "--config", typo, "--out", tmp_path / "x")
    err = fail(capsys, "pretrain", "--config", run_dir / "config.yaml", "--out", tmp_path / "y",
               "--data", tmp_path / "missing.txt")
    assert "corpus file not found" in err and "missing.txt" in err
    assert "checkpoint not found" in fail(capsys, "generate", "--checkpoint", tmp_path / "nope", "--prompt", "a")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.yaml", "tokenizer.json"):
        (broken / name).write_bytes((run_dir / "checkpoints" / "step-00000006" / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    assert "model.safetensors: not a readable safetensors file" in fail(capsys, "evaluate", "--checkpoint", broken)
    err = fail(capsys, "generate", "--checkpoint", run_dir, "--prompt", "x" * 40, "--max-new-tokens", "5")
    assert "prompt of 40 tokens + max_new_tokens 5 exceeds the model's context of 32 tokens" in err
    out = run(capsys, "generate", "--checkpoint", run_dir, "--prompt", "x" * 40, "--max-new-tokens", "5",
              "--truncate")
    assert out.startswith("x" * 40)
    assert "top_p must be in (0, 1]" in fail(capsys, "generate", "--checkpoint", run_dir, "--prompt", "a",
                                              "--top-p", "1.5")
    cfg = run_dir / "checkpoints" / "step-00000006" / "config.yaml"
    assert "already holds a training run" in fail(capsys, "pretrain", "--config", cfg, "--out", run_dir)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe")
    assert "bad.txt: invalid UTF-8 at byte offset 3" in fail(capsys, "evaluate", "--checkpoint", run_dir,
                                                              "--data", bad)
