import io
import random

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import speechlike
from omnigpt.data.audio import (AudioError, MelConfig, SpecAugment, add_noise, frames_for, load_audio, log_mel,
                                mel_filterbank, resample)
from omnigpt.data.text import DataError

SR = 16000


def tone(freq: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wave: torch.Tensor | np.ndarray, sr: int) -> float:
    x = np.asarray(wave, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


def write(path, data: np.ndarray, sr: int, **kw):
    sf.write(str(path), data, sr, **kw)
    return path


# --------------------------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("sr,subtype,channels", [
    (8000, "PCM_16", 1), (22050, "FLOAT", 1), (44100, "PCM_16", 2), (48000, "FLOAT", 2), (16000, "PCM_16", 1),
])
def test_wav_decodes_to_one_second_at_16k(tmp_path, sr, subtype, channels):
    data = tone(440, 1.0, sr)
    if channels == 2:
        data = np.stack([data, 0.5 * data], axis=1)
    wave = load_audio(write(tmp_path / "a.wav", data, sr, subtype=subtype))
    assert wave.dtype == torch.float32 and wave.dim() == 1
    assert abs(len(wave) - SR) <= 1
    assert abs(peak_hz(wave, SR) - 440) <= 1
    assert float(wave.abs().max()) <= 1.0


@pytest.mark.parametrize("fmt,subtype,sr", [("FLAC", "PCM_16", 44100), ("OGG", "VORBIS", 48000),
                                            ("MP3", "MPEG_LAYER_III", 44100)])
def test_compressed_formats_decode(tmp_path, fmt, subtype, sr):
    path = tmp_path / f"a.{fmt.lower()}"
    try:
        write(path, tone(440, 1.0, sr), sr, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, TypeError, ValueError) as exc:
        pytest.skip(f"this libsndfile cannot write {fmt}: {exc}")
    wave = load_audio(path)
    assert abs(len(wave) - SR) <= (1 if fmt == "FLAC" else SR // 20)  # lossy codecs may add priming samples
    assert abs(peak_hz(wave, SR) - 440) <= 1


def test_tone_keeps_its_pitch_and_shape_after_resampling():
    src = tone(440, 1.0, 44100)
    out = resample(src, 44100, SR)
    assert abs(len(out) - SR) <= 1
    assert abs(peak_hz(out, SR) - 440) <= 1
    ideal = tone(440, 1.0, SR)
    assert np.abs(out.numpy()[200:-200] - ideal[200:-200]).max() < 1e-3  # away from the filter's edges


def test_resample_takes_channels_first_and_numpy_or_torch():
    stereo = np.stack([tone(440, 0.5, 48000), tone(1000, 0.5, 48000)])
    out = resample(torch.from_numpy(stereo), 48000, SR)
    assert out.shape == (2, 8000) and out.dtype == torch.float32
    assert abs(peak_hz(out[0], SR) - 440) <= 2 and abs(peak_hz(out[1], SR) - 1000) <= 2
    same = resample(stereo, 48000, 48000)
    assert torch.equal(same, torch.from_numpy(stereo))


def test_stereo_is_mixed_to_the_mean_of_its_channels(tmp_path):
    left, right = tone(300, 0.25, SR, 0.8), tone(1200, 0.25, SR, 0.3)
    wave = load_audio(write(tmp_path / "s.wav", np.stack([left, right], axis=1), SR, subtype="FLOAT"))
    np.testing.assert_allclose(wave.numpy(), (left + right) / 2, atol=1e-7)


def test_int16_full_scale_is_one(tmp_path):
    data = np.array([32767, -32768, 16384, 0] * 100, dtype=np.int16)
    wave = load_audio(write(tmp_path / "full.wav", data, SR, subtype="PCM_16"))
    assert wave[:4].tolist() == pytest.approx([32767 / 32768, -1.0, 0.5, 0.0])


def test_int32_and_bytes_input(tmp_path):
    data = (tone(440, 0.5, SR) * 2 ** 31).astype(np.int32)
    path = write(tmp_path / "i32.wav", data, SR, subtype="PCM_32")
    from_path = load_audio(path)
    np.testing.assert_allclose(from_path.numpy(), tone(440, 0.5, SR), atol=1e-6)
    assert torch.equal(load_audio(path.read_bytes()), from_path)


# ----------------------------------------------------------------------------------------------- errors

def wav_bytes(data: np.ndarray, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, SR, format=fmt, subtype=subtype)
    return buf.getvalue()


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="not found.*nope.wav"):
        load_audio(path)


