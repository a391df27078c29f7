"""What a training run learns from: token windows (pretraining) or image-text examples (fine-tuning).

Both give the trainer the same three things: the tokenizer, `train_batch(step, count, start, stop)` (rows
start..stop of step `step`'s global batch, a pure function of the seed and the step, so resumed and
multi-process runs see the same data), and `val_batch(i, batch_size)` (fixed validation batches).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch

from ..config import AudioConfig, Config, ConfigError
from ..extras import optional
from ..data.prompts import (CAPTION_PROMPT, CLASSIFY_PROMPT, TRANSCRIBE_PROMPT, followup_prompt, target_text,
                            vqa_prompt)
from ..data.builtin import scenes as builtin_scenes
from ..data.builtin import speech
from ..data.audio import MelConfig, SpecAugment, add_noise, load_audio, log_mel
from ..data.batch import Batch, Example, collate, expand_placeholders
from ..data.image import Augment, ImageTransform, preprocess
from ..data.sources import AudioText, ImageText, read_audio_source, read_source
from ..data.text import DataError, FIMTokens, TokenWindows, load_tokens, prepare_tokens, read_corpus
from ..tokenizer import Tokenizer
from . import distributed

Image = optional("PIL.Image")

VAL_SEED = 987_654_321  # validation data is fixed for a run, whatever the training seed
BUILTIN_SCENES = "builtin:scenes"
BUILTIN_SPEECH = "builtin:speech"
BUILTIN_VAL_UTTERANCES = 256
BUILTIN_SEED = 0  # the built-in scenes are one fixed dataset; the training seed only changes the sampling
BUILTIN_VAL_SCENES = 256
TOKENIZER_SCENES = 3000  # built-in scenes whose texts train a BPE tokenizer


class TrainingData(Protocol):
    tokenizer: Tokenizer

    def train_batch(self, step: int, count: int, start: int, stop: int) -> Batch: ...

    def val_batch(self, i: int, batch_size: int) -> Batch: ...


# ------------------------------------------------------------------------------------------------ text
class TextData:
    """Pretraining: random windows of a tokenized corpus (see `data.text.TokenWindows`)."""

    def __init__(self, cfg: Config, run_dir: Path, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        fim = FIMTokens(tokenizer.fim_prefix_id, tokenizer.fim_middle_id, tokenizer.fim_suffix_id)
        self.train = TokenWindows(load_tokens(run_dir / "data", "train"), cfg.model.block_size, cfg.train.seed,
                                  cfg.data.fim_rate, fim)
        val_tokens = load_tokens(run_dir / "data", "val")
        if len(val_tokens) < 3:
            raise DataError(f"the validation split has {len(val_tokens)} tokens; give more text or raise "
                            f"data.val_fraction")
        self.val = TokenWindows(val_tokens, min(cfg.model.block_size, len(val_tokens) - 1), VAL_SEED)

    def train_batch(self, step: int, count: int, start: int, stop: int) -> Batch:
        return Batch(*self.train.batch(step, count, start, stop))

    def val_batch(self, i: int, batch_size: int) -> Batch:
        return Batch(*self.val.batch(i, batch_size))


def load_or_create_tokenizer(cfg: Config, run_dir: Path, texts: Callable[[], list[str]]) -> Tokenizer:
    """The run's tokenizer: kept in run_dir, else from train.init_from, data.tokenizer_path, or trained on
    texts() with data.tokenizer and model.vocab_size."""
    tok_path = run_dir / "tokenizer.json"
    if tok_path.is_file():
        return Tokenizer.load(tok_path)
    if cfg.train.init_from:
        from ..checkpoint import resolve
        tokenizer = Tokenizer.load(resolve(cfg.train.init_from) / "tokenizer.json")
    elif cfg.data.tokenizer_path:
        tokenizer = Tokenizer.load(cfg.data.tokenizer_path)
    else:
        tokenizer = Tokenizer.create(cfg.data.tokenizer, texts(), cfg.model.vocab_size)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
                          f"{cfg.model.vocab_size}: raise model.vocab_size")
    tokenizer.save(tok_path)
    return tokenizer


def prepare_text(cfg: Config, run_dir: Path, env: distributed.DistEnv) -> TextData:
    """Train or load the tokenizer and tokenize the corpus into run_dir/data, once (on the main process)."""
    if env.is_main:
        docs: list[str] = []

        def texts() -> list[str]:
            if not docs:
                docs.extend(read_corpus(cfg.data.corpus, cfg.data.encoding_errors))
            return docs

        tokenizer = load_or_create_tokenizer(cfg, run_dir, texts)
        if not (run_dir / "data" / "meta.json").is_file():
            prepare_tokens(texts(), tokenizer, run_dir / "data", cfg.data.val_fraction)
    distributed.barrier(env)
    return TextData(cfg, run_dir, Tokenizer.load(run_dir / "tokenizer.json"))


# ------------------------------------------------------------------------------------------ image-text
@dataclass
class RawExample:
    image: Optional[Image.Image | Path]
    prompt: str
    target: str  # without the leading space
    task: str  # "caption", a question type, or "transcribe"
    turns: list[tuple[str, str]] = field(default_factory=list)  # more (prompt, target) about the same input
    audio: Optional[np.ndarray | Path] = None  # mono samples at audio.sample_rate, or a file


class ExampleSet(Protocol):
    def __len__(self) -> int: ...

    def example(self, index: int, rng: random.Random) -> RawExample: ...


class SceneExamples:
    """Built-in shape scenes drawn on demand: each is a caption example or one of its questions."""

    def __init__(self, split: str, count: int, seed: int, tasks: Sequence[str], caption_fraction: float,
                 size: int = 64, questions_per_example: int = 1):
        self.split, self.count, self.seed, self.size = split, count, seed, size
        self.tasks = [t for t in tasks if t in ("caption", "vqa")]  # a multitask run also lists transcribe
        self.caption_fraction = caption_fraction if len(self.tasks) == 2 else float("caption" in self.tasks)
        self.questions_per_example = questions_per_example

    def __len__(self) -> int:
        return self.count

    def example(self, index: int, rng: random.Random) -> RawExample:
        s = builtin_scenes.scene(self.seed, index, self.split, self.size)
        if rng.random() < self.caption_fraction or not s.qas:
            return RawExample(s.image, CAPTION_PROMPT, s.caption, "caption")
        first, *more = rng.sample(s.qas, min(self.questions_per_example, len(s.qas)))
        turns = [(followup_prompt(q.question), q.answer) for q in more]
        return RawExample(s.image, vqa_prompt(first.question), first.answer, first.type, turns)


class SpeechExamples:
    """Built-in spoken phrases (synthesized once, cached): each is a transcription example."""

    def __init__(self, split: str, count: int, seed: int, cache_dir: Path):
        self.split, self.count, self.seed, self.cache_dir = split, count, seed, cache_dir
        self._set: Optional[speech.SpeechSet] = None

    def load(self) -> "speech.SpeechSet":
        if self._set is None:
            self._set = speech.speech_dataset(self.split, self.count, self.seed, self.cache_dir)
        return self._set

    def __len__(self) -> int:
        return self.count

    def example(self, index: int, rng: random.Random) -> RawExample:
        s = self.load()
        return RawExample(None, TRANSCRIBE_PROMPT, s.texts[index], "transcribe", audio=s.audio(index))

    def texts(self) -> list[str]:
        return list(self.load().texts) + ["transcript:"]


class FileExamples:
    """Examples read from a manifest or COCO file: captions, or question/answer rows (those of `tasks`)."""

    def __init__(self, items: Sequence[ImageText], tasks: Sequence[str] = ("caption", "vqa")):
        self.items = [it for it in items if ("vqa" if it.question is not None else "caption") in tasks]

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index: int, rng: random.Random) -> RawExample:
        it = self.items[index]
        if it.question is not None:
            return RawExample(it.image, vqa_prompt(it.question), it.text, "vqa")
        return RawExample(it.image, CAPTION_PROMPT, it.text, "caption")

    def texts(self) -> list[str]:
        return [t for it in self.items for t in ((it.question or ""), it.text) if t]


class AudioFileExamples:
    """Examples read from an audio manifest, a LibriSpeech folder or class folders: a clip with a transcript
    is a transcription example (`TRANSCRIBE_PROMPT`), a clip with a label a classification example
    (`CLASSIFY_PROMPT`, answered by the label)."""

    def __init__(self, items: Sequence[AudioText]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index: int, rng: random.Random) -> RawExample:
        it = self.items[index]
        if it.label is not None:
            return RawExample(None, CLASSIFY_PROMPT, it.label, "classify", audio=it.audio)
        return RawExample(None, TRANSCRIBE_PROMPT, it.text, "transcribe", audio=it.audio)

    def texts(self) -> list[str]:
        return [it.text for it in self.items] + ["transcript:", "class:"]

    def split_off(self, fraction: float) -> tuple["AudioFileExamples", "AudioFileExamples"]:
        """(train, validation), stratified by label (see `stratified_split`)."""
        rest, val = stratified_split([it.label for it in self.items], fraction)
        return AudioFileExamples([self.items[i] for i in rest]), AudioFileExamples([self.items[i] for i in val])


def stratified_split(labels: Sequence[Optional[str]], fraction: float) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): about `fraction` of each label's examples (seeded), at least one
    of a label with two or more and never its last one, so validation holds every class training has (when
    it can) and training holds every class. Unlabeled examples (None) form one group."""
    groups: dict = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    rng = random.Random(VAL_SEED)
    train, val = [], []
    for members in groups.values():
        members = list(members)
        rng.shuffle(members)
        n_val = min(len(members) - 1, max(1, round(len(members) * fraction)))
        val += members[:n_val]
        train += members[n_val:]
    if not val:
        raise DataError(f"{len(labels)} example(s): too few to hold out validation examples; give "
                        f"data.val_sources")
    return sorted(train), sorted(val)


