"""bench/audio_batches.py: loading and featurising many clips at once (`load_audio_batch`,
`iter_audio_batches`, `log_mel_batch`), which the audio pipeline benchmark times against clip-by-clip."""
import io

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_batches import iter_audio_batches, load_audio_batch, log_mel_batch
from omnigpt.data.audio import AudioError, MelConfig, load_audio, log_mel

SR = 16000


def voice(seconds: float, sr: int, seed: int, channels: int = 1) -> np.ndarray:
    """A gliding tone with a tremolo and a little noise: (frames,) or (frames, channels) float32."""
    rs = np.random.RandomState(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = rs.uniform(100, 300)
    x = 0.4 * np.sin(2 * np.pi * (f0 * t + 80 * t ** 2)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    x += 0.02 * rs.randn(len(t))
    if channels == 1:
        return x.astype(np.float32)
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture
def clips(tmp_path) -> list:
    """Seven short files in three formats, four sample rates, mono and stereo."""
    specs = [("a.wav", "WAV", "PCM_16", 44100, 1), ("b.flac", "FLAC", "PCM_16", 22050, 2),
             ("c.ogg", "OGG", "VORBIS", 48000, 1), ("d.wav", "WAV", "FLOAT", 16000, 2),
             ("e.flac", "FLAC", "PCM_24", 16000, 1), ("f.ogg", "OGG", "VORBIS", 22050, 2),
             ("g.wav", "WAV", "PCM_16", 8000, 1)]
    paths = []
    for i, (name, fmt, subtype, sr, channels) in enumerate(specs):
        sf.write(str(tmp_path / name), voice(0.3 + 0.1 * i, sr, seed=i, channels=channels), sr, format=fmt,
                 subtype=subtype)
        paths.append(tmp_path / name)
    return paths


def not_audio(path):
    path.write_bytes(np.random.RandomState(0).bytes(3000))
    return path


# ----------------------------------------------------------------------------------------- load_audio_batch

@pytest.mark.parametrize("workers", [1, 2, 3])
def test_batch_is_load_audio_per_file_in_order(clips, workers):
    got = load_audio_batch(clips, SR, workers=workers)
    assert len(got) == len(clips)
    for path, wave in zip(clips, got):
        assert torch.equal(wave, load_audio(path, SR))


def test_batch_takes_bytes_and_other_rates(clips):
    sources = [clips[0], clips[1].read_bytes(), str(clips[2])]
    got = load_audio_batch(sources, 22050)
    assert [torch.equal(g, load_audio(s, 22050)) for g, s in zip(got, sources)] == [True] * 3
    assert load_audio_batch([]) == []


def test_a_bad_file_is_named_and_the_first_in_order_is_reported(clips, tmp_path):
    bad = not_audio(tmp_path / "broken.wav")
    with pytest.raises(AudioError, match=r"broken\.wav: not an audio file"):
        load_audio_batch(clips[:3] + [bad] + clips[3:])
    with pytest.raises(AudioError, match=r"not found: .*missing\.flac"):
        load_audio_batch([clips[0], tmp_path / "missing.flac", bad], workers=2)


def test_bytes_are_named_by_their_index(clips):
    junk = np.random.RandomState(1).bytes(3000)
    with pytest.raises(AudioError, match=r"<bytes #2>: not an audio file"):
        load_audio_batch([clips[0].read_bytes(), clips[1], junk])


def test_max_seconds_applies_to_every_file(clips):
    with pytest.raises(AudioError, match=r"g\.wav: audio is 0\.90 s long, over the limit of 0\.8 s"):
        load_audio_batch(clips, max_seconds=0.8)


@pytest.mark.parametrize("workers", [0, -1, 1.5])
def test_workers_must_be_a_positive_int(clips, workers):
    with pytest.raises(ValueError, match="workers must be a positive int"):
        load_audio_batch(clips, workers=workers)


# --------------------------------------------------------------------------------------- iter_audio_batches

@pytest.mark.parametrize("workers", [1, 2])
def test_batches_come_in_order_and_cover_every_file(clips, workers):
    batches = list(iter_audio_batches(clips, 3, SR, workers=workers))
    assert [len(b) for b in batches] == [3, 3, 1]
    for path, wave in zip(clips, [w for b in batches for w in b]):
        assert torch.equal(wave, load_audio(path, SR))


def test_an_error_comes_with_the_batch_that_holds_the_bad_file(clips, tmp_path):
    bad = not_audio(tmp_path / "broken.ogg")
    batches = iter_audio_batches(clips[:2] + [bad] + clips[2:], 2)
    assert len(next(batches)) == 2
    with pytest.raises(AudioError, match=r"broken\.ogg: not an audio file"):
        next(batches)


def test_closing_early_and_bad_batch_size(clips):
    batches = iter_audio_batches(clips, 2)
    first = next(batches)
    batches.close()
    assert torch.equal(first[1], load_audio(clips[1]))
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        iter_audio_batches(clips, 0)


# ------------------------------------------------------------------------------------------- log_mel_batch

def padded(waves: list, n: int) -> torch.Tensor:
    out = torch.zeros(len(waves), n)
    for row, w in zip(out, waves):
        row[:min(n, len(w))] = w[:n]
    return out


@pytest.mark.parametrize("cfg", [MelConfig(), MelConfig(log="natural"), MelConfig.whisper(),
                                 MelConfig(sample_rate=8000, n_fft=255, hop_length=100, n_mels=32,
                                           pad_to_seconds=0.5)])
def test_log_mel_batch_equals_log_mel_of_the_padded_batch(cfg):
    # Lengths around the edges of the frames that still see a wave's samples, a silent wave, an empty one,
    # and (with pad_to_seconds) waves longer than the pad, which are cut.
    lengths = [16000, 15999, 15600, 15500, 1, 0, 7777, 200, 4001, 12345]
    rs = np.random.RandomState(0)
    waves = [torch.from_numpy(voice(n / SR, SR, seed=i)[:n]) if i != 7 else torch.zeros(n)
             for i, n in enumerate(lengths)]
    waves[3] *= 1e-4  # a quiet clip: its 8-decade floor sits below the loud ones'
    waves.append(torch.from_numpy(rs.uniform(-1, 1, 3000).astype(np.float32)))
    n = cfg.pad_samples or max(len(w) for w in waves)
    want = log_mel(padded(waves, n), cfg)
    got = log_mel_batch(waves, cfg)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)  # bit for bit with MKL; allow an ulp elsewhere


def test_log_mel_batch_takes_numpy_and_rejects_bad_input():
    cfg = MelConfig()
    waves = [voice(0.5, SR, seed=1), voice(0.25, SR, seed=2)]
    assert log_mel_batch(waves, cfg).shape == (2, 80, 50)
    with pytest.raises(ValueError, match="at least one wave"):
        log_mel_batch([], cfg)
    with pytest.raises(ValueError, match=r"wave 1 has \(2, 8000\)"):
        log_mel_batch([waves[0], np.zeros((2, 8000), np.float32)], cfg)
    with pytest.raises(ValueError, match="too short for n_fft=400"):
        log_mel_batch([np.zeros(150, np.float32), np.zeros(200, np.float32)], cfg)


def test_clip_from_wav_bytes_through_both_batch_functions():
    buf = io.BytesIO()
    sf.write(buf, voice(1.0, 44100, seed=3), 44100, format="WAV", subtype="PCM_16")
    (wave,) = load_audio_batch([buf.getvalue()])
    feats = log_mel_batch([wave], MelConfig.whisper())
    assert feats.shape == (1, 80, 3000)
    torch.testing.assert_close(feats[0], log_mel(wave, MelConfig.whisper()), rtol=1e-6, atol=1e-6)
