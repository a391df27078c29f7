"""Built-in spoken phrases: short English utterances synthesized offline with espeak-ng, each with its exact
transcript. Every utterance is a pure function of (seed, split, index), like the shape scenes of `builtin`.

    utterance(0, 6, "train") -> Utterance(audio=(samples,) float32 at 16 kHz, text="turn off the fan", ...)

The words come from a small grammar (`VOCABULARY`, 148 words): numbers ("seven hundred and three"), digit
strings ("three one four"), the shape-scene words ("a small red circle at the top left"), short commands
("stop the music") and short sentences. Transcripts are lower case, without punctuation, numbers in words.

Speakers are espeak-ng voices: an accent (`ACCENTS`, 7) joined with a voice variant (`VARIANTS`, 20), e.g.
"en-GB-scotland+f1": 140 voices. The test split speaks only with the four `TEST_VARIANTS` (in all seven
accents: 28 voices); train and val never use them (112 voices). So test measures unseen speakers, not
unseen accents or words.

After synthesis (22,050 Hz) each utterance is resampled to 16 kHz (soxr "HQ"), scaled to a random peak level,
padded with a little silence and mixed with coloured gaussian noise at a random SNR. The result is quantized
to 16 bits (float32 = int16 / 32768), so the .npz cache and the WAV files hold it exactly.

The espeak-ng library comes from the PyPI package `espeakng-loader` (library and voice data bundled) and is
driven through ctypes; see `synthesize`.
"""
from __future__ import annotations

import _ctypes
import atexit
import ctypes
import hashlib
import io
import json
import multiprocessing
import multiprocessing.util
import os
import random
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np

from ...atomic import write_atomic
from ...extras import optional
from .scenes import CELLS, COLORS, SHAPES, SIZES, cell_phrase

sf = optional("soundfile")
soxr = optional("soxr")

SPLITS = ("train", "val", "test")
SAMPLE_RATE = 16000  # Hz, of every utterance
ESPEAK_SAMPLE_RATE = 22050  # Hz, what espeak-ng produces
GENERATOR_VERSION = 1  # bump when an utterance for the same (seed, split, index) changes; names cache files
_INDEX_BITS = 40

# "en" (generic British) is close to en-GB-x-rp; "en-Shaw" reads the Shavian alphabet and, given Latin
# letters, sounds exactly like "en". Both are left out.
ACCENTS = ("en-US", "en-US-nyc", "en-GB-x-rp", "en-GB-scotland", "en-GB-x-gbclan", "en-GB-x-gbcwmd", "en-029")
# Natural-sounding variants of three families: espeak's formant voices (male, female), its Klatt synthesizers.
# Left out: the robot, whisper and novelty variants, and every variant with "breath" noise (f2, f3, f5, Alicia,
# sandro, victor, Demonic, whisper, whisperf): espeak-ng mixes that noise from libc rand() and from memory it
# never initialized, so those voices give different samples from call to call.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy",
            "f1", "f4", "Annie", "belinda", "linda", "steph", "aunty", "grandma",
            "klatt", "klatt2", "klatt3")
TEST_VARIANTS = ("m7", "f4", "Annie", "klatt3")  # heard only in the test split, in all seven accents
TRAIN_VOICES = tuple(f"{a}+{v}" for a in ACCENTS for v in VARIANTS if v not in TEST_VARIANTS)  # train, val
TEST_VOICES = tuple(f"{a}+{v}" for a in ACCENTS for v in TEST_VARIANTS)
VOICES = TRAIN_VOICES + TEST_VOICES

RATE_RANGE = (130, 210)  # words per minute
PITCH_RANGE = (30, 70)  # espeak's 0-100 pitch scale, relative to the voice's own range
SNR_RANGE_DB = (15.0, 40.0)  # speech power over noise power
PEAK_RANGE_DB = (-12.0, -1.0)  # peak level before the noise, dB below full scale
SILENCE_RANGE_S = (0.05, 0.3)  # added before and after the speech, each
MEAN_DURATION_S = 1.71  # mean utterance length, train split, seed 0, 2000 utterances; for sizing only


class SpeechError(RuntimeError):
    """espeak-ng cannot be loaded or refuses a voice, parameter or text."""


class Utterance(NamedTuple):
    audio: np.ndarray  # (samples,) float32 at SAMPLE_RATE, values int16 / 32768
    text: str
    voice: str  # "accent+variant", e.g. "en-US+f1"
    rate: int  # words per minute
    pitch: int  # 0-100
    kind: str  # one of PHRASE_KINDS
    snr_db: float