class TextExamples:
    """Plain text for the language-model task in a multitask run: pieces of about `chars` characters of the
    corpus, cut at whitespace, each a target with an empty prompt."""

    def __init__(self, corpus: Sequence[str], errors: str = "strict", chars: int = 400):
        self.pieces: list[str] = []
        for doc in read_corpus(corpus, errors):
            words, piece = doc.split(), []
            size = 0
            for w in words:
                piece.append(w)
                size += len(w) + 1
                if size >= chars:
                    self.pieces.append(" ".join(piece))
                    piece, size = [], 0
            if piece:
                self.pieces.append(" ".join(piece))
        if not self.pieces:
            raise DataError(f"text source {list(corpus)} holds no words")

    def __len__(self) -> int:
        return len(self.pieces)

    def example(self, index: int, rng: random.Random) -> RawExample:
        return RawExample(None, "", self.pieces[index], "text")

    def texts(self) -> list[str]:
        return self.pieces

    def split_off(self, fraction: float) -> tuple["TextExamples", "TextExamples"]:
        """(train, validation): the last `fraction` of the pieces are held out."""
        n_val = max(1, int(len(self.pieces) * fraction))
        train, val = TextExamples.__new__(TextExamples), TextExamples.__new__(TextExamples)
        train.pieces, val.pieces = self.pieces[:-n_val], self.pieces[-n_val:]
        return train, val


