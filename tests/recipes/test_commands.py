"""The commands end to end on models they train: pretrain, finetune, generate, evaluate, caption, chat, and
their errors (commands that need no trained model are in tests/unit/test_cli.py)."""
import json

import pytest

from conftest import tiny_omni_config
from scene_files import write_scene_dataset
from omnigpt.cli import main

pytestmark = pytest.mark.slow


def run(capsys, *argv):
    main([str(a) for a in argv])
    return capsys.readouterr().out


def fail(capsys, *argv, code: int = 2):
    """stderr of a command that must fail: exit status 2 for a usage error, 1 for a failure at work."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == code
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


def test_errors_are_one_clear_line(tmp_path, capsys, run_dir):
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  n_layers: 2\n")
    assert "unknown key 'model.n_layers'" in fail(capsys, "pretrain", "--config", typo, "--out", tmp_path / "x")
    err = fail(capsys, "pretrain", "--config", run_dir / "config.yaml", "--out", tmp_path / "y",
               "--data", tmp_path / "missing.txt", code=1)
    assert "corpus file not found" in err and "missing.txt" in err
    assert "checkpoint not found" in fail(capsys, "generate", "--checkpoint", tmp_path / "nope", "--prompt", "a",
                                          code=1)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.yaml", "tokenizer.json"):
        (broken / name).write_bytes((run_dir / "checkpoints" / "step-00000006" / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    assert "is not a readable safetensors file" in fail(capsys, "evaluate", "--checkpoint", broken,
                                                                        code=1)
    err = fail(capsys, "generate", "--checkpoint", run_dir, "--prompt", "x" * 40, "--max-new-tokens", "5")
    assert "prompt of 40 tokens + max_new_tokens 5 exceeds the model's context of 32 tokens" in err
    out = run(capsys, "generate", "--checkpoint", run_dir, "--prompt", "x" * 40, "--max-new-tokens", "5",
              "--truncate")
    assert out.startswith("x" * 40)
    assert "--top-p: must be a finite number above 0 and at most 1" in fail(capsys, "generate", "--checkpoint", run_dir, "--prompt", "a",
                                              "--top-p", "1.5")
    cfg = run_dir / "checkpoints" / "step-00000006" / "config.yaml"
    assert "already holds a training run" in fail(capsys, "pretrain", "--config", cfg, "--out", run_dir)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe")
    assert "bad.txt: invalid UTF-8 at byte offset 3" in fail(capsys, "evaluate", "--checkpoint", run_dir,
                                                              "--data", bad, code=1)


@pytest.fixture
def image_run(tmp_path, capsys):
    tiny_omni_config(max_steps=3).save(tmp_path / "omni.yaml")
    out = run(capsys, "finetune", "--config", tmp_path / "omni.yaml", "--out", tmp_path / "cap", "--quiet")
    assert json.loads(out.strip().splitlines()[-1])["step"] == 3
    return tmp_path / "cap"


def test_finetune_caption_generate_evaluate_with_images(image_run, tmp_path, capsys):
    from omnigpt.data.builtin import scenes as builtin_scenes

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"scene{i}.png")
        builtin_scenes.scene(0, i, "test", size=32).image.save(paths[-1])
    rows = json.loads(run(capsys, "caption", "--checkpoint", image_run, *paths, "--max-new-tokens", "6",
                          "--attention-map", tmp_path / "att.png", "--json"))
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    assert [r["attention_map"] for r in rows] == [str(tmp_path / "att-1.png"), str(tmp_path / "att-2.png")]
    assert (tmp_path / "att-2.png").read_bytes()[:4] == b"\x89PNG"
    out = json.loads(run(capsys, "generate", "--checkpoint", image_run, "--image", paths[0], "--prompt",
                         "question: how many circles? <image> answer:", "--max-new-tokens", "3", "--json"))
    assert out[0]["prompt"].startswith("question: how many circles?")
    result = json.loads(run(capsys, "evaluate", "--checkpoint", image_run, "--limit", "4", "--quiet"))
    for key in ("caption_exact_match", "bleu4", "cider_d", "vqa_accuracy", "vqa_by_type", "majority_by_type"):
        assert key in result
    manifest = write_scene_dataset(tmp_path / "m", "test", 3, size=32)
    result = json.loads(run(capsys, "evaluate", "--checkpoint", image_run, "--task", "caption", "--data",
                            manifest, "--quiet"))
    assert result["images"] == 3 and 0 <= result["bleu4"] <= 100 and "caption_exact_match" in result


def test_image_commands_report_bad_input(image_run, run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    assert "bad.png" in fail(capsys, "caption", "--checkpoint", image_run, bad, code=1)
    assert "has no image encoder" in fail(capsys, "caption", "--checkpoint", run_dir, bad)
    assert "1 <image> placeholder(s) but 2 --image file(s)" in fail(
        capsys, "generate", "--checkpoint", image_run, "--image", bad, "--image", bad, "--prompt", "<image> x")


def test_chat_command(tmp_path, monkeypatch, capsys):
    from omnigpt import train
    from omnigpt.cli import main

    train(tiny_omni_config("prefix", max_steps=2, save_interval=2), tmp_path / "run", progress=False)
    lines = iter(["hello", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    main(["chat", "--checkpoint", str(tmp_path / "run"), "--max-new-tokens", "3", "--seed", "1",
          "--temperature", "0.8"])
    out = capsys.readouterr().out
    assert out.startswith("omnigpt chat: type a message") and out.count("\n") == 2  # the banner, one reply
    monkeypatch.setattr("builtins.input", lambda prompt="": (_ for _ in ()).throw(EOFError))
    main(["chat", "--checkpoint", str(tmp_path / "run")])  # end of input ends the session
    assert capsys.readouterr().out == "omnigpt chat: type a message; /help lists the commands\n\n"
