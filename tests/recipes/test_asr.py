"""Speech end to end on built-in utterances: a recognizer that learns them by heart, the speech commands,
audio classification by prompt from class folders."""
import pytest

from conftest import tiny_asr_config
from omnigpt import generate, load_checkpoint
from omnigpt.data.prompts import CLASSIFY_PROMPT, TRANSCRIBE_PROMPT
from omnigpt.data.builtin import speech

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fusion", ["prefix", "cross_attention"])
def test_a_tiny_recognizer_learns_eight_utterances_by_heart(recognizer_run, speech_cache, fusion):
    ck = load_checkpoint(recognizer_run(fusion))
    clips = speech.speech_dataset("train", 8, 0, speech_cache)
    out = generate(ck.model, ck.tokenizer, [TRANSCRIBE_PROMPT] * 8, audio=[clips.audio(i) for i in range(8)],
                   max_new_tokens=30)
    assert [o.strip() for o in out] == list(clips.texts)


def test_speech_commands(tmp_path, speech_cache, capsys):
    import json

    from conftest import tiny_asr_config
    from omnigpt.cli import main

    tiny_asr_config(speech_cache, max_steps=2).save(tmp_path / "asr.yaml")
    main(["finetune", "--config", str(tmp_path / "asr.yaml"), "--out", str(tmp_path / "run"), "--quiet"])
    main(["speech-data", "--out", str(tmp_path / "sd"), "--count", "3", "--split", "test"])
    manifest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["manifest"]
    rows = [json.loads(line) for line in open(manifest)]
    wavs = [str(tmp_path / "sd" / r["audio"]) for r in rows]
    main(["transcribe", "--checkpoint", str(tmp_path / "run"), *wavs, "--format", "json", "--max-new-tokens", "4"])
    out = json.loads(capsys.readouterr().out)
    assert [r["audio"] for r in out] == wavs and all(isinstance(r["text"], str) for r in out)
    main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", manifest, "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert result["utterances"] == 3 and result["wer"] >= 0 and result["cer"] >= 0
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(SystemExit) as exc:
        main(["transcribe", "--checkpoint", str(tmp_path / "run"), str(tmp_path / "bad.wav")])
    assert exc.value.code == 1 and "bad.wav" in capsys.readouterr().err  # a failure at work, not a usage error


def _keyword_folders(root, words=("yes", "no", "stop")):
    """Class folders of spoken words: train/WORD/*.wav in 12 training voices, test/WORD/*.wav in 6 held-out ones."""
    import soundfile as sf

    for split, voices in (("train", speech.TRAIN_VOICES[::7][:12]), ("test", speech.TEST_VOICES[::4][:6])):
        for w in words:
            folder = root / split / w
            folder.mkdir(parents=True)
            for k, voice in enumerate(voices):
                wave, rate = speech.synthesize(w, voice, rate=150 + 10 * (k % 5), pitch=40 + 5 * (k % 4))
                sf.write(folder / f"{k}.wav", wave, rate)
    return root


def test_audio_classification_by_prompt(tmp_path, speech_cache, capsys):
    """Class folders train a model to answer '<audio> class:' with the label; it hears unseen voices right."""
    import json

    from omnigpt.cli import main
    from omnigpt.config import Config

    root = _keyword_folders(tmp_path / "kws")
    cfg = tiny_asr_config(speech_cache, max_steps=150, batch_size=8, lr=3e-3, warmup_steps=10, eval_interval=150,
                          save_interval=150).to_dict()
    cfg["data"].update(sources=[f"audiofolder:{root / 'train'}"], val_fraction=0.1)
    Config.from_dict(cfg).save(tmp_path / "kws.yaml")
    main(["finetune", "--config", str(tmp_path / "kws.yaml"), "--out", str(tmp_path / "run"), "--quiet"])
    capsys.readouterr()
    main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--task", "classify", "--data",
          f"audiofolder:{root / 'test'}", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert result["classes"] == ["no", "stop", "yes"] and result["count"] == 18
    assert result["accuracy"] >= 0.8 and result["macro_f1"] >= 0.8
    assert sum(map(sum, result["confusion"])) == 18
    assert (tmp_path / "run" / "confusion.png").stat().st_size > 0
    main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--task", "classify", "--data",
          f"audiofolder:{root / 'test'}", "--limit", "6", "--quiet"])
    limited = json.loads(capsys.readouterr().out)  # a sample across the class folders, not the first class
    assert limited["count"] == 6 and sum(s > 0 for s in map(sum, limited["confusion"])) >= 2
    clip = str(root / "test" / "stop" / "0.wav")
    main(["generate", "--checkpoint", str(tmp_path / "run"), "--prompt", CLASSIFY_PROMPT, "--audio", clip,
          "--max-new-tokens", "3", "--json"])
    assert json.loads(capsys.readouterr().out)[0]["completion"].strip() in ("no", "stop", "yes")
    with pytest.raises(SystemExit):
        main(["generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "<audio> <audio> class:", "--audio", clip])
    assert "2 <audio> placeholder(s) but 1 --audio file(s)" in capsys.readouterr().err