class Concat:
    """Several example sets as one; `weights` (one per set) make `draw` pick a set with those chances."""

    def __init__(self, parts: Sequence[ExampleSet], weights: Optional[Sequence[float]] = None,
                 names: Optional[Sequence[str]] = None):
        keep = [i for i, p in enumerate(parts) if len(p)]
        self.parts = [parts[i] for i in keep]
        self.weights = [weights[i] for i in keep] if weights else None
        self.names = [names[i] for i in keep] if names else [f"source {i}" for i in keep]
        if not self.parts:
            raise DataError("no usable examples: every source is empty")

    def draw(self, rng: random.Random) -> RawExample:
        """A random example: uniform over all examples, or a set by its weight then uniform within it."""
        if self.weights is None:
            return self.example(rng.randrange(len(self)), rng)
        part = self.pick(rng)
        return part.example(rng.randrange(len(part)), rng)

    def pick(self, rng: random.Random) -> ExampleSet:
        """A set, by its weight (by its size when there are no weights)."""
        weights = self.weights if self.weights is not None else [len(p) for p in self.parts]
        return self.parts[rng.choices(range(len(self.parts)), weights=weights)[0]]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def example(self, index: int, rng: random.Random) -> RawExample:
        for p in self.parts:
            if index < len(p):
                return p.example(index, rng)
            index -= len(p)
        raise IndexError(index)


