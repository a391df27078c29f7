"""Bad input through the real CLI entry point: every case gives one clear line naming the flag, file or value
and what is allowed, exit status 2 for a usage error and 1 for a failure at work, and never a traceback."""

import pytest

from conftest import tiny_config
from omnigpt.cli import main
from omnigpt.generate import GenerationConfig, GenerationError

BAD_UTF8 = b"caf\xff".decode("utf-8", "surrogateescape")  # what Python makes of such bytes on a command line


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A 2-layer text GPT trained for 2 steps (a second)."""
    tmp = tmp_path_factory.mktemp("run")
    (tmp / "corpus.txt").write_text("The quick brown fox jumps over the lazy dog. " * 60)
    tiny_config(str(tmp / "corpus.txt"), max_steps=2, save_interval=2).save(tmp / "c.yaml")
    main(["pretrain", "--config", str(tmp / "c.yaml"), "--out", str(tmp / "run"), "--quiet"])
    return tmp / "run"


def fail(capsys, argv: list, code: int) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert exc.value.code == code, err
    return err


G = ["generate", "--checkpoint", "{ckpt}", "--prompt", "The"]
CASES = [  # (arguments, exit status, what the message must say)
    (G + ["--temperature", "nan"], 2, "--temperature: must be a finite number at least 0, got nan"),
    (G + ["--temperature", "inf"], 2, "--temperature: must be a finite number at least 0, got inf"),
    (G + ["--temperature", "-1"], 2, "--temperature: must be a finite number at least 0"),
    (G + ["--repetition-penalty", "nan"], 2, "--repetition-penalty: must be a finite number above 0, got nan"),
    (G + ["--top-p", "0"], 2, "--top-p: must be a finite number above 0 and at most 1, got 0"),
    (G + ["--top-k", "0"], 2, "--top-k: must be a whole number >= 1, got 0"),
    (G + ["--seed", str(2 ** 70)], 2, "--seed: must be a whole number >= 0 and <= 9223372036854775807"),
    (G + ["--seed", "1.5"], 2, "--seed: expected a whole number >= 0"),
    (G + ["--stop", ""], 2, "--stop: must not be empty"),
    (G + ["--max-new-tokens", "0"], 2, "--max-new-tokens: must be a whole number >= 1, got 0"),
    (G + ["--num-beams", "0"], 2, "--num-beams: must be a whole number >= 1 and <= 64, got 0"),
    (["generate", "--checkpoint", "{ckpt}", "--prompt", BAD_UTF8], 2, "--prompt: is not valid UTF-8"),
    (["generate", "--checkpoint", "{ckpt}", "--prompt", "x" * 40, "--max-new-tokens", "5"], 2,
     "prompt of 40 tokens + max_new_tokens 5 exceeds the model's context of 32 tokens"),
    (G + ["--max-new-tokens", "40"], 2, "max_new_tokens 40 leaves no room for a prompt"),
    (["generate", "--checkpoint", "{tmp}/missing", "--prompt", "a"], 1, "checkpoint not found"),
    (["chat", "--checkpoint", "{ckpt}", "--temperature", "nan"], 2, "--temperature: must be a finite number"),
    (["chat", "--checkpoint", "{ckpt}", "--seed", "-1"], 2, "--seed: must be a whole number >= 0"),
    (["caption", "--checkpoint", "{ckpt}", "x.png", "--num-beams", "0"], 2, "--num-beams: must be a whole number"),
    (["caption", "--checkpoint", "{ckpt}", "x.png"], 2, "has no image encoder to caption with"),
    (["transcribe", "--checkpoint", "{ckpt}", "a.wav", "--num-beams", "0"], 2, "--num-beams: must be a whole"),
    (["transcribe", "--checkpoint", "{ckpt}", "a.wav", "--window", "inf"], 2,
     "--window: must be a finite number above 0, got inf"),
    (["transcribe", "--checkpoint", "{ckpt}", "a.wav", "--window", "nan"], 2, "--window: must be a finite number"),
    (["transcribe", "--checkpoint", "{ckpt}", "a.wav", "--overlap", "-1"], 2, "--overlap: must be a finite number"),
    (["transcribe", "--checkpoint", "{ckpt}", "a.wav", "--temperatures", "0,nan"], 2,
     "temperatures must be finite numbers >= 0"),
    (["pretrain", "--config", "{ckpt}/config.yaml", "--out", "{tmp}/r", "--minutes", "nan"], 2,
     "--minutes: must be a finite number above 0, got nan"),
    (["pretrain", "--config", "{ckpt}/config.yaml", "--out", "{tmp}/r", "--minutes", "0"], 2,
     "--minutes: must be a finite number above 0, got 0"),
    (["pretrain", "--config", "{ckpt}/config.yaml", "--out", "{tmp}/r", "--minutes", "-1"], 2, "--minutes: must be"),
    (["pretrain", "--config", "{ckpt}/config.yaml", "--out", "{tmp}/r", "--stop-at-step", "0"], 2,
     "--stop-at-step: must be a whole number >= 1, got 0"),
    (["pretrain", "--config", "{ckpt}/config.yaml", "--out", "{tmp}/r", "--max-steps", "-3"], 2,
     "--max-steps: must be a whole number >= 1"),
    (["pretrain", "--config", "{ckpt}/config.yaml", "--out", "{tmp}/afile"], 1, "afile"),
    (["pretrain", "--config", "{ckpt}/config.yaml", "--out", "{tmp}/afile/run"], 1, "afile"),
    (["finetune", "--config", "{ckpt}/config.yaml", "--out", "{tmp}/r", "--minutes", "inf"], 2, "--minutes: must be"),
    (["demo", "--minutes", "nan"], 2, "--minutes: must be a finite number above 0, got nan"),
    (["demo", "--scenes", "0"], 2, "--scenes: must be a whole number >= 1, got 0"),
    (["demo", "--out", "{tmp}/afile"], 1, "afile"),
    (["speech-data", "--out", "{tmp}/sd", "--hours", "-1"], 2, "--hours: must be a finite number above 0, got -1"),
    (["speech-data", "--out", "{tmp}/sd", "--count", "-5"], 2,
     "--count: must be a whole number >= 1 and <= 1000000, got -5"),
    (["speech-data", "--out", "{tmp}/sd", "--count", "0"], 2,
     "--count: must be a whole number >= 1 and <= 1000000, got 0"),
    (["speech-data", "--out", "{tmp}/afile", "--count", "1"], 1, "afile"),
    (["evaluate", "--checkpoint", "{ckpt}", "--limit", "0"], 2, "--limit: must be a whole number >= 1, got 0"),
    (["tokenizer", "train", "--kind", "byte", "--out", "{tmp}/afile/tok.json"], 1, "afile"),
    (["classify", "--checkpoint", "{ckpt}", "--text", ""], 2, "--text: must not be empty"),
    (["classify", "--checkpoint", "{ckpt}", "--text", "a"], 2, "is not a classifier"),
    (["pretrain", "--config", "{ckpt}", "--out", "{tmp}/r"], 2, "is a folder; give a YAML file (its config is"),
    (["pretrain", "--config", "nosuch", "--out", "{tmp}/r"], 2,
     "--config nosuch: no such file, and omnigpt ships no config of that name (asr-speech, assemble, caption-shapes"),
    (["pretrain", "--config", "{tmp}/nosuch.yaml", "--out", "{tmp}/r"], 2, "config file not found"),
    (["tokenizer", "train", "--vocab-size", str(10 ** 12), "--out", "{tmp}/t"], 2,
     "--vocab-size: must be a whole number >= 1 and <= 1048576"),
    (["speech-data", "--out", "{tmp}/sd", "--count", str(10 ** 20)], 2, "--count: must be a whole number >= 1"),
    (["speech-data", "--out", "{tmp}/sd", "--hours", "1e9"], 2, "at most 1000000 are written"),
    (["transcribe", "--checkpoint", "{ckpt}", "a.wav", "--window", "2", "--overlap", "1"], 2,
     "has no audio encoder"),
    (["transcribe", "--checkpoint", "{ckpt}", "a.wav", "--temperatures", "0,1e400"], 2, "must be finite numbers"),
    (["pretrain", "--config", "{ckpt}/config.yaml", "--out", "{tmp}/r", "--data", "{tmp}"], 1,
     "is a folder; give text files"),
    (["pretrain", "--config", "{ckpt}/config.yaml", "--out", "{tmp}/r", "--max-steps", "2", "--stop-at-step", "5"],
     2, "--stop-at-step 5 is past the run's end"),
    (["evaluate", "--checkpoint", "{ckpt}", "--plot", "{tmp}/p.png"], 2, "--plot draws a confusion matrix"),
    (["compare-fusion", "--config", "{ckpt}/config.yaml", "--out", "{tmp}/cf"], 2,
     "needs a config with a 'classifier' section (see the shipped config classify-builtin)"),
    (["compare-fusion", "--config", "text-tiny", "--out", "{tmp}/cf", "--minutes", "-2"], 2, "--minutes: must be"),
]


@pytest.mark.parametrize("argv,code,message", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_bad_input_gives_one_clear_line(argv, code, message, ckpt, tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    argv = [a.format(ckpt=ckpt, tmp=tmp_path) for a in argv]
    err = fail(capsys, argv, code)
    assert message in err
    assert len([line for line in err.splitlines() if line.startswith(("error", "omnigpt"))]) == 1


def test_chat_reports_input_that_is_not_utf8_and_goes_on(ckpt, monkeypatch, capsys):
    said = iter([BAD_UTF8, "The", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(said))
    main(["chat", "--checkpoint", str(ckpt), "--max-new-tokens", "3"])
    out = capsys.readouterr().out
    assert "error: the text is not valid UTF-8" in out
    assert out.count("error") == 1  # the next message got its reply


def test_evaluate_plot_given_a_folder_writes_inside_it(tmp_path):
    from omnigpt.evaluate import _plot_path

    (tmp_path / "plots").mkdir()
    assert _plot_path(str(tmp_path / "plots"), tmp_path) == tmp_path / "plots" / "confusion.png"
    assert _plot_path(str(tmp_path / "new") + "/", tmp_path) == tmp_path / "new" / "confusion.png"
    assert _plot_path(str(tmp_path / "cm.png"), tmp_path) == tmp_path / "cm.png"


@pytest.mark.parametrize("field,value,message", [
    ("temperature", float("nan"), "temperature must be a number >= 0"),
    ("temperature", float("inf"), "temperature must be a number >= 0"),
    ("repetition_penalty", float("nan"), "repetition_penalty must be a number > 0"),
    ("top_p", float("nan"), "top_p must be in (0, 1]"),
    ("num_beams", 0, "num_beams must be a whole number >= 1"),
    ("seed", 2 ** 70, "seed must be a whole number >= 0"),
    ("stop_strings", [""], "a stop string must be non-empty text"),
    ("max_new_tokens", 2.5, "max_new_tokens must be a whole number"),
])
def test_generation_config_refuses_values_no_decoder_can_use(field, value, message):
    with pytest.raises(GenerationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        GenerationConfig(**{field: value}).validate()


# --------------------------------------------------------------------------- arbitrary values (hypothesis)
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

FLAG_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-2 ** 80, max_value=2 ** 80).map(str),
    st.text(max_size=12),
    st.sampled_from(["nan", "-inf", "1e309", "0x10", "", " ", "1_000", "٣", BAD_UTF8]),
)
GENERATION_FLAGS = ["--max-new-tokens", "--temperature", "--top-k", "--top-p", "--repetition-penalty",
                    "--num-beams", "--stop", "--seed", "--prompt"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(GENERATION_FLAGS), value=FLAG_VALUES)
def test_generation_flags_take_any_value_without_a_traceback(flag, value, ckpt):
    import contextlib
    import io

    err = io.StringIO()
    argv = ["generate", "--checkpoint", str(ckpt), "--prompt", "The", "--max-new-tokens", "2", flag, value]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:  # anything else escaping fails the test
            assert exc.code in (1, 2), err.getvalue()
            assert "error" in err.getvalue() and "Traceback" not in err.getvalue()


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "max_new_tokens": st.one_of(st.integers(-5, 10 ** 6), st.floats(), st.none()),
    "temperature": st.one_of(st.floats(), st.integers(), st.text(max_size=3)),
    "top_k": st.one_of(st.none(), st.integers(-2 ** 70, 2 ** 70), st.floats()),
    "top_p": st.one_of(st.none(), st.floats(), st.integers(-3, 3)),
    "repetition_penalty": st.one_of(st.floats(), st.integers(-3, 3)),
    "num_beams": st.one_of(st.integers(-3, 10), st.floats()),
    "length_penalty": st.floats(),
    "stop_strings": st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=3),
    "seed": st.one_of(st.none(), st.integers(-2 ** 70, 2 ** 70), st.booleans()),
}))
def test_generation_config_raises_only_its_own_error(values):
    try:
        GenerationConfig(**values).validate()
    except GenerationError:
        pass


def test_a_classifier_is_refused_by_the_commands_that_write_text(tmp_path, capsys):
    from conftest import tiny_classifier_config
    from omnigpt.checkpoint import save_checkpoint
    from omnigpt.model.omni import build_model
    from omnigpt.tokenizer import Tokenizer

    cfg = tiny_classifier_config()
    tok = Tokenizer.byte_level()
    save_checkpoint(tmp_path / "cls", 1, build_model(cfg, tok.image_id, tok.audio_id, tok), cfg, tok)
    for argv in (["generate", "--prompt", "hi"], ["caption", "x.png"], ["transcribe", "a.wav"]):
        err = fail(capsys, argv + ["--checkpoint", tmp_path / "cls"], 2)
        assert "is a classifier: use omnigpt classify" in err
    assert "it is scored on its classes" in fail(capsys, ["evaluate", "--checkpoint", tmp_path / "cls", "--task",
                                                         "caption"], 2)
    assert "was not trained on builtin:matching: give its test data with --data" in fail(
        capsys, ["evaluate", "--checkpoint", tmp_path / "cls"], 2)
    assert f"--image {tmp_path} is a folder; give a file" in fail(
        capsys, ["classify", "--checkpoint", tmp_path / "cls", "--image", tmp_path], 2)


def test_resume_with_nothing_to_resume_says_so_and_starts(ckpt, tmp_path, capsys):
    main(["pretrain", "--config", str(ckpt / "config.yaml"), "--out", str(tmp_path / "new"), "--max-steps", "1",
          "--resume", "--quiet"])
    assert f"nothing to resume in {tmp_path / 'new'}: starting a new run there" in capsys.readouterr().err


def test_a_yaml_syntax_error_is_one_line_naming_the_file_and_place(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  n_layer: [2\ntrain:\n  lr: 1\n")
    err = fail(capsys, ["pretrain", "--config", bad, "--out", tmp_path / "r"], 2)
    assert len(err.strip().splitlines()) == 1 and f"{bad}: not valid YAML at line" in err


def test_a_manifest_saved_with_a_byte_order_mark_reads(tmp_path):
    from PIL import Image

    from omnigpt.data.sources import read_source

    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_bytes(b"\xef\xbb\xbf" + b'{"image": "a.png", "text": "red"}\n')
    assert [row.text for row in read_source(str(tmp_path / "m.jsonl"))] == ["red"]


def test_chat_refuses_media_the_model_cannot_take_when_attached(ckpt, monkeypatch, capsys):
    said = iter(["/audio a.wav", "/image b.png", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(said))
    main(["chat", "--checkpoint", str(ckpt)])
    out = capsys.readouterr().out
    assert "error: this model does not take audio (it reads text)" in out
    assert "error: this model does not take image" in out and "attached" not in out


def test_chat_says_how_to_fit_a_message_longer_than_the_context(ckpt, monkeypatch, capsys):
    said = iter(["x" * 40, "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(said))
    main(["chat", "--checkpoint", str(ckpt), "--max-new-tokens", "4"])
    out = capsys.readouterr().out
    assert "exceeds the model's context of 32 tokens; shorten the message or lower --max-new-tokens" in out
    assert "--truncate" not in out


def test_transcribe_names_the_flags_when_the_overlap_does_not_fit_the_window(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from conftest import tiny_asr_config
    from omnigpt.checkpoint import save_checkpoint
    from omnigpt.model.omni import build_model
    from omnigpt.tokenizer import Tokenizer

    cfg, tok = tiny_asr_config(str(tmp_path)), Tokenizer.byte_level()
    save_checkpoint(tmp_path / "asr", 1, build_model(cfg, tok.image_id, tok.audio_id, tok), cfg, tok)
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    err = fail(capsys, ["transcribe", "--checkpoint", tmp_path / "asr", tmp_path / "a.wav", "--window", "2",
                        "--overlap", "1"], 2)
    assert "--overlap (1 s) must be less than half of --window (2 s)" in err
