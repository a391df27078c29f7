"""Audio pipeline throughput: omnigpt's load_audio + log_mel against transformers' WhisperFeatureExtractor,
in seconds of audio turned into features per wall second ("x realtime").

Test data: --clips synthetic speech-like clips written to a temporary folder (not timed): durations drawn
from 2-15 s, sample rates 16 / 22.05 / 44.1 / 48 kHz, mono or stereo, in turn WAV (int16), FLAC (16-bit)
and OGG/Vorbis. Each clip is a voiced source (10-30 harmonics of a gliding, vibrato-modulated pitch of
90-260 Hz, shaped by two formant bumps) under a syllable-rate amplitude envelope with pauses, plus
breath-like noise and a faint noise floor.

Work per clip, the same for every variant: decode the file, mix to mono, resample to 16 kHz with soxr
("HQ"), then 80-bin Whisper log-mel features (n_fft 400, hop 160, 0-8 kHz, log10, 8-decade clamp, scaled).
Clips go through in file order, in batches of --batch.

- ours:           `load_audio(path)` per clip, zero-pad the batch to its longest clip, one
                  `log_mel(batch, MelConfig.whisper() with pad_to_seconds=None)` call per batch: one clip at a
                  time on one thread, as a plain loop over `load_audio` does
- ours_padded30:  the same, but `MelConfig.whisper()` as is: every clip padded to 30 s (3000 frames), the
                  same output shape as the feature extractor's
- ours_threads:   `load_audio_batch(batch_paths, workers=--workers)` (decode + resample in threads), then
                  `log_mel_batch(waves, MelConfig.whisper() with pad_to_seconds=None)`, the same features as
                  ours without running the STFT over the padding. Our recommended way to featurise many clips;
                  it gives "ratio"
- ours_threads_padded30: the same with `MelConfig.whisper()` as is (30 s, the extractor's output shape)
- ours_pipelined: `iter_audio_batches(paths, --batch, workers=--workers)`, which decodes the next batch in the
                  background while `log_mel_batch` runs on this one; decode time is the time spent waiting for
                  a batch. On 2 cores the decode threads and torch's threads then compete for the same cores.
- whisper:        `soundfile.read(float32)` + channel mean + the same `soxr.resample(..., "HQ")` per clip
                  (librosa, its usual loader, is not installed), then
                  `WhisperFeatureExtractor()(list_of_arrays, sampling_rate=16000, return_tensors="np")` per
                  batch (default-constructed, offline; it always pads to 30 s, and with torch installed it
                  computes the features with torch.stft)

"ratio" is ours_threads / whisper in x realtime; "ratio_<variant>" is that variant's / whisper's ("ratio_serial"
for ours, the "ratio" of runs before the batch functions existed). The peer runs as a user of transformers
would run it: clips decoded one at a time, features with torch's --threads threads. All our variants give the
features of ours (or of ours_padded30) bit for bit ("batch_paths_equal_serial").

One untimed warm-up pass per variant, then --passes timed passes, interleaved variant by variant so that
load from other processes hits all variants alike; the median pass gives x realtime = audio seconds / wall
seconds. Each pass also splits its time into decode (+ resample) and features, reported for the median pass.

Prints one JSON line on stdout at the end; progress goes to stderr.

    python bench/audio_pipeline.py                        # full run (about 30 s on 2 cores)
    python bench/audio_pipeline.py --clips 12 --passes 1  # smoke run
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf
import soxr
import torch

from audio_batches import iter_audio_batches, load_audio_batch, log_mel_batch
from omnigpt.data.audio import RESAMPLE_QUALITY, MelConfig, load_audio, log_mel

RATE = 16000
SOURCE_RATES = (16000, 22050, 44100, 48000)
FORMATS = (("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"))


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=60)
    p.add_argument("--passes", type=int, default=3, help="timed passes over all clips per variant")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--workers", type=int, default=2, help="decode threads of ours_threads and ours_pipelined")
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-seconds", type=float, default=15.0)
    p.add_argument("--no-whisper", action="store_true", help="skip transformers' WhisperFeatureExtractor")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


# --------------------------------------------------------------------------------------------- test data

def speech_like(rs: np.random.RandomState, seconds: float, rate: int) -> np.ndarray:
    """float32 (samples,) in about [-0.9, 0.9]: harmonic voiced sound with gliding pitch and syllable envelope."""
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    # Pitch: a base, a slow random glide (intonation) and a little vibrato.
    f_base = rs.uniform(90, 260)
    knots = rs.uniform(-0.25, 0.25, int(seconds * 2) + 2)
    glide = np.interp(t, np.linspace(0, seconds, len(knots)), knots)
    f0 = f_base * (1 + glide) * (1 + 0.01 * np.sin(2 * np.pi * rs.uniform(4, 7) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    # Harmonics under two formant bumps, rolled off as 1/k; none above 0.45 * rate.
    formants = rs.uniform(400, 900), rs.uniform(1100, 2600)
    voiced = np.zeros(n)
    n_harm = rs.randint(10, 31)
    for k in range(1, n_harm + 1):
        fk = k * f_base
        if fk > 0.45 * rate:
            break
        gain = (1 / k) * (1 + 2 * np.exp(-((fk - formants[0]) / 200) ** 2) + np.exp(-((fk - formants[1]) / 300) ** 2))
        voiced += gain * np.sin(k * phase + rs.uniform(0, 2 * np.pi))
    voiced /= np.abs(voiced).max() + 1e-9
    # Syllables: a 3-6 Hz raised-sine envelope, with random pauses (words), smoothed.
    syll = np.clip(np.sin(2 * np.pi * rs.uniform(3, 6) * t + rs.uniform(0, 2 * np.pi)), 0, None) ** 0.7
    words = np.repeat(rs.rand(int(seconds * 3) + 1) > 0.25, int(np.ceil(rate / 3)))[:n].astype(np.float64)
    kernel = np.hanning(max(3, rate // 50))
    words = np.convolve(words, kernel / kernel.sum(), mode="same")
    env = syll * words * rs.uniform(0.3, 0.9)
    breath = rs.normal(0, 0.05, n) * env  # aspiration noise follows the voice
    floor = rs.normal(0, 10 ** (rs.uniform(-4, -2.5)), n)  # room / mic noise
    return np.clip(voiced * env + breath + floor, -1, 1).astype(np.float32)


def write_clips(folder: Path, n: int, seed: int, lo: float, hi: float) -> list[str]:
    rs = np.random.RandomState(seed)
    paths = []
    for i in range(n):
        seconds = rs.uniform(lo, hi)
        rate = SOURCE_RATES[rs.randint(len(SOURCE_RATES))]
        wave = speech_like(rs, seconds, rate)
        if rs.rand() < 0.5:  # stereo: the other channel a little quieter and a few samples late
            other = np.roll(wave, rs.randint(1, 40)) * rs.uniform(0.6, 1.0)
            wave = np.stack([wave, other], axis=1)
        ext, fmt, subtype = FORMATS[i % len(FORMATS)]
        path = folder / f"clip{i:04d}.{ext}"
        sf.write(path, wave, rate, format=fmt, subtype=subtype)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------------------------- variants

def pad_batch(waves: list[torch.Tensor]) -> torch.Tensor:
    """(B, longest) float32, zeros after each clip's end."""
    out = torch.zeros(len(waves), max(w.shape[0] for w in waves))
    for row, w in zip(out, waves):
        row[: w.shape[0]] = w
    return out