def test_random_bytes_are_not_audio(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.RandomState(0).bytes(4000))
    with pytest.raises(AudioError, match=r"noise\.wav: not an audio file"):
        load_audio(path)
    with pytest.raises(AudioError, match="clip-7: not an audio file"):
        load_audio(path.read_bytes(), name="clip-7")


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_truncated_wav_is_an_error(tmp_path, subtype):
    # libsndfile itself reads a cut-off WAV without complaint, returning only the frames that are present.
    full = wav_bytes(tone(440, 1.0, SR), subtype)
    path = tmp_path / "cut.wav"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(AudioError, match=r"cut\.wav: WAV file is truncated: its header declares 16000 frames"):
        load_audio(path)


def test_truncated_flac_is_an_error(tmp_path):
    full = wav_bytes(speechlike(2.0, 0), fmt="FLAC")
    path = tmp_path / "cut.flac"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(AudioError, match=r"cut\.flac: .*truncated"):
        load_audio(path)


def test_wav_with_complete_data_and_a_trailing_chunk_loads(tmp_path):
    data = wav_bytes(tone(440, 0.5, SR))
    trailer = b"LIST" + (4).to_bytes(4, "little") + b"INFO"  # metadata after the samples, as some tools write
    riff_size = int.from_bytes(data[4:8], "little") + len(trailer)
    path = tmp_path / "meta.wav"
    path.write_bytes(data[:4] + riff_size.to_bytes(4, "little") + data[8:] + trailer)
    assert len(load_audio(path)) == 8000


def test_truncated_mp3_is_an_error(tmp_path):
    try:
        full = wav_bytes(speechlike(2.0, 0), "MPEG_LAYER_III", fmt="MP3")
    except sf.LibsndfileError as exc:
        pytest.skip(f"this libsndfile cannot write MP3: {exc}")
    path = tmp_path / "cut.mp3"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(AudioError, match=r"cut\.mp3: audio is truncated: the header announces 32000 frames"):
        load_audio(path)