class MultimodalData:
    """Fine-tuning batches: images preprocessed (and augmented, seeded per row), audio turned into log-mel
    features, prompts tokenized with their placeholders expanded."""

    def __init__(self, cfg: Config, tokenizer: Tokenizer, train: ExampleSet, val: ExampleSet):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.train_set, self.val_set = train, val
        a = cfg.data.augment
        self.augment = Augment(tuple(a.random_crop_scale), hflip=a.hflip, rotate_degrees=a.rotate_degrees,
                               brightness=a.brightness, contrast=a.contrast, saturation=a.saturation, hue=a.hue)
        v = cfg.vision
        if v is not None:
            self.transform = ImageTransform(v.image_size, tuple(v.mean), tuple(v.std))
            self.n_placeholders = v.tokens if cfg.fusion.mode == "prefix" else 1
        if cfg.audio is not None:
            self.mel = mel_config(cfg.audio)
        aa = cfg.data.audio_augment
        self.spec_augment = SpecAugment(aa.freq_masks, aa.freq_width, aa.time_masks, aa.time_width)
        self.noise_snr_db = tuple(aa.noise_snr_db)
        self.augmenting = self.augment.active or self.spec_augment.active or bool(self.noise_snr_db)
        self._ids: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        ids = self._ids.get(text)
        if ids is None:
            ids = self.tokenizer.encode(text)
            if len(self._ids) < 200_000:
                self._ids[text] = ids
        return ids

    def make_example(self, raw: RawExample, rng: Optional[random.Random]) -> Example:
        prompt = self.encode(raw.prompt)
        images, clips = [], []
        if raw.image is not None:
            if self.cfg.vision is None:
                raise ConfigError("the data has images but the config has no 'vision' section")
            prompt = expand_placeholders(prompt, self.tokenizer.image_id, self.n_placeholders)
            augment = self.augment if rng is not None and self.augment.active else None
            images.append(preprocess(raw.image, self.transform, augment, rng if augment else None))
        if raw.audio is not None:
            if self.cfg.audio is None:
                raise ConfigError("the data has audio but the config has no 'audio' section")
            wave = raw.audio if isinstance(raw.audio, np.ndarray) else load_audio(raw.audio, self.mel.sample_rate)
            wave = torch.as_tensor(wave, dtype=torch.float32)
            if rng is not None and self.noise_snr_db:
                wave = add_noise(wave, rng.uniform(*self.noise_snr_db), rng)
            features = log_mel(wave, self.mel)
            if rng is not None and self.spec_augment.active:
                features = self.spec_augment.apply(features, rng)
            n = self.cfg.audio.tokens_for_frames(features.shape[-1]) if self.cfg.fusion.mode == "prefix" else 1
            prompt = expand_placeholders(prompt, self.tokenizer.audio_id, n)
            clips.append(features)
        turns = [(self.encode(p), self.encode(target_text(t))) for p, t in raw.turns]
        return Example(prompt, self.encode(target_text(raw.target)), images=images, task=raw.task,
                       turns=turns, audio=clips)

    def _rows(self, examples: ExampleSet, seed: int, step: int, start: int, stop: int, augment: bool) -> Batch:
        rows = []
        for r in range(start, stop):
            rng = random.Random(hash((seed, step, r)))
            raw = examples.draw(rng) if isinstance(examples, Concat) else examples.example(rng.randrange(len(examples)), rng)
            rows.append(self.make_example(raw, rng if augment else None))
        return collate(rows, self.tokenizer.pad_id, self.tokenizer.eos_id, self.cfg.model.block_size,
                       self.cfg.train.loss_average)

    def train_batch(self, step: int, count: int, start: int, stop: int) -> Batch:
        examples: ExampleSet = self.train_set
        if self.cfg.data.batch_mode == "per_source" and isinstance(examples, Concat):
            # one draw per step, the same on every process and micro-batch (ints only: str hashes vary by run)
            examples = examples.pick(random.Random(hash((self.cfg.train.seed, step, -1))))
        return self._rows(examples, self.cfg.train.seed, step, start, stop, augment=self.augmenting)

    def val_batch(self, i: int, batch_size: int, task: Optional[str] = None) -> Batch:
        """Fixed validation batch i: of every source together, or of the source named `task`."""
        if task is None:
            return self._rows(self.val_set, VAL_SEED, i, 0, batch_size, augment=False)
        return self._rows(self.val_set.parts[self.val_set.names.index(task)], VAL_SEED, i, 0, batch_size,
                          augment=False)

    def val_tasks(self) -> list[str]:
        """The validation sources by name, when there are several: their losses are logged one by one."""
        return list(self.val_set.names) if len(self.val_set.parts) > 1 else []


