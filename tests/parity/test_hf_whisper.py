"""Whisper's encoder imported from a Hugging Face folder computes what `transformers` computes: from the same WAV
file, through each side's own features (WhisperFeatureExtractor there, `Inputs.audio` here), the encoder states
agree within 1e-4. A tiny random WhisperForConditionalGeneration with a 1 s window (50 positions, 100 frames)
stands in for the released models' 30 s."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
sf = pytest.importorskip("soundfile")

from omnigpt.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from omnigpt.config import Config, ModelConfig  # noqa: E402
from omnigpt.data.examples import Example  # noqa: E402
from omnigpt.data.inputs import Inputs  # noqa: E402
from omnigpt.interop.folder import HFError  # noqa: E402
from omnigpt.interop.whisper import audio_config, load_audio_encoder  # noqa: E402
from omnigpt.model.audio import AudioEncoder  # noqa: E402
from omnigpt.model.omni import build_model  # noqa: E402
from omnigpt.tokenizer import Tokenizer  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    """(folder, the transformers model, a 0.6 s WAV file in the folder)."""
    folder = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(
        vocab_size=64, num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=48,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, max_source_positions=50,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
        suppress_tokens=None, begin_suppress_tokens=None)).eval()
    with torch.no_grad():  # biases, norms and the position table moved off their initial values: every tensor counts
        for p in (*model.parameters(), model.model.encoder.embed_positions.weight):
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=1).save_pretrained(folder)  # 1 s window
    t = np.arange(int(0.6 * SR)) / SR
    wave = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(folder / "tone.wav", wave.astype(np.float32), SR, subtype="PCM_16")
    return folder, model, folder / "tone.wav"


@pytest.fixture(scope="module")
def expected(whisper):
    """transformers' encoder states for the WAV file, (1, 50, 32), from its own feature extractor."""
    folder, model, wav = whisper
    samples, rate = sf.read(wav, dtype="float32")
    features = transformers.WhisperFeatureExtractor.from_pretrained(folder)(
        samples, sampling_rate=rate, return_tensors="pt").input_features
    with torch.no_grad():
        return model.model.encoder(features).last_hidden_state


def encode(cfg, encoder, wav):
    features = Inputs(Config(model=ModelConfig(), audio=cfg)).audio(wav)
    with torch.no_grad():
        return encoder(features[None], torch.tensor([features.shape[-1]]))


def test_encoder_states_match_transformers_from_a_wav_file(whisper, expected):
    folder, _, wav = whisper
    cfg, encoder = load_audio_encoder(folder)
    assert (cfg.encoder, cfg.n_mels, cfg.max_seconds, cfg.pad_to_window) == ("whisper", 80, 1.0, True)
    states, lengths = encode(cfg, encoder, wav)
    assert states.shape == expected.shape == (1, 50, 32) and lengths.tolist() == [cfg.tokens_for_frames(60)] == [50]
    assert (states - expected).abs().max().item() < 1e-4


def test_pooling_averages_whisper_states(whisper, expected):
    folder, _, wav = whisper
    cfg, encoder = load_audio_encoder(folder)
    cfg.pool = 2  # the same weights read with pooling: 25 vectors a clip
    states, lengths = encode(cfg, encoder, wav)
    assert lengths.tolist() == [25] == [cfg.tokens_for_frames(1)]
    assert (states - expected.view(1, 25, 2, 32).mean(2)).abs().max().item() < 1e-4


def test_without_the_window_a_clip_keeps_its_length_and_padding_changes_nothing(whisper):
    cfg = dataclasses.replace(audio_config(whisper[0]), pad_to_window=False)
    torch.manual_seed(0)
    encoder = AudioEncoder(cfg).eval()
    short, long = torch.randn(80, 37), torch.randn(80, 90)
    batch = torch.full((2, 80, 90), 5.0)  # whatever fills the padding must not matter
    batch[0, :, :37], batch[1] = short, long
    with torch.no_grad():
        alone, n = encoder(short[None], torch.tensor([37]))
        together, lengths = encoder(batch, torch.tensor([37, 90]))
    assert n.tolist() == [19] and lengths.tolist() == [19, 45] == [cfg.tokens_for_frames(37), cfg.tokens_for_frames(90)]
    torch.testing.assert_close(together[0, :19], alone[0], atol=1e-5, rtol=1e-4)
    assert (together[0, 19:] == 0).all()


def copy_of(whisper, tmp_path, config=None, change=None):
    """The Whisper folder copied to tmp_path, its config.json updated by `config`, its tensors by `change`."""
    folder = whisper[0]
    hf = {**json.loads((folder / "config.json").read_text()), **(config or {})}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    weights = load_file(folder / "model.safetensors")
    if change:
        change(weights)
    save_file(weights, tmp_path / "model.safetensors")
    return tmp_path


def test_an_unsupported_model_type_is_named_with_the_supported_ones(whisper, tmp_path):
    with pytest.raises(HFError, match=r"model_type 'wav2vec2' is not supported.*omnigpt reads whisper"):
        load_audio_encoder(copy_of(whisper, tmp_path, {"model_type": "wav2vec2"}))


def test_a_missing_tensor_is_named(whisper, tmp_path):
    folder = copy_of(whisper, tmp_path, change=lambda w: w.pop("model.encoder.layers.1.fc2.weight"))
    with pytest.raises(HFError, match=r"lack the tensor 'model.encoder.layers.1.fc2.weight'"):
        load_audio_encoder(folder)


def test_a_tensor_of_the_wrong_shape_is_named_with_both_shapes(whisper, tmp_path):
    def narrow(w):
        w["model.encoder.layers.0.self_attn.k_proj.weight"] = torch.zeros(16, 32)
    with pytest.raises(HFError, match=r"model.encoder.layers.0.self_attn.k_proj.weight has shape \(16, 32\), "
                                      r"the config gives \(32, 32\)"):
        load_audio_encoder(copy_of(whisper, tmp_path, change=narrow))


def test_a_feature_extractor_with_another_window_is_refused(whisper, tmp_path):
    folder = copy_of(whisper, tmp_path)
    transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(folder)
    with pytest.raises(HFError, match=r"pads to 32000 samples, the encoder's window is 100 frames"):
        audio_config(folder)


def test_an_omnigpt_with_the_whisper_encoder_trains_saves_and_loads(whisper, tmp_path):
    folder, _, wav = whisper
    audio, encoder = load_audio_encoder(folder)
    audio.pool = 2
    cfg = Config(model=ModelConfig(vocab_size=272, block_size=64, n_layer=1, n_head=2, n_embd=32), audio=audio)
    tok = Tokenizer.byte_level()
    torch.manual_seed(0)
    model = build_model(cfg, tok.image_id, tok.audio_id, tok)
    model.audio_encoder.load_state_dict(encoder.state_dict())
    inputs = Inputs(cfg, tok)
    batch = inputs.collate([inputs.features(Example("<audio> transcript:", "la", "transcribe", audio=wav))])
    assert int((batch.ids == tok.audio_id).sum()) == 25
    logits, loss = model(**batch.model_inputs())
    loss.backward()
    assert model.audio_encoder.conv1.weight.grad.abs().sum() > 0
    saved = save_checkpoint(tmp_path / "run", 1, model, cfg, tok)
    loaded = load_checkpoint(saved, device="cpu", dtype=torch.float32)
    assert loaded.config.audio == audio
    torch.testing.assert_close(loaded.model.audio_encoder.position_table, encoder.position_table)  # Whisper's
    with torch.no_grad():
        again, _ = loaded.model(**batch.model_inputs())
        torch.testing.assert_close(again, model.eval()(**batch.model_inputs())[0])