# --- the phrase grammar ------------------------------------------------------------------------------------

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
DEVICES = ("lights", "radio", "fan", "heater")
MEDIA = ("music", "video", "song", "radio")
OPENINGS = ("door", "window", "box", "gate")
DIRECTIONS = ("up", "down", "left", "right", "forward", "back")
ANIMALS = ("cat", "dog", "bird", "child")
PLACES = ("on", "under", "near", "behind")
FURNITURE = ("table", "chair", "bed", "box")
THINGS = ("book", "car", "house", "ball", "cup")
ADJECTIVES = ("big", "little", "new") + tuple(SIZES) + tuple(COLORS)  # all begin with a consonant: "a big"
WEATHER = ("cold", "warm", "sunny", "windy", "late", "early")
WHEN = ("today", "outside", "again", "now")
FIXED_SENTENCES = ("what time is it", "good morning", "good night", "thank you", "see you tomorrow",
                   "see you later", "how are you", "yes please", "no thank you")


def number_words(n: int) -> str:
    """0 <= n < 10000 in words, British style: 703 -> "seven hundred and three", 42 -> "forty two"."""
    if not 0 <= n < 10000:
        raise ValueError(f"number_words covers 0..9999, got {n}")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + (f" {ONES[n % 10]}" if n % 10 else "")
    if n < 1000:
        head, rest = f"{ONES[n // 100]} hundred", n % 100
    else:
        head, rest = f"{ONES[n // 1000]} thousand", n % 1000
        if rest >= 100:
            return f"{head} {number_words(rest)}"
    return f"{head} and {number_words(rest)}" if rest else head


def _number(rng: random.Random) -> str:
    digits = rng.randint(1, 4)  # as many one-digit as four-digit numbers
    return number_words(rng.randrange(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits))


def _digits(rng: random.Random) -> str:
    return " ".join(ONES[rng.randrange(10)] for _ in range(rng.randint(3, 7)))


def _scene(rng: random.Random) -> str:
    count = rng.randint(1, 3)
    words = ["a" if count == 1 else ONES[count]]
    if rng.random() < 0.5:
        words.append(rng.choice(tuple(SIZES)))
    words.append(rng.choice(tuple(COLORS)))
    words.append(rng.choice(SHAPES) + ("" if count == 1 else "s"))
    if rng.random() < 0.5:
        words.append(cell_phrase(rng.choice(CELLS)))
    return " ".join(words)


_COMMANDS = (  # one kind of command each; a command's words are drawn in this order
    lambda rng: f"turn {rng.choice(('left', 'right', 'around'))}",
    lambda rng: f"turn {rng.choice(('on', 'off'))} the {rng.choice(DEVICES)}",
    lambda rng: f"{rng.choice(('stop', 'play', 'pause'))} the {rng.choice(MEDIA)}",
    lambda rng: f"{rng.choice(('open', 'close', 'lock'))} the {rng.choice(OPENINGS)}",
    lambda rng: f"{rng.choice(('go', 'move'))} {rng.choice(DIRECTIONS)}",
    lambda rng: f"{rng.choice(('pick up', 'put down', 'find'))} the {rng.choice(tuple(COLORS))} {rng.choice(SHAPES)}",
    lambda rng: f"set a timer for {number_words(rng.randint(2, 59))} {rng.choice(('minutes', 'seconds'))}",
    lambda rng: rng.choice(("stop", "go", "wait", "yes", "no", "start")),
)


def _command(rng: random.Random) -> str:
    return _COMMANDS[rng.randrange(len(_COMMANDS))](rng)


def _sentence(rng: random.Random) -> str:
    s = rng.randrange(6)
    if s == 0:
        return f"the {rng.choice(ANIMALS)} is {rng.choice(PLACES)} the {rng.choice(FURNITURE)}"
    if s == 1:
        return (f"{rng.choice(('i', 'we', 'they'))} {rng.choice(('like', 'see', 'want', 'need', 'have'))} "
                f"{rng.choice(('a', 'the'))} {rng.choice(ADJECTIVES)} {rng.choice(THINGS)}")
    if s == 2:
        return f"it is {rng.choice(WEATHER)} {rng.choice(WHEN)}"
    if s == 3:
        return f"where is the {rng.choice(tuple(COLORS))} {rng.choice(SHAPES)}"
    if s == 4:
        return f"how many {rng.choice(SHAPES)}s are there"
    return rng.choice(FIXED_SENTENCES)