def mel_config(audio: AudioConfig) -> MelConfig:
    """The log-mel settings of an audio encoder (no fixed padding: clips keep their length)."""
    return MelConfig(audio.sample_rate, audio.n_fft, audio.hop_length, audio.n_mels, log=audio.log)


def cache_dir(cfg: Config) -> Path:
    """Where generated data is kept: data.cache_dir, else $OMNIGPT_CACHE, else ~/.cache/omnigpt."""
    return Path(cfg.data.cache_dir or os.environ.get("OMNIGPT_CACHE") or Path.home() / ".cache" / "omnigpt")


def _read_sources(cfg: Config, specs: Sequence[str], split: str) -> list[ExampleSet]:
    d = cfg.data
    sets: list[ExampleSet] = []
    for spec in specs:
        if spec == BUILTIN_SPEECH:
            count = d.builtin_utterances if split == "train" else BUILTIN_VAL_UTTERANCES
            sets.append(SpeechExamples(split, count, BUILTIN_SEED, cache_dir(cfg)))
        elif spec == BUILTIN_SCENES:
            count = d.builtin_scenes if split == "train" else BUILTIN_VAL_SCENES
            sets.append(SceneExamples(split, count, BUILTIN_SEED, d.tasks, d.caption_fraction, builtin_size(cfg),
                                      d.questions_per_example if split == "train" else 1))
        elif spec.startswith("text:"):
            sets.append(TextExamples([spec[len("text:"):]], d.encoding_errors, d.text_chars))
        elif spec.startswith("builtin:"):
            raise ConfigError(f"unknown built-in source {spec!r}: the built-in sources are {BUILTIN_SCENES!r} "
                              f"and {BUILTIN_SPEECH!r} (and text:builtin, Python's own help text)")
        elif _is_audio_source(spec, cfg):
            sets.append(AudioFileExamples(read_audio_source(spec, d.on_bad_file)))
        else:
            sets.append(FileExamples(read_source(spec, d.images, d.on_bad_file), d.tasks))
    return sets


