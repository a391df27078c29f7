"""Speech recognition end to end on built-in utterances: training, transcripts, alone vs batched."""
import pytest

from conftest import tiny_asr_config
from omnigpt import generate, load_checkpoint, train
from omnigpt.data import speech
from omnigpt.generate import GenerationError


@pytest.fixture(scope="module")
def speech_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("speech-cache"))


@pytest.mark.parametrize("fusion", ["prefix", "cross_attention"])
def test_a_tiny_recognizer_learns_eight_utterances_by_heart(tmp_path, speech_cache, fusion):
    cfg = tiny_asr_config(speech_cache, max_steps=250, batch_size=8, lr=3e-3, warmup_steps=10,
                          eval_interval=250, save_interval=250)
    cfg.fusion.mode = fusion
    train(cfg, tmp_path / "asr", progress=False)
    ck = load_checkpoint(tmp_path / "asr")
    clips = speech.speech_dataset("train", 8, 0, speech_cache)
    out = generate(ck.model, ck.tokenizer, [speech.TRANSCRIBE_PROMPT] * 8, audio=[clips.audio(i) for i in range(8)],
                   max_new_tokens=30)
    assert [o.strip() for o in out] == list(clips.texts)


def test_audio_prompts_are_checked(tmp_path, speech_cache):
    train(tiny_asr_config(speech_cache, max_steps=1), tmp_path / "asr", progress=False)
    ck = load_checkpoint(tmp_path / "asr")
    clip = speech.speech_dataset("train", 8, 0, speech_cache).audio(0)
    with pytest.raises(GenerationError, match=r"1 <audio> placeholder\(s\) but 2 audio clip\(s\)"):
        generate(ck.model, ck.tokenizer, "<audio> transcript:", audio=[clip, clip], max_new_tokens=2)
    with pytest.raises(GenerationError, match="one audio clip .* per prompt"):
        generate(ck.model, ck.tokenizer, ["<audio> a", "<audio> b"], audio=clip, max_new_tokens=2)
    alone = generate(ck.model, ck.tokenizer, "<audio> transcript:", audio=clip, max_new_tokens=4)
    short = speech.speech_dataset("train", 8, 0, speech_cache).audio(1)
    batched = generate(ck.model, ck.tokenizer, ["<audio> transcript:"] * 2, audio=[clip, short], max_new_tokens=4)
    assert batched[0] == alone


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
    assert exc.value.code == 2 and "bad.wav" in capsys.readouterr().err


def test_an_audio_manifest_trains(tmp_path, speech_cache):
    manifest = speech.write_speech_dataset(tmp_path / "sd", "train", 6)
    cfg = tiny_asr_config(speech_cache, max_steps=2)
    cfg.data.sources = [str(manifest)]
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.step == 2 and result.val_loss is not None


def test_audio_augmentation_is_seeded_and_resume_exact(tmp_path, speech_cache):
    import torch

    cfg = tiny_asr_config(speech_cache, max_steps=6, save_interval=3, freeze=["audio"])
    cfg.data.audio_augment.time_masks = 2
    cfg.data.audio_augment.freq_masks = 1
    cfg.data.audio_augment.noise_snr_db = [10.0, 30.0]
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "split", stop_at_step=3, progress=False)
    train(cfg, tmp_path / "split", resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight").model.state_dict()
    b = load_checkpoint(tmp_path / "split").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    from omnigpt.model.omni import OmniGPT
    ck = load_checkpoint(tmp_path / "straight")
    torch.manual_seed(cfg.train.seed)
    init = OmniGPT(ck.config, ck.model.image_token_id, ck.model.audio_token_id).state_dict()
    assert all(torch.equal(a[k], init[k]) for k in init if k.startswith("audio_encoder."))  # frozen