def timed(batches: Iterator[list[torch.Tensor]],
          features: Callable[[list[torch.Tensor]], torch.Tensor]) -> tuple[float, float, list[torch.Tensor]]:
    """Run `features` on each batch: (seconds waiting for batches, seconds in features, the features)."""
    decode = feats = 0.0
    outs = []
    while True:
        t0 = time.perf_counter()
        waves = next(batches, None)
        t1 = time.perf_counter()
        decode += t1 - t0
        if waves is None:
            return decode, feats, outs
        outs.append(features(waves))
        feats += time.perf_counter() - t1


def ours(paths: list[str], batch: int, cfg: MelConfig) -> tuple[float, float, list[torch.Tensor]]:
    batches = ([load_audio(p, RATE) for p in paths[i:i + batch]] for i in range(0, len(paths), batch))
    return timed(batches, lambda waves: log_mel(pad_batch(waves), cfg))


def ours_threads(paths: list[str], batch: int, cfg: MelConfig,
                 workers: int) -> tuple[float, float, list[torch.Tensor]]:
    batches = (load_audio_batch(paths[i:i + batch], RATE, workers=workers) for i in range(0, len(paths), batch))
    return timed(batches, lambda waves: log_mel_batch(waves, cfg))


def ours_pipelined(paths: list[str], batch: int, cfg: MelConfig,
                   workers: int) -> tuple[float, float, list[torch.Tensor]]:
    return timed(iter_audio_batches(paths, batch, RATE, workers=workers), lambda waves: log_mel_batch(waves, cfg))


def peer_load(path: str) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE, quality=RESAMPLE_QUALITY)
    return mono


