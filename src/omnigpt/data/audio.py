"""Audio data: decode a file to mono float samples, resample, compute log-mel features, augment.

The path of one clip: `load_audio` (file or bytes -> 1-D float32 tensor at 16 kHz) -> `add_noise` (training
only, seeded) -> `log_mel` (samples -> (n_mels, frames)) -> `SpecAugment.apply` (training only, seeded).
Everything is soundfile + soxr + numpy + torch; no torchaudio, no librosa.

Conventions:
- Channels are mixed to mono by their mean; samples are float32 in [-1, 1] (int16 full scale is 32767/32768;
  a float file louder than full scale, and resampling overshoot on a full-scale signal, are clipped).
- Resampling is soxr at quality "HQ" (soxr's default: 20-bit precision, about -120 dB, linear phase),
  transparent for speech and for log-mel features floored 80 dB below their peak. "VHQ" (28-bit) costs
  about the same but buys nothing the features can show.
- A truncated file is an error, never silently shortened audio. libsndfile reads a cut-off WAV without
  complaint (it returns the frames present), so a RIFF/RF64 WAV's data-chunk size is checked against the
  file; other formats are checked by decoding fewer frames than their header announced, or a decoder error.
  (W64 and AIFF files are read as libsndfile reads them: a truncated one loads shortened.)
- `MelConfig.whisper()` reproduces Whisper's features: 25 ms periodic-Hann STFT every 10 ms, Slaney mel
  filters, log10, a dynamic range of 8 decades per example, scaled by (x + 4) / 4, and 30 s of zero padding.
"""
from __future__ import annotations

import functools
import io
import math
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Optional, Union

import numpy as np
import torch

from ..extras import optional
from .text import DataError

sf = optional("soundfile")
soxr = optional("soxr")

RESAMPLE_QUALITY = "HQ"
LOG_MODES = ("whisper", "natural")
# MP3 headers without a Xing/Info frame only estimate the length; allow that much shortfall before calling a
# decoded stream truncated. Every other format states its length exactly.
_MP3_LENGTH_SLACK = 0.02

AudioSource = Union[str, Path, bytes]


class AudioError(DataError):
    """An audio file is missing, unreadable, truncated, empty, in an unsupported format, or too long."""


# --------------------------------------------------------------------------------------------- decoding