def _is_audio_source(spec: str, cfg: Config) -> bool:
    """librispeech:/audiofolder: sources, and manifests when the model hears but does not see."""
    return spec.startswith(("librispeech:", "audiofolder:")) or (cfg.audio is not None and cfg.vision is None)


def builtin_size(cfg: Config) -> int:
    """Built-in scenes are drawn at the encoder's resolution (64 px unless the config says otherwise)."""
    return max(24, cfg.vision.image_size) if cfg.vision else 64


def prepare_multimodal(cfg: Config, run_dir: Path, env: distributed.DistEnv) -> MultimodalData:
    """Read the sources, hold out validation examples, and set up the tokenizer (trained on the texts)."""
    train_sets = _read_sources(cfg, cfg.data.sources, "train")
    if cfg.data.val_sources:
        val_sets = _read_sources(cfg, cfg.data.val_sources, "val")
    else:  # built-in scenes have their own val split; file sources give up their last val_fraction
        val_sets = []
        for i, s in enumerate(train_sets):
            if isinstance(s, SceneExamples):
                val_sets.append(SceneExamples("val", BUILTIN_VAL_SCENES, BUILTIN_SEED, s.tasks, s.caption_fraction,
                                              s.size))
            elif isinstance(s, SpeechExamples):
                val_sets.append(SpeechExamples("val", BUILTIN_VAL_UTTERANCES, BUILTIN_SEED, s.cache_dir))
            elif isinstance(s, TextExamples):
                train_sets[i], held_out = s.split_off(cfg.data.val_fraction)
                val_sets.append(held_out)
            elif isinstance(s, AudioFileExamples):
                if len(s) - max(1, int(len(s) * cfg.data.val_fraction)) < 1:
                    raise DataError(f"source {cfg.data.sources[i]} has {len(s)} example(s): too few to hold out "
                                    f"validation examples; give data.val_sources")
                train_sets[i], held_out = s.split_off(cfg.data.val_fraction)
                val_sets.append(held_out)
            else:
                n_val = max(1, int(len(s) * cfg.data.val_fraction))
                if len(s) - n_val < 1:
                    raise DataError(f"source {cfg.data.sources[i]} has {len(s)} example(s): too few to hold out "
                                    f"validation examples; give data.val_sources")
                val_sets.append(FileExamples(s.items[-n_val:], cfg.data.tasks))
                train_sets[i] = FileExamples(s.items[:-n_val], cfg.data.tasks)

    def texts() -> list[str]:
        out: list[str] = []
        for s in train_sets:
            if isinstance(s, SceneExamples):
                for sc in builtin_scenes.scenes("train", TOKENIZER_SCENES, seed=s.seed, size=s.size):
                    out += [sc.caption] + [f"question: {q.question} answer: {q.answer}" for q in sc.qas]
                out.append("caption:")
            else:
                out += s.texts()
        return out

    if env.is_main:  # synthesize (or find in the cache) the built-in speech once, before the other processes
        for s in train_sets + val_sets:
            if isinstance(s, SpeechExamples):
                s.load()
    distributed.barrier(env)

    if env.is_main:
        load_or_create_tokenizer(cfg, run_dir, texts)
    distributed.barrier(env)
    tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
    names = list(cfg.data.sources) if not cfg.data.val_sources else list(cfg.data.val_sources)
    return MultimodalData(cfg, tokenizer, Concat(train_sets, cfg.data.source_weights or None, cfg.data.sources),
                          Concat(val_sets, None, names if len(names) == len(val_sets) else None))


def prepare(cfg: Config, run_dir: Path, env: distributed.DistEnv) -> TrainingData:
    if cfg.classifier is not None:
        from .labeled_data import prepare_labeled

        return prepare_labeled(cfg, run_dir, env)
    if cfg.data.sources:
        return prepare_multimodal(cfg, run_dir, env)
    return prepare_text(cfg, run_dir, env)
