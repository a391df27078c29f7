"""What a multimodal classifier learns from: labeled examples of text, image and audio.

Sources (`data.sources`, `data.val_sources`): `builtin:matching` (the three-modality task of
`data.builtin.matching`) or JSONL / CSV manifests (`data.labeled`). Batches follow the trainer's contract (see
`train.datasets`): `train_batch(step, count, start, stop)` is a pure function of the seed and the step,
`val_batch(i, batch_size)` is fixed; modality dropout is drawn per row from the same seeded generator.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..atomic import write_atomic
from ..config import Config, ConfigError
from ..extras import optional
from ..data.builtin import matching
from ..data.audio import load_audio, log_mel
from ..data.batch import ClassBatch, LabeledExample, collate_labeled
from ..data.image import ImageTransform, preprocess
from ..data.labeled import LabeledRow, read_labeled_manifest
from ..data.text import DataError
from ..model.classifier import MODALITIES, template_ids
from ..tokenizer import Tokenizer
from . import distributed
from .datasets import cache_dir, load_or_create_tokenizer, mel_config, stratified_split

Image = optional("PIL.Image")

BUILTIN_MATCHING = "builtin:matching"
BUILTIN_VAL_MATCHING = 512


@dataclass
class RawLabeled:
    label: str
    text: Optional[str] = None
    image: Optional[Union[Image.Image, Path]] = None
    audio: Optional[Union[np.ndarray, Path]] = None


class MatchingExamples:
    """The built-in task, drawn on demand; the spoken numbers are synthesized once per split and cached."""

    def __init__(self, split: str, count: int, size: int, cache: Path, spoken_count: Optional[int] = None):
        self.split, self.count, self.size = split, count, size
        self.spoken = matching.SpokenNumbers(split, 0, cache, spoken_count)

    def __len__(self) -> int:
        return self.count

    def example(self, index: int) -> RawLabeled:
        s = matching.sample(0, index, self.split, self.size)
        return RawLabeled(s.label, s.text, s.image, self.spoken.clip(s.number, random.Random(index)))

    def labels(self) -> list[str]:
        return list(matching.LABELS)

    def texts(self) -> list[str]:
        return [matching.sample(0, i, "train", draw=False).text for i in range(2000)]


class RowExamples:
    """Rows of classification manifests."""

    def __init__(self, rows: Sequence[LabeledRow]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def example(self, index: int) -> RawLabeled:
        r = self.rows[index]
        return RawLabeled(r.label, r.text, r.image, r.audio)

    def labels(self) -> list[str]:
        return sorted({r.label for r in self.rows})

    def texts(self) -> list[str]:
        return [r.text for r in self.rows if r.text]

    def split_off(self, fraction: float) -> tuple["RowExamples", "RowExamples"]:
        """(train, validation), stratified by label (see `stratified_split`)."""
        rest, val = stratified_split([r.label for r in self.rows], fraction)
        return RowExamples([self.rows[i] for i in rest]), RowExamples([self.rows[i] for i in val])


Examples = Union[MatchingExamples, RowExamples]


def training_labels(cfg: Config) -> list[str]:
    """The classes a run of this config learns: classifier.labels, else every label of its training and
    validation sources (what training fills classifier.labels with)."""
    if cfg.classifier is not None and cfg.classifier.labels:
        return list(cfg.classifier.labels)
    sets = read_labeled_sources(cfg, cfg.data.sources, "train") + read_labeled_sources(cfg, cfg.data.val_sources, "val")
    return sorted({label for s in sets for label in s.labels()})


def read_labeled_sources(cfg: Config, specs: Sequence[str], split: str,
                         labels: Optional[Sequence[str]] = None) -> list[Examples]:
    sets: list[Examples] = []
    size = cfg.vision.image_size if cfg.vision else 64
    for spec in specs:
        if spec == BUILTIN_MATCHING:
            count = cfg.data.builtin_scenes if split == "train" else BUILTIN_VAL_MATCHING
            sets.append(MatchingExamples(split, count, max(24, size), cache_dir(cfg)))
        elif spec.startswith("builtin:"):
            raise ConfigError(f"unknown built-in source {spec!r} for a classifier: the built-in task is "
                              f"{BUILTIN_MATCHING!r}")
        elif spec.lower().endswith((".jsonl", ".csv")):
            sets.append(RowExamples(read_labeled_manifest(spec, cfg.data.on_bad_file, labels)))
        else:
            raise DataError(f"unknown classification source {spec!r}: give {BUILTIN_MATCHING}, or a .jsonl or .csv "
                            f"manifest of text/image/audio/label rows")
    return sets


class LabeledData:
    """Classification batches for the trainer (see the module docstring)."""

    def __init__(self, cfg: Config, tokenizer: Tokenizer, train: list[Examples], val: list[Examples]):
        self.cfg = cfg
        c = cfg.classifier
        self.tokenizer = tokenizer
        self.train_sets, self.val_sets = train, val
        self.modalities = [m for m in MODALITIES if m in c.modalities]
        self.index = {label: i for i, label in enumerate(c.labels)}
        self.transform = ImageTransform(cfg.vision.image_size, tuple(cfg.vision.mean), tuple(cfg.vision.std)) \
            if cfg.vision else None
        self.mel = mel_config(cfg.audio) if cfg.audio else None
        # Tokens of text kept: early fusion puts the template's words, the image's and the longest clip's
        # vectors in the same context.
        self.text_budget = cfg.model.block_size
        if c.fusion == "early":
            self.text_budget -= sum(map(len, template_ids(c, tokenizer))) + \
                (cfg.vision.tokens if cfg.vision and "image" in c.modalities else 0) + \
                (cfg.audio.tokens_for_frames(cfg.audio.max_frames) if cfg.audio and "audio" in c.modalities else 0)
            if self.text_budget < 1:
                raise ConfigError(f"early fusion: the template's words, an image and a clip of audio.max_seconds "
                                  f"leave no room for text in model.block_size {cfg.model.block_size}")
        self.class_weights = None
        if c.class_weights == "balanced":
            counts = Counter()
            for s in train:
                counts.update(_labels_of(s))
            n = sum(counts.values())
            self.class_weights = torch.tensor([n / (len(c.labels) * max(counts[label], 1)) for label in c.labels])

    def make_example(self, raw: RawLabeled, rng: Optional[random.Random]) -> LabeledExample:
        if raw.label not in self.index:
            raise DataError(f"label {raw.label!r} is not one of the classes {list(self.index)}")
        keep = {m: getattr(raw, m) is not None for m in self.modalities}
        drop = self.cfg.classifier.modality_dropout
        if rng is not None and drop > 0:
            for m in self.modalities:
                if keep[m] and sum(keep.values()) > 1 and rng.random() < drop:
                    keep[m] = False
        if not any(keep.values()):
            raise DataError(f"an example has none of the inputs this classifier reads ({', '.join(self.modalities)})")
        ex = LabeledExample(self.index[raw.label])
        if keep.get("text"):
            ex.text = self.tokenizer.encode(raw.text)[: self.text_budget] or [self.tokenizer.pad_id]
        if keep.get("image"):
            ex.image = preprocess(raw.image, self.transform)
        if keep.get("audio"):
            wave = raw.audio if isinstance(raw.audio, np.ndarray) else \
                load_audio(raw.audio, self.mel.sample_rate, max_seconds=self.cfg.audio.max_seconds)
            ex.audio = log_mel(torch.as_tensor(wave, dtype=torch.float32), self.mel)
        return ex

    def collate(self, examples: Sequence[LabeledExample]) -> ClassBatch:
        return collate_labeled(examples, self.modalities, self.tokenizer.pad_id,
                               self.cfg.vision.image_size if self.cfg.vision else None,
                               self.cfg.audio.n_mels if self.cfg.audio else None, self.class_weights)

    def _pick(self, sets: list[Examples], index: int) -> RawLabeled:
        for s in sets:
            if index < len(s):
                return s.example(index)
            index -= len(s)
        raise IndexError(index)

    def train_batch(self, step: int, count: int, start: int, stop: int) -> ClassBatch:
        total = sum(len(s) for s in self.train_sets)
        rows = []
        for r in range(start, stop):
            rng = random.Random(hash((self.cfg.train.seed, step, r)))
            rows.append(self.make_example(self._pick(self.train_sets, rng.randrange(total)), rng))
        return self.collate(rows)

    def val_batch(self, i: int, batch_size: int) -> ClassBatch:
        total = sum(len(s) for s in self.val_sets)
        rows = [self.make_example(self._pick(self.val_sets, (i * batch_size + r) % total), None)
                for r in range(batch_size)]
        return self.collate(rows)


def _labels_of(s: Examples) -> list[str]:
    if isinstance(s, RowExamples):
        return [r.label for r in s.rows]
    return [matching.sample(0, i, s.split, draw=False).label for i in range(min(len(s), 2000))]


def prepare_labeled(cfg: Config, run_dir: Path, env: distributed.DistEnv) -> LabeledData:
    """Read the sources, fix the classes (written back into the run's config.yaml), hold out validation
    examples, and set up the tokenizer."""
    c = cfg.classifier
    train = read_labeled_sources(cfg, cfg.data.sources, "train")
    if cfg.data.val_sources:
        val = read_labeled_sources(cfg, cfg.data.val_sources, "val")
    else:
        val = []
        for i, s in enumerate(train):
            if isinstance(s, MatchingExamples):
                val.append(MatchingExamples("val", BUILTIN_VAL_MATCHING, s.size, cache_dir(cfg)))
            else:
                train[i], held_out = s.split_off(cfg.data.val_fraction)
                val.append(held_out)
    found = sorted({label for s in train + val for label in s.labels()})
    if not c.labels:
        c.labels = found
        if env.is_main:
            write_atomic(run_dir / "config.yaml", cfg.to_yaml())
    unknown = sorted(set(found) - set(c.labels))
    if unknown:
        raise DataError(f"the data has labels {unknown} that classifier.labels {c.labels} does not list")
    if len(c.labels) < 2:
        raise DataError(f"a classifier needs at least two classes; the training data has {c.labels}")

    def texts() -> list[str]:
        return [t for s in train for t in s.texts()] or ["-"]

    if env.is_main:
        load_or_create_tokenizer(cfg, run_dir, texts)
    distributed.barrier(env)
    return LabeledData(cfg, Tokenizer.load(run_dir / "tokenizer.json"), train, val)