_KINDS = {"number": _number, "digits": _digits, "scene": _scene, "command": _command, "sentence": _sentence}
PHRASE_KINDS = tuple(_KINDS)
_KIND_WEIGHTS = (0.2, 0.15, 0.25, 0.2, 0.2)


def phrase(rng: random.Random) -> tuple[str, str]:
    """(transcript, kind) drawn from the grammar: lower case words in VOCABULARY, single spaces."""
    kind = rng.choices(PHRASE_KINDS, weights=_KIND_WEIGHTS)[0]
    return _KINDS[kind](rng), kind


def _vocabulary() -> frozenset[str]:
    words = set(ONES) | set(TENS[2:]) | {"hundred", "thousand", "and"}
    words |= set(SIZES) | set(COLORS) | set(SHAPES) | {s + "s" for s in SHAPES} | {"a"}
    words |= {w for cell in CELLS for w in cell_phrase(cell).split()}
    words |= {"turn", "around", "on", "off", "the", "stop", "play", "pause", "open", "close", "lock", "go",
              "move", "pick", "up", "put", "down", "find", "set", "timer", "for", "minutes", "seconds",
              "wait", "yes", "no", "start"}
    words |= set(DEVICES) | set(MEDIA) | set(OPENINGS) | set(DIRECTIONS)
    words |= set(ANIMALS) | set(PLACES) | set(FURNITURE) | set(THINGS) | set(ADJECTIVES) | set(WEATHER)
    words |= set(WHEN) | {"is", "i", "we", "they", "like", "see", "want", "need", "have", "it", "where",
                          "how", "many", "are", "there"}
    words |= {w for s in FIXED_SENTENCES for w in s.split()}
    return frozenset(words)


VOCABULARY = _vocabulary()


# --- espeak-ng through ctypes ------------------------------------------------------------------------------
# The library keeps synthesis state in C statics that carry from one utterance into the next (the pitch
# "flutter" phase in wavegen.c's AdvanceParameters, the waveform phase, random noise state), so the same call
# gives different samples depending on what was spoken before, even after espeak_Terminate + Initialize.
# Each `synthesize` therefore loads a fresh image of the library, speaks, and unloads it (dlclose): the same
# arguments then give the same samples in any process, whatever came before. That costs ~2 ms per call.
# The image is a private copy of the .so, so that no other handle to the bundled file (another package
# using espeakng_loader) can keep it mapped and its state alive.

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
_EE_OK, _EE_NOT_FOUND = 0, 2
_RATE_LIMITS = (80, 450)  # espeak's own range without its sonic speed-up

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_lock = threading.Lock()  # one synthesis at a time in this process (the library is not reentrant)
_chunks: list[np.ndarray] = []
_private_copy: Optional[tuple[str, bytes]] = None  # (library path, data path), made once per process


@_SynthCallback
def _collect(wav, n_samples, events):  # called by espeak_Synth with each block of int16 samples
    if n_samples > 0:
        _chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
    return 0  # 0 = continue