def load_audio(path_or_bytes: AudioSource, sample_rate: int = 16000, max_seconds: Optional[float] = None,
               *, name: Optional[str] = None) -> torch.Tensor:
    """Decode an audio file (WAV, FLAC, OGG/Vorbis, MP3, ...; any rate, any channel count, int or float
    samples) into a 1-D float32 mono tensor in [-1, 1] at `sample_rate` Hz, shape (samples,).

    `max_seconds`: the duration in the header is checked before any sample is decoded. `path_or_bytes` may
    be the bytes of an encoded file; `name` (a URL, a tar member) then stands for it in error messages.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        label = name or "<bytes>"
        if not data:
            raise AudioError(f"{label}: audio is empty (0 bytes)")
        return _decode(io.BytesIO(data), len(data), label, sample_rate, max_seconds)
    path = Path(path_or_bytes)
    label = name or str(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {label}")
    if not path.is_file():
        raise AudioError(f"not an audio file (a directory or device): {label}")
    n_bytes = path.stat().st_size
    if n_bytes == 0:
        raise AudioError(f"{label}: audio file is empty (0 bytes)")
    with open(path, "rb") as f:
        return _decode(f, n_bytes, label, sample_rate, max_seconds)


def _decode(source: BinaryIO, n_bytes: int, name: str, sample_rate: int,
            max_seconds: Optional[float]) -> torch.Tensor:
    if sample_rate <= 0:
        raise ValueError(f"load_audio: sample_rate must be > 0, got {sample_rate!r}")
    # libsndfile quietly shortens a WAV whose data chunk is cut off, so the header is checked by hand.
    _check_wav_complete(source, n_bytes, name)
    source.seek(0)
    try:
        with sf.SoundFile(source) as f:
            frames, rate, fmt = f.frames, f.samplerate, f.format
            if frames <= 0:
                raise AudioError(f"{name}: audio has no samples (0 frames)")
            if max_seconds is not None and frames / rate > max_seconds:
                raise AudioError(f"{name}: audio is {frames / rate:.2f} s long, over the limit of "
                                 f"{max_seconds:g} s")
            samples = f.read(dtype="float32", always_2d=True)  # (frames, channels), int scaled to [-1, 1)
    except AudioError:
        raise
    except sf.LibsndfileError as exc:
        if "not recognised" in str(exc).lower():
            raise AudioError(f"{name}: not an audio file, or a format libsndfile cannot read "
                             f"(WAV, FLAC, OGG, MP3 are supported)") from None
        raise AudioError(f"{name}: cannot decode audio, truncated or corrupt ({exc.error_string})") from None
    except (RuntimeError, OSError, ValueError, EOFError) as exc:
        raise AudioError(f"{name}: cannot decode audio, truncated or corrupt ({exc})") from None
    _check_frame_count(len(samples), frames, rate, fmt, name)
    mono = _mix_to_mono(samples)
    # A NaN or inf sample makes the mix's sum non-finite, so one sum (no boolean temporary) clears almost
    # every file; only a non-finite sum, which huge finite float samples can also give, needs the full check.
    if not np.isfinite(mono.sum()) and not np.isfinite(samples).all():
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality=RESAMPLE_QUALITY)
    return torch.from_numpy(np.clip(mono, -1.0, 1.0, out=mono))


def _mix_to_mono(samples: np.ndarray) -> np.ndarray:
    """float32 (frames, channels) -> (frames,), the mean of the channels; a view of `samples` when mono.

    Stereo is summed as two column views: numpy's mean over a length-2 row axis is several times slower,
    and (left + right) * 0.5 is the same float32 value bit for bit.
    """
    if samples.shape[1] == 1:
        return samples[:, 0]
    if samples.shape[1] == 2:
        mono = np.add(samples[:, 0], samples[:, 1])
        mono *= np.float32(0.5)
        return mono
    return samples.mean(axis=1, dtype=np.float32)


def _check_frame_count(decoded: int, expected: int, rate: int, fmt: str, name: str) -> None:
    """A compressed stream that ends early decodes fewer frames than its header announced."""
    slack = int(expected * _MP3_LENGTH_SLACK) if fmt == "MP3" else 0
    if decoded < expected - slack:
        raise AudioError(f"{name}: audio is truncated: the header announces {expected} frames "
                         f"({expected / rate:.2f} s) but only {decoded} ({decoded / rate:.2f} s) could be decoded")


def _check_wav_complete(f: BinaryIO, n_bytes: int, name: str) -> None:
    """`_check_wav_chunks`, with a header too short to parse reported as a corrupt WAV."""
    try:
        _check_wav_chunks(f, n_bytes, name)
    except struct.error:
        raise AudioError(f"{name}: not a readable WAV file: its header is cut short or corrupt") from None


def _check_wav_chunks(f: BinaryIO, n_bytes: int, name: str) -> None:
    """Raise if a RIFF/RIFX/RF64 WAV's data chunk declares more whole frames than the file holds.

    Walks the chunk list from the start of the file; anything that is not a WAV is left to libsndfile.
    A data size of 0 or 0xFFFFFFFF is how streaming writers say "unknown", and is not checked.
    """
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX", b"RF64"):
        return
    endian = ">" if head[:4] == b"RIFX" else "<"
    block_align, rf64_data_size, pos = 0, None, 12
    for _ in range(10_000):  # a real file has a handful of chunks; this bounds a looping corrupt one
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8:
            return
        cid, size = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
        body = pos + 8
        if cid == b"fmt " and size >= 14:
            block_align = struct.unpack(endian + "H", f.read(14)[12:14])[0]
        elif cid == b"ds64" and size >= 16:
            rf64_data_size = struct.unpack("<Q", f.read(16)[8:16])[0]
        elif cid == b"data":
            declared = rf64_data_size if size == 0xFFFFFFFF and rf64_data_size is not None else size
            present = n_bytes - body
            if block_align <= 0 or declared in (0, 0xFFFFFFFF):
                return
            want, have = declared // block_align, max(present, 0) // block_align
            if want > have:
                raise AudioError(f"{name}: WAV file is truncated: its header declares {want} frames of "
                                 f"samples but only {have} are present ({declared:,} bytes declared, "
                                 f"{max(present, 0):,} in the file)")
            return
        pos = body + size + (size & 1)  # chunks are padded to an even length
        if pos >= n_bytes:
            return


def resample(wave: Union[torch.Tensor, np.ndarray], orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample (samples,) or (channels, samples) from `orig_sr` to `new_sr` Hz with soxr ("HQ").

    Returns float32 of length round(samples * new_sr / orig_sr). No clipping: a full-scale signal may
    overshoot [-1, 1] slightly (Gibbs ringing), as any band-limited resampler does.
    """
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"resample: sample rates must be > 0, got orig_sr={orig_sr!r}, new_sr={new_sr!r}")
    x = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    if x.ndim not in (1, 2):
        raise ValueError(f"resample expects (samples,) or (channels, samples), got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if orig_sr == new_sr:
        return torch.from_numpy(x.copy())
    if x.ndim == 1:
        return torch.from_numpy(soxr.resample(x, orig_sr, new_sr, quality=RESAMPLE_QUALITY))
    # soxr wants (frames, channels)
    y = soxr.resample(np.ascontiguousarray(x.T), orig_sr, new_sr, quality=RESAMPLE_QUALITY)
    return torch.from_numpy(np.ascontiguousarray(y.T))


# --------------------------------------------------------------------------------------------- features

@dataclass
class MelConfig:
    """Log-mel feature settings. Lengths are in samples at `sample_rate`, frequencies in Hz.

    log: "whisper" = log10 (floor 1e-10), clamped to 8 decades below the example's maximum, then
    (x + 4) / 4, as Whisper was trained on; "natural" = ln (floor 1e-6), unscaled.
    pad_to_seconds: zero-pad or cut every wave to this length before the STFT (Whisper: 30 s);
    None keeps each wave's own length.
    f_max: None means sample_rate / 2.
    """
    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 0.0
    f_max: Optional[float] = None
    log: Literal["whisper", "natural"] = "whisper"
    pad_to_seconds: Optional[float] = None

    def __post_init__(self) -> None:
        for field in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MelConfig.{field} must be a positive int, got {value!r}")
        if not 0 <= self.f_min < self.top_frequency <= self.sample_rate / 2:
            raise ValueError(f"MelConfig needs 0 <= f_min < f_max <= sample_rate / 2 = {self.sample_rate / 2:g}, "
                             f"got f_min={self.f_min!r}, f_max={self.f_max!r}")
        if self.log not in LOG_MODES:
            raise ValueError(f"MelConfig.log must be one of {LOG_MODES}, got {self.log!r}")
        if self.pad_to_seconds is not None and not self.pad_to_seconds > 0:
            raise ValueError(f"MelConfig.pad_to_seconds must be > 0 or None, got {self.pad_to_seconds!r}")

    @classmethod
    def whisper(cls, n_mels: int = 80) -> "MelConfig":
        """Whisper's features: 16 kHz, n_fft 400, hop 160, 0-8000 Hz, 30 s windows of 3000 frames.
        n_mels=128 gives large-v3's."""
        return cls(sample_rate=16000, n_fft=400, hop_length=160, n_mels=n_mels, f_min=0.0, f_max=8000.0,
                   log="whisper", pad_to_seconds=30.0)

    @property
    def top_frequency(self) -> float:
        """f_max in Hz, with None resolved to the Nyquist frequency."""
        return self.sample_rate / 2 if self.f_max is None else float(self.f_max)

    @property
    def pad_samples(self) -> Optional[int]:
        return None if self.pad_to_seconds is None else int(round(self.pad_to_seconds * self.sample_rate))


# Slaney's mel scale (librosa htk=False): linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_LINEAR_HZ_PER_MEL = 200.0 / 3
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _LINEAR_HZ_PER_MEL  # 15
_LOG_STEP = math.log(6.4) / 27.0  # ln-Hz per mel above 1 kHz


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _LINEAR_HZ_PER_MEL
    logarithmic = _LOG_START_MEL + np.log(np.maximum(hz, _LOG_START_HZ) / _LOG_START_HZ) / _LOG_STEP
    return np.where(hz >= _LOG_START_HZ, logarithmic, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _LINEAR_HZ_PER_MEL
    logarithmic = _LOG_START_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _LOG_START_MEL) - _LOG_START_MEL))
    return np.where(mel >= _LOG_START_MEL, logarithmic, linear)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0,
                   f_max: Optional[float] = None) -> torch.Tensor:
    """Triangular mel filters, float32 (n_mels, n_fft // 2 + 1), as librosa's default (Slaney mel scale,
    Slaney area normalisation: each triangle is scaled by 2 / its width in Hz, so every band has equal area).

    Filter edges are spaced evenly in mels between f_min and f_max (None: sample_rate / 2). With too many
    mels for n_fft, the lowest filters may fall between FFT bins and be all zero.
    """
    return _filterbank(n_mels, n_fft, sample_rate, float(f_min),
                       sample_rate / 2 if f_max is None else float(f_max)).clone()


