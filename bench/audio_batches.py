"""Many clips at once, as bench/audio_pipeline.py measures them against one-by-one loading:
`load_audio_batch` (or `iter_audio_batches`, which decodes the next batch while the caller works) decodes in
threads, and `log_mel_batch` gives the features of clips of different lengths, padded to one length, without
running the STFT over the padding. Built on omnigpt.data.audio; the product itself loads clip by clip.
"""
from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator, Optional, Sequence

import torch

from omnigpt.data.audio import (AudioSource, MelConfig, _check_long_enough, _log_of_mel, _pad_or_cut,
                                _power_spectrum, load_audio)


def load_audio_batch(sources: Sequence[AudioSource], sample_rate: int = 16000,
                     max_seconds: Optional[float] = None, *, workers: int = 2) -> list[torch.Tensor]:
    """`load_audio` on every source, `workers` at a time in threads: a list of 1-D float32 tensors at
    `sample_rate` Hz, in the order of `sources`, each equal to what `load_audio` returns for it.

    libsndfile and soxr release the GIL while they decode and resample, so the threads run in parallel
    (2 workers on 2 cores: about 1.75x the files per second). A source given as bytes is named
    "<bytes #i>" (its index) in errors. If any source fails, the error of the first failing one in order is
    raised, and sources not yet started are skipped.
    """
    sources = list(sources)
    _check_workers(workers)
    if workers == 1 or len(sources) < 2:
        return [_load_item(i, s, sample_rate, max_seconds) for i, s in enumerate(sources)]
    with ThreadPoolExecutor(min(workers, len(sources)), thread_name_prefix="omnigpt-audio") as pool:
        return _results_in_order(_submit(pool, sources, 0, sample_rate, max_seconds))


def iter_audio_batches(sources: Sequence[AudioSource], batch_size: int, sample_rate: int = 16000,
                       max_seconds: Optional[float] = None, *, workers: int = 2) -> Iterator[list[torch.Tensor]]:
    """`load_audio_batch` over consecutive slices of `batch_size` sources, yielded in order; while the caller
    works on one batch (features, a model step), the next one is decoded in the background by `workers`
    threads. At most two batches are held in memory. Errors as in `load_audio_batch`, raised when the batch
    holding the failing source is reached; closing the iterator early skips the decoding not yet started.

    The overlap pays when cores are free while the caller works (a GPU step, more cores than torch uses).
    When the caller's torch threads already fill every core, the decode threads compete with them, and
    `load_audio_batch` per batch is faster (bench/audio_pipeline.py on 2 cores: 1,720x vs 2,210x realtime).
    """
    _check_workers(workers)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"iter_audio_batches: batch_size must be a positive int, got {batch_size!r}")
    return _batches_ahead(list(sources), batch_size, sample_rate, max_seconds, workers)


def _batches_ahead(sources: list[AudioSource], batch_size: int, sample_rate: int, max_seconds: Optional[float],
                   workers: int) -> Iterator[list[torch.Tensor]]:
    pool = ThreadPoolExecutor(workers, thread_name_prefix="omnigpt-audio")
    try:
        ahead = _submit(pool, sources[:batch_size], 0, sample_rate, max_seconds)
        for start in range(0, len(sources), batch_size):
            current, nxt = ahead, start + batch_size
            ahead = _submit(pool, sources[nxt:nxt + batch_size], nxt, sample_rate, max_seconds)
            yield _results_in_order(current)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check_workers(workers: int) -> None:
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"audio loading: workers must be a positive int, got {workers!r}")


def _load_item(index: int, source: AudioSource, sample_rate: int, max_seconds: Optional[float]) -> torch.Tensor:
    """`load_audio` of one source of a batch; bytes are named by their index there."""
    name = f"<bytes #{index}>" if isinstance(source, (bytes, bytearray, memoryview)) else None
    return load_audio(source, sample_rate, max_seconds, name=name)