def espeak_paths() -> tuple[str, str]:
    """(library file, espeak-ng-data folder) of the bundled espeak-ng, or SpeechError saying what was tried."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise SpeechError("espeak-ng not found: tried `import espeakng_loader` (the PyPI package "
                          f"espeakng-loader, which bundles libespeak-ng and its data): {exc}; install it with "
                          f"pip install 'omnigpt[audio]'") from None
    library = espeakng_loader.get_library_path()
    if not os.path.isfile(library):
        raise SpeechError(f"espeak-ng not found: espeakng_loader.get_library_path() gave {library}, "
                          f"which is not a file")
    try:
        data = espeakng_loader.get_data_path()
    except RuntimeError as exc:  # raised when the bundled espeak-ng-data folder is missing
        raise SpeechError(f"espeak-ng voice data not found: espeakng_loader.get_data_path(): {exc}") from None
    return library, data


def _library_copy() -> tuple[str, bytes]:
    global _private_copy
    if _private_copy is None:
        library, data = espeak_paths()
        folder = tempfile.mkdtemp(prefix="omnigpt-espeak-")
        atexit.register(shutil.rmtree, folder, True)
        # A pool worker leaves by os._exit, skipping atexit; multiprocessing runs its own finalizers then.
        multiprocessing.util.Finalize(None, shutil.rmtree, (folder, True), exitpriority=0)
        copy = os.path.join(folder, os.path.basename(library))
        shutil.copyfile(library, copy)
        _private_copy = (copy, os.fsencode(data))
    return _private_copy


def _load() -> ctypes.CDLL:
    path, data = _library_copy()
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        raise SpeechError(f"cannot load espeak-ng from {path} (a copy of {espeak_paths()[0]}): {exc}") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT)
    if rate != ESPEAK_SAMPLE_RATE:
        _unload(lib)
        raise SpeechError(f"espeak_Initialize with data {data.decode()} returned {rate}, "
                          f"expected the sample rate {ESPEAK_SAMPLE_RATE}")
    lib.espeak_SetSynthCallback(_collect)
    return lib


def _unload(lib: ctypes.CDLL) -> None:
    lib.espeak_Terminate()
    (getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary)(lib._handle)


def _check_variant(name: str) -> None:
    # espeak-ng ignores an unknown variant and speaks with the plain voice; say so instead.
    if "+" in name:
        folder = Path(_library_copy()[1].decode()) / "voices" / "!v"
        variant = name.split("+", 1)[1]
        if not (folder / variant).is_file():
            raise SpeechError(f"espeak-ng has no voice variant {variant!r} (in voice {name!r}); the variants "
                              f"are the files of {folder}")


def synthesize(text: str, voice: str = "en-US", variant: Optional[str] = None, rate: int = 175,
               pitch: int = 50) -> tuple[np.ndarray, int]:
    """Speak `text` with espeak-ng: ((samples,) float32 mono in [-1, 1), ESPEAK_SAMPLE_RATE = 22050).

    voice: an espeak voice name ("en-US", "en-GB-scotland"), optionally with a variant ("en-US+f1");
    variant: a variant name ("f1", "klatt2") joined to `voice` with "+". rate: words per minute (80-450);
    pitch: 0-100, relative to the voice's own pitch range.
    The same arguments give the same samples, whatever was spoken before, except with variants that add
    "breath" noise (see VARIANTS). Calls are serialized by a lock, which is per process: separate processes
    synthesize in parallel, each with its own copy of the library.
    """
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise SpeechError(f"synthesize: text must be a non-empty string without NUL, got {text!r}")
    name = voice if variant is None else f"{voice}+{variant}"
    if name.count("+") > 1:
        raise SpeechError(f"synthesize: voice {voice!r} already names a variant; variant={variant!r} would be a second")
    if not (isinstance(rate, int) and _RATE_LIMITS[0] <= rate <= _RATE_LIMITS[1]):
        raise SpeechError(f"synthesize: rate must be an int of {_RATE_LIMITS[0]}-{_RATE_LIMITS[1]} words per "
                          f"minute, got {rate!r}")
    if not (isinstance(pitch, int) and 0 <= pitch <= 100):
        raise SpeechError(f"synthesize: pitch must be an int of 0-100, got {pitch!r}")
    encoded = text.encode("utf-8") + b"\0"
    with _lock:
        _check_variant(name)
        _chunks.clear()
        lib = _load()
        try:
            status = lib.espeak_SetVoiceByName(name.encode("utf-8"))
            if status != _EE_OK:
                reason = "no such voice or variant" if status == _EE_NOT_FOUND else f"error {status}"
                raise SpeechError(f"espeak-ng cannot set voice {name!r}: {reason} (voices live in "
                                  f"{_library_copy()[1].decode()}/voices and lang)")
            lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
            lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
            status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != _EE_OK:
                raise SpeechError(f"espeak_Synth failed with status {status} on {text!r} (voice {name!r})")
            lib.espeak_Synchronize()
        finally:
            _unload(lib)
        samples = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        _chunks.clear()
    return samples.astype(np.float32) / 32768.0, ESPEAK_SAMPLE_RATE


# --- utterances and splits ---------------------------------------------------------------------------------

def _check_split(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown speech split {split!r}; expected one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


def voices_for(split: str) -> tuple[str, ...]:
    """The voices a split speaks with: TEST_VOICES for "test", TRAIN_VOICES for "train" and "val"."""
    return TEST_VOICES if _check_split(split) == SPLITS.index("test") else TRAIN_VOICES


def _quantize(x: np.ndarray) -> np.ndarray:
    """float -> int16, rounding, clipped to the int16 range."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) unit-power gaussian noise with a random spectral tilt, from white (slope 0) to pink (power ~ 1/f)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    spectrum *= freqs ** (-rng.uniform(0.0, 0.5))
    noise = np.fft.irfft(spectrum, n)
    return noise / max(float(np.sqrt(np.mean(noise ** 2))), 1e-12)