@functools.lru_cache(maxsize=16)
def _filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """Computed in float64, returned as float32; cached and shared, so never modified in place."""
    bins_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)
    return torch.from_numpy(weights.astype(np.float32))


def frames_for(samples: int, cfg: MelConfig) -> int:
    """Feature frames `log_mel` gives for a wave of `samples` samples: samples // hop_length (after padding
    to `pad_to_seconds` when set), e.g. 3000 for Whisper's 30 s."""
    n = cfg.pad_samples if cfg.pad_samples is not None else samples
    return n // cfg.hop_length


def log_mel(waves: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """Log-mel features: (B, samples) -> (B, n_mels, frames), or (samples,) -> (n_mels, frames), float32,
    frames = `frames_for(samples, cfg)`.

    STFT with a periodic Hann window of n_fft samples, centred frames (reflect padding by n_fft // 2),
    power spectrum, mel projection, log. The last frame (centred on the final sample) is dropped, as Whisper
    does, so a wave of k hops gives k frames. "whisper" log clamps each example to 8 decades below its own
    maximum, so a batch gives the same features as its examples one by one.
    """
    x = torch.as_tensor(waves)
    single = x.dim() == 1
    if single:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"log_mel expects waves of shape (samples,) or (B, samples), got {tuple(x.shape)}")
    x = x.to(torch.float32)
    if cfg.pad_samples is not None:
        x = _pad_or_cut(x, cfg.pad_samples)
    _check_long_enough(x.shape[-1], cfg)
    power = _power_spectrum(x, cfg)
    row_major = torch.empty(power.shape, dtype=power.dtype, device=power.device).copy_(power)
    out = _log_of_mel(row_major, cfg)
    return out[0] if single else out


