"""Speech to text for recordings of any length: find the speech, cut it into windows the model can take,
decode each with temperature fallback, stitch overlapping windows, and time every segment.

1. **Speech regions.** Frames of 20 ms whose level lies above the quiet frames' (the 10th percentile) by
   `level_fraction` of the way to the loud frames' (the 95th), and above an absolute floor, are speech;
   pauses shorter than `min_silence` are bridged, and each region is padded a little. A silent or empty
   recording has no regions and gives an empty transcript.
2. **Windows.** A region longer than the model can take at once (`window_seconds`, `audio.max_seconds`, and
   what fits the context with the prompt and `max_new_tokens`) is cut into equal windows that overlap by
   `overlap_seconds`; the words of neighbouring windows are aligned on their overlap and joined there.
3. **Temperature fallback** (as in Whisper's decoding): a window is decoded greedily (or by beam search)
   first; if its transcript looks degenerate (the average log-probability of its tokens below
   `logprob_threshold`, or the text compressing better than `compression_ratio_threshold`, a sign of a
   repetition loop) it is decoded again by sampling at the next temperature. If every temperature fails,
   the attempt with the best average log-probability among those that do not loop is kept.

Segments are one per region, or one per window of a cut region, timed in seconds from the recording's start.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .data.audio import load_audio
from .data.prompts import TRANSCRIBE_PROMPT
from .generate import (GenerationConfig, GenerationError, audio_features, audio_media, audio_token_counts, generate,
                       prepare_prompts)
from .tokenizer import Tokenizer

FRAME_SECONDS = 0.02
WHISPER_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class TranscribeOptions:
    prompt: str = TRANSCRIBE_PROMPT
    window_seconds: float = 30.0  # at most this much audio per decoding; the model may allow less
    overlap_seconds: float = 1.0  # shared by neighbouring windows of a long region
    max_new_tokens: int = 48  # per window
    num_beams: int = 1  # beam search at temperature 0
    temperatures: Sequence[float] = WHISPER_TEMPERATURES  # tried in turn while the output looks degenerate
    logprob_threshold: Optional[float] = -1.0  # mean log-probability per token below this: degenerate
    compression_ratio_threshold: Optional[float] = 2.4  # text compressing better than this: a loop
    level_fraction: float = 0.6  # speech frames are this far (in dB) from the quiet frames to the loud ones ...
    floor_dbfs: float = -60.0  # ... and above this absolute level
    min_silence: float = 0.3  # seconds; shorter pauses do not split a region
    pad_seconds: float = 0.15  # kept around each region
    batch_size: int = 16  # windows decoded together
    seed: int = 0  # for the sampled retries

    def validate(self) -> None:
        if self.window_seconds <= 0:
            raise GenerationError(f"window_seconds must be positive, got {self.window_seconds}")
        if not 0 <= self.overlap_seconds < self.window_seconds / 2:
            raise GenerationError(f"overlap_seconds must be in [0, window_seconds / 2), got {self.overlap_seconds}")
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise GenerationError(f"temperatures must be a non-empty list of values >= 0, got "
                                  f"{list(self.temperatures)}")
        if self.batch_size < 1:
            raise GenerationError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class Segment:
    start: float  # seconds
    end: float
    text: str
    avg_logprob: float = 0.0  # of the window(s) the text came from
    compression_ratio: float = 0.0
    temperature: float = 0.0  # the decoding that was kept


@dataclass
class Transcript:
    text: str
    segments: list[Segment] = field(default_factory=list)
    duration: float = 0.0  # seconds of audio

    def to_dict(self) -> dict:
        return {"text": self.text, "duration": round(self.duration, 3),
                "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                              "avg_logprob": round(s.avg_logprob, 4),
                              "compression_ratio": round(s.compression_ratio, 3), "temperature": s.temperature}
                             for s in self.segments]}


# ------------------------------------------------------------------------------------------ regions
def speech_regions(wave: torch.Tensor, sample_rate: int, opts: Optional[TranscribeOptions] = None
                   ) -> list[tuple[int, int]]:
    """(start, end) sample indices of the stretches that hold speech, in order."""
    opts = opts or TranscribeOptions()
    hop = max(1, int(round(FRAME_SECONDS * sample_rate)))
    n = wave.shape[0] // hop
    if n == 0:
        return []
    frames = wave[:n * hop].reshape(n, hop)  # a view: no copy of an hour of audio
    level = 10 * torch.log10(torch.linalg.vector_norm(frames, dim=1).square().div(hop).clamp(min=1e-20))  # dBFS
    loud = float(torch.quantile(level, 0.95)) if n > 1 else float(level[0])
    quiet = float(torch.quantile(level, 0.10)) if n > 1 else float(level[0])
    speech = level > max(opts.floor_dbfs, quiet + opts.level_fraction * (loud - quiet))
    if not bool(speech.any()):
        return []
    on = speech.nonzero()[:, 0].tolist()
    bridge = int(math.ceil(opts.min_silence / FRAME_SECONDS))
    runs = [[on[0], on[0] + 1]]
    for f in on[1:]:
        if f - runs[-1][1] < bridge:
            runs[-1][1] = f + 1
        else:
            runs.append([f, f + 1])
    pad = int(round(opts.pad_seconds * sample_rate))
    total = wave.shape[0]
    regions = [(max(0, a * hop - pad), min(total, b * hop + pad)) for a, b in runs]
    merged = [regions[0]]
    for a, b in regions[1:]:  # padding may make neighbours touch
        if a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def max_window_seconds(model: nn.Module, tokenizer: Tokenizer, opts: TranscribeOptions) -> float:
    """The longest clip the model can take with the prompt and max_new_tokens in its context."""
    cfg = model.audio_config
    limit = min(opts.window_seconds, cfg.max_seconds)
    frames_per_second = cfg.sample_rate / cfg.hop_length
    budget = model.config.block_size - opts.max_new_tokens - (len(tokenizer.encode(opts.prompt)) - 1)
    if model.tokens_for_audio(1) > budget:
        raise GenerationError(f"the prompt and max_new_tokens ({opts.max_new_tokens}) leave no room for audio in "
                              f"the model's context of {model.config.block_size} tokens")
    lo, hi = 1, int(limit * frames_per_second)  # the most frames whose tokens fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if model.tokens_for_audio(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    seconds = min(limit, lo * cfg.hop_length / cfg.sample_rate)
    if seconds < 1.0:
        raise GenerationError(f"only {seconds:.2f} s of audio fit the context with a prompt and "
                              f"{opts.max_new_tokens} new tokens: lower max_new_tokens")
    return seconds


def windows_of(start: int, end: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Equal windows of at most `window` samples covering [start, end), neighbours sharing `overlap`."""
    length = end - start
    if length <= window:
        return [(start, end)]
    count = math.ceil((length - overlap) / (window - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    out = []
    for k in range(count):
        a = start + k * (size - overlap)
        out.append((a, min(end, a + size)))
    return out


# ---------------------------------------------------------------------------------------- stitching
def overlap_alignment(left: Sequence[str], right: Sequence[str], most: int) -> int:
    """How many of `left`'s last words `right` starts by repeating (0: none): the overlap length k at
    which left[-k:] and right[:k] agree on the most words, at least half of them."""
    best, best_k = 0, 0
    for k in range(1, min(len(left), len(right), most) + 1):
        matches = sum(a == b for a, b in zip(left[-k:], right[:k]))
        if matches > best and 2 * matches >= k:
            best, best_k = matches, k
    return best_k


def stitch(pieces: Sequence[Sequence[str]], most: int) -> list[list[str]]:
    """Words of overlapping windows -> the words each window contributes. Where two windows repeat k words,
    the earlier keeps the first half of them and the later the rest (the cut ends of each window, where
    words may be clipped, are dropped)."""
    kept = [list(p) for p in pieces]
    for i in range(1, len(kept)):
        k = overlap_alignment(kept[i - 1], kept[i], most)
        if k:
            half = (k + 1) // 2
            kept[i - 1] = kept[i - 1][:len(kept[i - 1]) - k + half]
            kept[i] = kept[i][half:]
    return kept


# ------------------------------------------------------------------------------------------ decoding
def compression_ratio(text: str) -> float:
    """len(text) / len(zlib(text)) in bytes: high for text that repeats itself."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


@dataclass
class Hypothesis:
    text: str
    avg_logprob: float
    compression_ratio: float
    temperature: float

    def degenerate(self, opts: TranscribeOptions) -> bool:
        too_unsure = opts.logprob_threshold is not None and self.avg_logprob < opts.logprob_threshold
        limit = opts.compression_ratio_threshold
        loops = limit is not None and self.compression_ratio > limit
        return too_unsure or loops


@torch.inference_mode()
def average_logprobs(model: nn.Module, tokenizer: Tokenizer, prompt: str, clips: Sequence[torch.Tensor],
                     texts: Sequence[str], max_new_tokens: int) -> list[float]:
    """Mean log-probability per token of each text (and the end-of-text after it) following the prompt
    with its clip: how sure the model is of a transcript, whichever way it was decoded."""
    features = audio_features(model, [[c] for c in clips])
    gen = GenerationConfig(max_new_tokens=max_new_tokens)
    prompts = prepare_prompts(model, tokenizer, [prompt] * len(clips), gen, audio_token_counts(model, features))
    conts = [tokenizer.encode(t)[:max_new_tokens] for t in texts]
    conts = [c + [tokenizer.eos_id] if len(c) < max_new_tokens else c for c in conts]  # it stopped by itself
    seqs = [p + c for p, c in zip(prompts, conts)]
    width = max(len(s) for s in seqs)
    device = next(model.parameters()).device
    ids = torch.full((len(seqs), width), tokenizer.pad_id, dtype=torch.long, device=device)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s)
    was_training = model.training
    model.eval()
    try:
        logits, _ = model(ids, **audio_media(model, features))
    finally:
        model.train(was_training)
    logp = logits.float().log_softmax(-1)
    out = []
    for r, (p, c) in enumerate(zip(prompts, conts)):
        at = torch.arange(len(p) - 1, len(p) - 1 + len(c), device=device)
        out.append(float(logp[r, at, torch.tensor(c, device=device)].mean()))
    return out


def decode_windows(model: nn.Module, tokenizer: Tokenizer, clips: Sequence[torch.Tensor], opts: TranscribeOptions
                   ) -> list[list[Hypothesis]]:
    """Every decoding tried for each clip, in temperature order: a clip is decoded again at the next
    temperature while its last hypothesis is degenerate (see `keep` for the one that counts)."""
    tried: list[list[Hypothesis]] = [[] for _ in clips]
    todo = list(range(len(clips)))
    for attempt, temperature in enumerate(opts.temperatures):
        if not todo:
            break
        texts = []
        for b in range(0, len(todo), opts.batch_size):
            chunk = [clips[i] for i in todo[b:b + opts.batch_size]]
            settings = dict(max_new_tokens=opts.max_new_tokens)
            if temperature > 0:
                settings.update(temperature=temperature, seed=opts.seed + 1000 * attempt + b)
            elif opts.num_beams > 1:
                settings.update(num_beams=opts.num_beams)
            texts += generate(model, tokenizer, [opts.prompt] * len(chunk), audio=chunk, **settings)
        texts = [t.strip() for t in texts]
        scores = []
        for b in range(0, len(todo), opts.batch_size):
            scores += average_logprobs(model, tokenizer, opts.prompt, [clips[i] for i in todo[b:b + opts.batch_size]],
                                       [" " + t if t else "" for t in texts[b:b + opts.batch_size]],
                                       opts.max_new_tokens)
        still = []
        for i, text, score in zip(todo, texts, scores):
            hyp = Hypothesis(text, score, compression_ratio(text), temperature)
            tried[i].append(hyp)
            if hyp.degenerate(opts):
                still.append(i)
        todo = still
    return tried


def keep(hyps: Sequence[Hypothesis], opts: TranscribeOptions) -> Hypothesis:
    """The first attempt that is not degenerate; else the surest (best average log-probability) of those
    that do not loop; else the surest."""
    good = [h for h in hyps if not h.degenerate(opts)]
    if good:
        return good[0]
    not_looping = [h for h in hyps if opts.compression_ratio_threshold is None
                   or h.compression_ratio <= opts.compression_ratio_threshold]
    return max(not_looping or hyps, key=lambda h: h.avg_logprob)


# -------------------------------------------------------------------------------------------- driver
AudioIn = Union[str, Path, np.ndarray, torch.Tensor]


def transcribe(model: nn.Module, tokenizer: Tokenizer, audio: AudioIn, options: Optional[TranscribeOptions] = None,
               progress: bool = False, **overrides) -> Transcript:
    """Transcribe a recording of any length (a file, or mono samples at the model's sample rate).

    Keyword overrides set fields of `options`, e.g. `transcribe(m, tok, "talk.wav", num_beams=5)`.
    """
    steps = transcribe_steps(model, tokenizer, audio, options, progress, **overrides)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def transcribe_steps(model: nn.Module, tokenizer: Tokenizer, audio: AudioIn,
                     options: Optional[TranscribeOptions] = None, progress: bool = False,
                     **overrides) -> Generator[int, None, Transcript]:
    """`transcribe`, a batch of windows at a time: yields the number of windows decoded so far after each
    batch and returns the transcript. For a caller with other work between batches (the server decodes its
    other requests there, so that an hour-long recording does not stall them)."""
    opts = TranscribeOptions(**{**(options.__dict__ if options else {}), **overrides})
    opts.validate()
    if "audio" not in model.accepts:
        raise GenerationError("this model has no audio encoder: it cannot transcribe")
    cfg = model.audio_config
    rate = cfg.sample_rate
    if isinstance(audio, (str, Path)):
        wave = load_audio(audio, rate)
    else:
        wave = torch.as_tensor(audio, dtype=torch.float32)
        if wave.dim() != 1:
            raise GenerationError(f"audio samples must be 1-D (mono), got shape {tuple(wave.shape)}")
    if not bool(torch.isfinite(wave).all()):
        raise GenerationError("the audio holds NaN or infinite samples")
    duration = wave.shape[0] / rate
    window = int(max_window_seconds(model, tokenizer, opts) * rate)
    overlap = min(int(opts.overlap_seconds * rate), window // 4)
    plan = [windows_of(a, b, window, overlap) for a, b in speech_regions(wave, rate, opts)]
    spans = [w for region in plan for w in region]
    hyps: list[Hypothesis] = []
    bar = None
    if progress and spans:
        from tqdm import tqdm

        bar = tqdm(total=len(spans), unit="window", desc="transcribe")
    step = max(1, opts.batch_size)
    for b in range(0, len(spans), step):
        tried = decode_windows(model, tokenizer, [wave[a:e] for a, e in spans[b:b + step]], opts)
        hyps += [keep(attempts, opts) for attempts in tried]
        if bar is not None:
            bar.update(len(spans[b:b + step]))
        yield len(hyps)
    if bar is not None:
        bar.close()
    segments, k = [], 0
    most = max(2, int(opts.overlap_seconds * 4) + 2)  # words said in the overlap, generously
    for region in plan:
        mine = hyps[k:k + len(region)]
        k += len(region)
        words = stitch([h.text.split() for h in mine], most)
        for j, ((a, e), h, w) in enumerate(zip(region, mine, words)):
            start = a if j == 0 else (a + region[j - 1][1]) / 2  # neighbours meet mid-overlap
            end = e if j == len(region) - 1 else (region[j + 1][0] + e) / 2
            if w:
                segments.append(Segment(start / rate, end / rate, " ".join(w), h.avg_logprob, h.compression_ratio,
                                        h.temperature))
    return Transcript(" ".join(s.text for s in segments), segments, duration)