def _submit(pool: ThreadPoolExecutor, sources: Sequence[AudioSource], first_index: int, sample_rate: int,
            max_seconds: Optional[float]) -> list[Future]:
    return [pool.submit(_load_item, first_index + i, s, sample_rate, max_seconds) for i, s in enumerate(sources)]


def _results_in_order(futures: list[Future]) -> list[torch.Tensor]:
    """The futures' results in order; on the first error, the futures not yet started are cancelled."""
    try:
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise


def log_mel_batch(waves: Sequence[torch.Tensor], cfg: MelConfig) -> torch.Tensor:
    """Log-mel features of waves of different lengths, each (samples,): (B, n_mels, frames) float32, the same
    as `log_mel` of the waves zero-padded to one length (and with as many frames). The length is
    `cfg.pad_samples` when set (longer waves are cut), else the longest wave's.

    Faster than padding first, by about the share of padding: the STFT runs over each wave and the few
    frames past its end that still see its samples; the frames that see only padding are silence, and get
    silence's features without an FFT. Waves of similar length share an STFT call (at most
    `_MAX_LENGTH_GROUPS` calls), so the cost in calls stays small for big batches.
    """
    if len(waves) == 0:
        raise ValueError("log_mel_batch needs at least one wave, got none")
    xs = [torch.as_tensor(w).to(torch.float32) for w in waves]
    for i, x in enumerate(xs):
        if x.dim() != 1:
            raise ValueError(f"log_mel_batch expects each wave of shape (samples,), wave {i} has {tuple(x.shape)}")
    n = cfg.pad_samples if cfg.pad_samples is not None else max(x.shape[0] for x in xs)
    _check_long_enough(n, cfg)
    xs = [x[:n] for x in xs]
    frames = (n + 2 * (cfg.n_fft // 2) - cfg.n_fft) // cfg.hop_length  # torch.stft's count, less the last
    # Frame t sees samples [t * hop - n_fft // 2, t * hop - n_fft // 2 + n_fft): from frame `seen` on, only
    # padding, so its power is exactly 0 in the padded batch, and stays 0 here. Padded to `span` samples, a
    # wave's frames before `seen` see what they see in the padded batch, sample for sample; a wave that
    # needs the whole length is padded to it, as in the batch.
    seen = [-(-(x.shape[0] + cfg.n_fft // 2) // cfg.hop_length) for x in xs]
    spans = [min(k * cfg.hop_length + cfg.n_fft, n) for k in seen]
    power = xs[0].new_zeros(len(xs), cfg.n_fft // 2 + 1, frames)
    for group in _length_groups(spans, _MAX_LENGTH_GROUPS):
        span = spans[group[-1]]  # the longest of the group
        used = frames if span == n else seen[group[-1]]
        batch = _pad_or_cut(torch.nn.utils.rnn.pad_sequence([xs[i] for i in group], batch_first=True), span)
        power[group, :, :used] = _power_spectrum(batch, cfg)[..., :used]
    return _log_of_mel(power, cfg)


_MAX_LENGTH_GROUPS = 4


def _length_groups(lengths: Sequence[int], max_groups: int) -> list[list[int]]:
    """Indices of `lengths` in at most `max_groups` groups, each sorted by length, that minimise the padded
    total: the sum over groups of (size x longest length). Dynamic programming over the sorted lengths."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    ordered = [lengths[i] for i in order]
    n_groups = min(max_groups, len(order))
    # cost[k]: least padded total of ordered[:k] in the groups so far; starts[g][k]: where the last one starts.
    cost = [0] + [math.inf] * len(order)
    starts = []
    for _ in range(n_groups):
        new_cost, start = [0] + [math.inf] * len(order), [0] * (len(order) + 1)
        for k in range(1, len(order) + 1):
            for j in range(k):
                c = cost[j] + (k - j) * ordered[k - 1]
                if c < new_cost[k]:
                    new_cost[k], start[k] = c, j
        cost = new_cost
        starts.append(start)
    groups, k = [], len(order)
    for start in reversed(starts):
        if k == 0:
            break
        groups.append(order[start[k]:k])
        k = start[k]
    return groups[::-1]