def min_samples(cfg: MelConfig) -> int:
    """The fewest samples `log_mel` takes: more than n_fft // 2 (for the reflect padding), and a whole hop so
    that the clip gives at least one frame."""
    return max(cfg.n_fft // 2 + 1, cfg.hop_length)


def pad_short(wave: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """A 1-D wave shorter than `min_samples` with silence appended up to it; a longer one as it is."""
    short = min_samples(cfg) - wave.shape[-1]
    return torch.nn.functional.pad(wave, (0, short)) if short > 0 else wave


def _check_long_enough(samples: int, cfg: MelConfig) -> None:
    if samples <= cfg.n_fft // 2:
        raise ValueError(f"log_mel: a wave of {samples} samples is too short for n_fft={cfg.n_fft} "
                         f"(needs > {cfg.n_fft // 2} samples; set MelConfig.pad_to_seconds to pad)")


def _power_spectrum(x: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """(B, samples) float32 -> |STFT|², (B, n_fft // 2 + 1, frames) with the last frame dropped, frames-major
    in memory."""
    window = torch.hann_window(cfg.n_fft, periodic=True, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, cfg.n_fft, cfg.hop_length, window=window, center=True, pad_mode="reflect",
                      return_complex=True)[..., :-1]
    parts = torch.view_as_real(spec)
    # re² + im² as two elementwise ops gives the values of .square().sum(-1), whose reduction over a last axis
    # of 2 takes longer than the STFT itself.
    return parts[..., 0].square().add_(parts[..., 1].square())


def _log_of_mel(power: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """(B, n_fft // 2 + 1, frames) power, row-major with default strides -> (B, n_mels, frames) log-mel features.

    The layout is part of the result: on other strides (frames-major, or odd strides of a size-1 axis) the
    matmul may round differently, by an ulp.
    """
    fb = _filterbank(cfg.n_mels, cfg.n_fft, cfg.sample_rate, float(cfg.f_min), cfg.top_frequency).to(power.device)
    mel = torch.matmul(fb, power)
    if cfg.log == "whisper":
        out = mel.clamp(min=1e-10).log10()
        out = torch.maximum(out, out.amax(dim=(-2, -1), keepdim=True) - 8.0)
        return (out + 4.0) / 4.0
    return mel.clamp(min=1e-6).log()


def _pad_or_cut(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, samples) -> (B, n): zeros appended, or the end cut off."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))


# --------------------------------------------------------------------------------------------- augment

@dataclass
class SpecAugment:
    """Seeded frequency and time masking of log-mel features (SpecAugment, Park et al. 2019, without warping).

    Each of `freq_masks` bands covers a width drawn uniformly from 0..freq_width mel channels, each of
    `time_masks` spans 0..time_width frames (capped at the feature size). Masked cells are set to the
    example's mean feature value: for Whisper-scaled features 0 would be a loud, informative value,
    while the mean carries no information and leaves the example's average unchanged.
    """
    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width: int = 40

    def __post_init__(self) -> None:
        for field in ("freq_masks", "freq_width", "time_masks", "time_width"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"SpecAugment.{field} must be an int >= 0, got {value!r}")

    @property
    def active(self) -> bool:
        """True when any mask can be non-empty."""
        return (self.freq_masks > 0 and self.freq_width > 0) or (self.time_masks > 0 and self.time_width > 0)

    def apply(self, features: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """Masked copy of (n_mels, frames) or (B, n_mels, frames) features; each example draws its own masks
        from `rng`, so the same seed gives identical output. Inactive: the input itself is returned."""
        if features.dim() not in (2, 3):
            raise ValueError(f"SpecAugment.apply expects (n_mels, frames) or (B, n_mels, frames), "
                             f"got {tuple(features.shape)}")
        if not self.active:
            return features
        out = features.clone()
        for example in (out if out.dim() == 3 else out.unsqueeze(0)):
            fill = example.mean()
            n_mels, n_frames = example.shape
            for start, width in self._spans(n_mels, self.freq_masks, self.freq_width, rng):
                example[start:start + width, :] = fill
            for start, width in self._spans(n_frames, self.time_masks, self.time_width, rng):
                example[:, start:start + width] = fill
        return out

    @staticmethod
    def _spans(size: int, count: int, max_width: int, rng: random.Random) -> list[tuple[int, int]]:
        spans = []
        for _ in range(count):
            width = rng.randint(0, min(max_width, size))
            spans.append((rng.randint(0, size - width), width))
        return spans


def add_noise(wave: Union[torch.Tensor, np.ndarray], snr_db: float, rng: random.Random) -> torch.Tensor:
    """`wave` (samples,) or (B, samples) plus white gaussian noise at `snr_db` dB below each example's mean
    power. The noise comes from a torch generator seeded by `rng`, so the same seed gives the same noise.
    The sum is not clipped (clipping would change the SNR); a silent example stays silent.
    """
    x = torch.as_tensor(wave, dtype=torch.float32)
    if x.dim() not in (1, 2):
        raise ValueError(f"add_noise expects (samples,) or (B, samples), got shape {tuple(x.shape)}")
    if not math.isfinite(snr_db):
        raise ValueError(f"add_noise: snr_db must be a finite number of dB, got {snr_db!r}")
    generator = torch.Generator().manual_seed(rng.getrandbits(63))
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
    signal_power = x.square().mean(dim=-1, keepdim=True)
    noise_std = torch.sqrt(signal_power / 10.0 ** (snr_db / 10.0))
    return x + noise * noise_std