def whisper(paths: list[str], batch: int, fe) -> tuple[float, float, list[np.ndarray]]:
    decode = feats = 0.0
    outs = []
    for i in range(0, len(paths), batch):
        t0 = time.perf_counter()
        waves = [peer_load(p) for p in paths[i:i + batch]]
        t1 = time.perf_counter()
        outs.append(fe(waves, sampling_rate=RATE, return_tensors="np")["input_features"])
        t2 = time.perf_counter()
        decode, feats = decode + t1 - t0, feats + t2 - t1
    return decode, feats, outs


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg_pad = MelConfig.whisper()
    cfg = dataclasses.replace(cfg_pad, pad_to_seconds=None)
    variants = {
        "ours": lambda paths: ours(paths, args.batch, cfg),
        "ours_padded30": lambda paths: ours(paths, args.batch, cfg_pad),
        "ours_threads": lambda paths: ours_threads(paths, args.batch, cfg, args.workers),
        "ours_threads_padded30": lambda paths: ours_threads(paths, args.batch, cfg_pad, args.workers),
        "ours_pipelined": lambda paths: ours_pipelined(paths, args.batch, cfg, args.workers),
    }
    if not args.no_whisper:
        from transformers import WhisperFeatureExtractor
        from transformers.utils import logging

        logging.set_verbosity_error()
        fe = WhisperFeatureExtractor()
        variants["whisper"] = lambda paths: whisper(paths, args.batch, fe)

    with tempfile.TemporaryDirectory(prefix="omnigpt-audio-bench-") as tmp:
        t0 = time.perf_counter()
        paths = write_clips(Path(tmp), args.clips, args.seed, args.min_seconds, args.max_seconds)
        n_bytes = sum(os.path.getsize(p) for p in paths)
        infos = [sf.info(p) for p in paths]
        log(f"wrote {len(paths)} clips ({n_bytes / 2**20:.1f} MiB, "
            f"{sum(i.frames / i.samplerate for i in infos):.0f} s of audio) in {time.perf_counter() - t0:.1f}s")

        first = {}
        for name, run in variants.items():  # warm-up: imports, file cache, FFT plans, allocator
            t0 = time.perf_counter()
            _, _, outs = run(paths)
            first[name] = outs[0]
            log(f"{name}: warm-up pass {time.perf_counter() - t0:.2f}s")
        lengths = [load_audio(p, RATE).shape[0] / RATE for p in paths]  # seconds, at 16 kHz
        audio_seconds = sum(lengths)

        runs = {name: [] for name in variants}  # (total, decode, features) per pass
        for p in range(args.passes):
            for name, run in variants.items():
                t0 = time.perf_counter()
                decode, feats, _ = run(paths)
                total = time.perf_counter() - t0
                runs[name].append((total, decode, feats))
                log(f"{name}: pass {p + 1}/{args.passes} {total:.2f}s (decode {decode:.2f}s, features "
                    f"{feats:.2f}s) = {audio_seconds / total:.0f}x realtime")

    def median_run(name: str) -> tuple[float, float, float]:
        return sorted(runs[name])[len(runs[name]) // 2]  # the median pass (upper middle for even counts)

    out = {"benchmark": "audio_pipeline", "clips": len(paths), "audio_seconds": round(audio_seconds, 1)}
    xrt = {name: audio_seconds / statistics.median(r[0] for r in runs[name]) for name in variants}
    out.update({f"{name}_x_realtime": round(v, 1) for name, v in xrt.items()})
    if "whisper" in xrt:
        out["ratio"] = round(xrt["ours_threads"] / xrt["whisper"], 3)
        out["ratio_serial"] = round(xrt["ours"] / xrt["whisper"], 3)
        for name in ("ours_padded30", "ours_threads_padded30", "ours_pipelined"):
            out[name.replace("ours", "ratio")] = round(xrt[name] / xrt["whisper"], 3)
    for name in variants:  # where the time goes, from each variant's median pass
        total, decode, feats = median_run(name)
        out[f"{name}_seconds"] = {"total": round(total, 3), "decode_resample": round(decode, 3),
                                  "features": round(feats, 3)}
    # The batch loaders and log_mel_batch must give the features of the one-by-one path, bit for bit.
    out["batch_paths_equal_serial"] = (
        all(torch.equal(first[name], first["ours"]) for name in ("ours_threads", "ours_pipelined"))
        and torch.equal(first["ours_threads_padded30"], first["ours_padded30"]))
    if "whisper" in first:
        # Same maths on the same samples: 30 s-padded features should match the extractor's closely.
        diff = (first["ours_padded30"] - torch.from_numpy(first["whisper"])).abs()
        out["max_abs_diff_vs_whisper"] = float(f"{diff.max().item():.2e}")
        out["mean_abs_diff_vs_whisper"] = float(f"{diff.mean().item():.2e}")
    groups = [lengths[i:i + args.batch] for i in range(0, len(lengths), args.batch)]
    padded_seconds = sum(max(g) * len(g) for g in groups)
    out.update({
        "padding_fraction_batched": round(1 - audio_seconds / padded_seconds, 3),
        "padding_fraction_30s": round(1 - audio_seconds / (30.0 * len(paths)), 3),
        "formats": {ext: sum(p.endswith("." + ext) for p in paths) for ext, _, _ in FORMATS},
        "stereo_clips": sum(i.channels == 2 for i in infos),
        "passes": args.passes,
        "batch": args.batch,
        "megabytes_on_disk": round(n_bytes / 2**20, 1),
        "threads": torch.get_num_threads(),
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "soundfile": sf.__version__,
        "libsndfile": sf.__libsndfile_version__,
        "soxr": soxr.__version__,
    })
    if "whisper" in variants:
        import transformers

        out["transformers"] = transformers.__version__
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