def _room(speech: np.ndarray, rnd: random.Random, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Speech at 16 kHz -> a random peak level, silence before and after, noise at `snr_db`; int16."""
    peak = float(np.max(np.abs(speech))) if speech.size else 0.0
    gain = 10 ** (rnd.uniform(*PEAK_RANGE_DB) / 20) / max(peak, 1e-6)
    speech = speech.astype(np.float64) * gain
    lead, tail = (round(rnd.uniform(*SILENCE_RANGE_S) * SAMPLE_RATE) for _ in range(2))
    mix = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    power = float(np.mean(speech ** 2)) if speech.size else 0.0
    mix += _noise(rng, mix.size) * np.sqrt(power / 10 ** (snr_db / 10))
    return _quantize(mix)


def utterance(seed: int, index: int, split: str = "train", text: Optional[str] = None) -> Utterance:
    """Utterance `index` of `split` for `seed`: the same arguments give a bit-identical waveform and the same
    text. Each split draws from its own random streams; the test split speaks with TEST_VOICES only.
    `text`: say this instead of a phrase of the grammar (voice, rate, pitch and noise are drawn as usual)."""
    split_id = _check_split(split)
    if seed < 0 or not 0 <= index < 2**_INDEX_BITS:
        raise ValueError(f"utterance seed and index must be >= 0 (index < 2**{_INDEX_BITS}), "
                         f"got seed={seed}, index={index}")
    rnd = random.Random(((seed * len(SPLITS) + split_id) << _INDEX_BITS) + index)
    text, kind = phrase(rnd) if text is None else (text, "given")
    voice = rnd.choice(voices_for(split))
    rate, pitch = rnd.randint(*RATE_RANGE), rnd.randint(*PITCH_RANGE)
    snr_db = round(rnd.uniform(*SNR_RANGE_DB), 2)
    speech, sr = synthesize(text, voice, rate=rate, pitch=pitch)
    speech = soxr.resample(speech, sr, SAMPLE_RATE, quality="HQ")
    samples = _room(speech, rnd, np.random.default_rng([seed, split_id, index]), snr_db)
    return Utterance(samples.astype(np.float32) / 32768.0, text, voice, rate, pitch, kind, snr_db)


def _utterance_args(args: tuple[int, int, str, Optional[str]]) -> Utterance:
    return utterance(*args)


def iter_utterances(split: str, count: int, seed: int = 0, start: int = 0,
                    workers: Optional[int] = None, texts: Optional[Sequence[str]] = None) -> Iterator[Utterance]:
    """Utterances start .. start+count-1 of a split, in order, synthesized by `workers` processes (None: 1
    for fewer than 200 utterances, else up to 2). The result does not depend on `workers`: each utterance is
    a pure function of its arguments.

    Worker processes are started with "spawn", not "fork": a forked child inherits the parent's locks and
    thread pools in whatever state they are (torch's, once imported), and a fork pool started after
    `import torch` was seen to hang. Spawned workers import this module afresh.

    texts: utterance i says texts[i % len(texts)] instead of a phrase of the grammar.
    """
    _check_split(split)
    if count < 0 or start < 0:
        raise ValueError(f"count and start must be >= 0, got count={count}, start={start}")
    if workers is None:
        workers = 1 if count < 200 else min(2, os.cpu_count() or 1)
    if texts is not None and not texts:
        raise ValueError("texts, when given, must hold at least one text")
    args = [(seed, i, split, texts[i % len(texts)] if texts else None) for i in range(start, start + count)]
    if workers <= 1 or count <= 1:
        yield from map(_utterance_args, args)
        return
    pool = multiprocessing.get_context("spawn").Pool(min(workers, count))
    try:
        yield from pool.imap(_utterance_args, args, chunksize=max(1, min(32, count // (4 * workers))))
        pool.close()  # let the workers exit by themselves, so that they remove their library copies
        pool.join()
    finally:
        pool.terminate()


def utterances(split: str, count: int, seed: int = 0, start: int = 0,
               workers: Optional[int] = None, texts: Optional[Sequence[str]] = None) -> list[Utterance]:
    """Utterances start .. start+count-1 of a split (see `iter_utterances`)."""
    return list(iter_utterances(split, count, seed, start, workers, texts))


# --- cached arrays, WAV files and manifests ----------------------------------------------------------------

@dataclass
class SpeechSet:
    """The utterances of a split end to end: utterance i is samples[offsets[i]:offsets[i + 1]]."""
    samples: np.ndarray  # (total samples,) int16 at SAMPLE_RATE
    offsets: np.ndarray  # (N + 1,) int64
    texts: list[str]
    voices: list[str]
    kinds: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def audio(self, i: int) -> np.ndarray:
        """(samples,) float32 of utterance i, equal to `utterance(...).audio`."""
        return self.samples[self.offsets[i]:self.offsets[i + 1]].astype(np.float32) / 32768.0

    @property
    def durations(self) -> np.ndarray:
        """(N,) seconds."""
        return np.diff(self.offsets) / SAMPLE_RATE


def _speech_set(items: Sequence[Utterance]) -> SpeechSet:
    lengths = [len(u.audio) for u in items]
    samples = (np.concatenate([_quantize(u.audio) for u in items]) if items else np.zeros(0, np.int16))
    return SpeechSet(samples, np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
                     [u.text for u in items], [u.voice for u in items], [u.kind for u in items])


def speech_dataset(split: str, count: int, seed: int = 0, cache_dir: Optional[str | Path] = None,
                   workers: Optional[int] = None, texts: Optional[Sequence[str]] = None) -> SpeechSet:
    """The first `count` utterances of a split (saying `texts` in turn, when given). With `cache_dir`, they are
    read from (or written once to) one .npz file there named by the arguments and GENERATOR_VERSION; it is
    written to a temporary name and renamed, so a file that exists is complete. Loading never unpickles.
    Synthesizing 200 or more shows a progress bar when stderr is a terminal."""
    _check_split(split)
    path = None
    if cache_dir is not None:
        said = "" if texts is None else "-" + hashlib.sha1("\n".join(texts).encode()).hexdigest()[:10]
        path = Path(cache_dir) / f"speech-{split}-seed{seed}-n{count}-v{GENERATOR_VERSION}{said}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                return SpeechSet(f["samples"], f["offsets"], meta["texts"], meta["voices"], meta["kinds"])
    from tqdm.auto import tqdm

    items = tqdm(iter_utterances(split, count, seed, workers=workers, texts=texts), total=count, unit="utt",
                 desc=f"synthesizing {split} speech (once)", leave=False, disable=None if count >= 200 else True)
    result = _speech_set(list(items))
    if path is not None:
        meta = json.dumps({"texts": result.texts, "voices": result.voices, "kinds": result.kinds,
                           "sample_rate": SAMPLE_RATE})
        buf = io.BytesIO()
        np.savez(buf, samples=result.samples, offsets=result.offsets, meta=np.array(meta))
        write_atomic(path, buf.getvalue())
    return result


def hours_to_count(hours: float) -> int:
    """How many utterances make about `hours` of audio, at MEAN_DURATION_S each (at least 1)."""
    if not hours > 0:
        raise ValueError(f"hours must be > 0, got {hours!r}")
    return max(1, round(hours * 3600 / MEAN_DURATION_S))


def write_speech_dataset(out_dir: str | Path, split: str, count: int, seed: int = 0,
                         workers: Optional[int] = None) -> Path:
    """Write out_dir/audio/<split>/NNNNNN.wav (16 kHz mono 16-bit PCM) and the manifest out_dir/<split>.jsonl,
    one line an utterance: {"audio": path relative to the manifest, "text": transcript, "voice", "kind",
    "duration": seconds}. The manifest is written last, to a temporary name then renamed: when it exists,
    it is complete."""
    _check_split(split)
    out = Path(out_dir)
    audio_dir = out / "audio" / split
    audio_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, u in enumerate(iter_utterances(split, count, seed, workers=workers)):
        rel = f"audio/{split}/{i:06d}.wav"
        sf.write(out / rel, _quantize(u.audio), SAMPLE_RATE, subtype="PCM_16")
        lines.append(json.dumps({"audio": rel, "text": u.text, "voice": u.voice, "kind": u.kind,
                                 "duration": round(len(u.audio) / SAMPLE_RATE, 3)}))
    return write_atomic(out / f"{split}.jsonl", "".join(line + "\n" for line in lines))