def test_empty_audio_is_an_error(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(wav_bytes(np.zeros(0, np.float32)))
    with pytest.raises(AudioError, match=r"empty\.wav: audio has no samples"):
        load_audio(path)
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    with pytest.raises(AudioError, match=r"zero\.wav: audio file is empty"):
        load_audio(zero)


def test_max_seconds_is_checked(tmp_path):
    path = write(tmp_path / "long.wav", tone(440, 2.0, 8000), 8000)
    with pytest.raises(AudioError, match=r"long\.wav: audio is 2\.00 s long, over the limit of 1\.5 s"):
        load_audio(path, max_seconds=1.5)
    assert len(load_audio(path, max_seconds=2.0)) == 2 * SR


def test_audio_error_is_a_data_error():
    assert issubclass(AudioError, DataError)


# -------------------------------------------------------------------------------------------- mel bank

def test_mel_filterbank_shape_and_order():
    fb = mel_filterbank(80, 400, SR, 0.0, 8000.0)
    assert fb.shape == (80, 201) and fb.dtype == torch.float32
    assert (fb >= 0).all() and (fb.sum(dim=1) > 0).all()
    peaks = fb.argmax(dim=1)
    assert (peaks[1:] >= peaks[:-1]).all() and peaks[-1] > peaks[0]
    bins_hz = torch.linspace(0, SR / 2, 201)
    centres = (fb * bins_hz).sum(1) / fb.sum(1)
    assert (centres[1:] > centres[:-1]).all()
    assert centres[-1] < 8000 and centres[0] < 100


# ------------------------------------------------------------------------------------------- log-mel


@pytest.mark.parametrize("log", ["whisper", "natural"])
def test_batched_log_mel_equals_one_by_one(log):
    cfg = MelConfig(log=log)
    waves = torch.stack([torch.from_numpy(speechlike(2.0, s, loudness=g)) for s, g in [(0, 1.0), (1, 1e-3), (2, 0.2)]])
    batched = log_mel(waves, cfg)
    assert batched.shape == (3, 80, frames_for(waves.shape[1], cfg)) == (3, 80, 200)
    for i in range(3):
        torch.testing.assert_close(batched[i], log_mel(waves[i], cfg), atol=1e-5, rtol=1e-5)


def test_natural_log_mel_puts_a_tone_in_its_band():
    cfg = MelConfig(log="natural")
    feats = log_mel(torch.from_numpy(tone(1000, 1.0, SR)), cfg)
    centres = (mel_filterbank(80, 400, SR) * torch.linspace(0, SR / 2, 201)).sum(1) / mel_filterbank(80, 400, SR).sum(1)
    loudest = feats[:, 10:-10].mean(dim=1).argmax()
    assert abs(float(centres[loudest]) - 1000) < 60
    silent = log_mel(torch.zeros(SR), cfg)
    assert torch.allclose(silent, torch.full_like(silent, float(np.log(1e-6))))


def test_frames_for_matches_log_mel():
    assert frames_for(123, MelConfig.whisper()) == 3000
    for n in (16000, 16100, 16159, 401):
        assert log_mel(torch.zeros(n), MelConfig()).shape == (80, frames_for(n, MelConfig())) == (80, n // 160)


def test_log_mel_rejects_a_too_short_wave_and_bad_config():
    with pytest.raises(ValueError, match="too short"):
        log_mel(torch.zeros(150), MelConfig())
    with pytest.raises(ValueError, match="f_max"):
        MelConfig(f_max=9000.0)
    with pytest.raises(ValueError, match="MelConfig.log"):
        MelConfig(log="ln")


# --------------------------------------------------------------------------------------------- augment

def random_features(*shape) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def test_spec_augment_is_reproducible_by_seed():
    feats, aug = random_features(4, 80, 300), SpecAugment()
    a, b = aug.apply(feats, random.Random(5)), aug.apply(feats, random.Random(5))
    assert torch.equal(a, b) and not torch.equal(a, feats)
    assert not torch.equal(a, aug.apply(feats, random.Random(6)))
    assert not torch.equal(a[0] != feats[0], a[1] != feats[1])  # each example draws its own masks


def test_spec_augment_masks_stay_within_widths():
    feats = random_features(80, 300)
    aug = SpecAugment(freq_masks=1, freq_width=15, time_masks=1, time_width=40)
    widest = (0, 0)
    for seed in range(100):
        out = aug.apply(feats, random.Random(seed))
        fill = feats.mean()
        rows = torch.nonzero((out == fill).all(dim=1)).flatten()
        cols = torch.nonzero((out == fill).all(dim=0)).flatten()
        if len(rows):
            assert rows[-1] - rows[0] + 1 == len(rows) <= 15  # one contiguous band
        if len(cols):
            assert cols[-1] - cols[0] + 1 == len(cols) <= 40
        changed = out != feats
        assert (changed <= ((out == fill).all(1, keepdim=True) | (out == fill).all(0, keepdim=True))).all()
        widest = (max(widest[0], len(rows)), max(widest[1], len(cols)))
    assert widest[0] >= 10 and widest[1] >= 30  # the widths are really drawn up to their maxima


def test_inactive_spec_augment_is_identity():
    feats = random_features(80, 100)
    aug = SpecAugment(freq_masks=0, time_masks=3, time_width=0)
    assert not aug.active and SpecAugment().active
    assert aug.apply(feats, random.Random(0)) is feats


def test_add_noise_hits_the_target_snr_and_is_reproducible():
    clean = torch.from_numpy(speechlike(10.0, 5))
    for snr in (0.0, 10.0, 25.0):
        noisy = add_noise(clean, snr, random.Random(1))
        noise = noisy - clean
        measured = 10 * torch.log10(clean.square().mean() / noise.square().mean())
        assert abs(float(measured) - snr) < 0.5
    assert torch.equal(add_noise(clean, 10.0, random.Random(2)), add_noise(clean, 10.0, random.Random(2)))
    assert not torch.equal(add_noise(clean, 10.0, random.Random(2)), add_noise(clean, 10.0, random.Random(3)))


def test_add_noise_scales_per_example_and_keeps_silence():
    batch = torch.stack([torch.from_numpy(speechlike(5.0, 6)), 0.01 * torch.from_numpy(speechlike(5.0, 6)),
                         torch.zeros(5 * SR)])
    noise = add_noise(batch, 20.0, random.Random(0)) - batch
    snr = 10 * torch.log10(batch[:2].square().mean(1) / noise[:2].square().mean(1))
    assert (snr - 20.0).abs().max() < 0.5
    assert torch.equal(noise[2], torch.zeros(5 * SR))
