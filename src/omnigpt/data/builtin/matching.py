"""The built-in three-modality classification task: a scene, a question that names a colour or a shape, and
a spoken number. The label is `match` when the scene holds that many objects of that colour (shape), else
`mismatch`; the two are equally likely.

Every scene holds three objects with the same count profile: one colour twice and another once, one shape
twice and another once (which colours and shapes, and how they pair up, is random). Every other colour and
shape is there zero times. These are the scenes of `builtin:scenes` with three objects, so encoders trained
to caption and answer questions about those carry over. The question asks about a colour (shape) whose count
is c, and the spoken number is n; n is drawn uniformly from 0-2 and c equals n for `match` and is one of the
other two for `mismatch`. Then:
- image + question gives c, uniform over 0-2 whatever the label;
- image + number: the image is drawn independently of n and of the label;
- question + number: which colour has count c is random, so the question's colour says nothing about c;
so no modality and no pair of them predicts the label better than chance, while all three decide it.

The spoken numbers are built-in utterances (`speech.utterance` saying "zero", "one" or "two"): training and
validation use the training voices, the test split the held-out voices. Samples are pure functions of
(seed, split, index); the spoken numbers are synthesized once per split and cached like built-in speech.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ...extras import optional
from . import speech
from .scenes import CELLS, COLORS, SHAPES, SIZES, SPLITS, Obj, background, render

Image = optional("PIL.Image")

LABELS = ("match", "mismatch")
COUNTS = (0, 1, 2)
NUMBER_WORDS = ("zero", "one", "two")  # spoken, in the order of COUNTS
COUNT_PROFILE = (1, 2, 2)  # attribute slots: one attribute once, another twice
QUESTIONS = {"color": ("how many {} objects?", "how many {} things are there?", "count the {} shapes"),
             "shape": ("how many {}s?", "how many {}s are there?", "count the {}s")}
JITTER = 1
_INDEX_BITS = 40
SPOKEN_PER_SPLIT = {"train": 600, "val": 150, "test": 300}  # cached number utterances, a third per number


@dataclass
class MatchSample:
    image: Optional[Image.Image]  # None when not drawn
    text: str  # the question
    number: int  # the spoken number, 0-2
    label: str  # "match" or "mismatch"
    attribute: str  # the colour or shape asked about
    count: int  # how many objects have it
    objects: list[Obj]


def _split_id(split: str) -> int:
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown matching split {split!r}; expected train, val or test")
    return SPLITS.index(split)


def scene_objects(rnd: random.Random) -> list[Obj]:
    """Three objects on three of the nine cells with the fixed count profile (see the module docstring)."""
    colors = rnd.sample(tuple(COLORS), 2)
    shapes = rnd.sample(SHAPES, 2)
    color_slots = [colors[k - 1] for k in COUNT_PROFILE]
    shape_slots = [shapes[k - 1] for k in COUNT_PROFILE]
    rnd.shuffle(color_slots)
    rnd.shuffle(shape_slots)
    cells = sorted(rnd.sample(range(len(CELLS)), len(COUNT_PROFILE)))
    return [Obj(rnd.choice(tuple(SIZES)), c, s, CELLS[cell]) for c, s, cell in zip(color_slots, shape_slots, cells)]


def sample(seed: int, index: int, split: str = "train", size: int = 64, draw: bool = True) -> MatchSample:
    """Sample `index` of `split`: the same arguments give a bit-identical image and the same texts.
    draw=False skips drawing the picture (the objects are still there)."""
    split_id = _split_id(split)
    if seed < 0 or not 0 <= index < 2**_INDEX_BITS:
        raise ValueError(f"seed and index must be >= 0 (index < 2**{_INDEX_BITS}), got seed={seed}, index={index}")
    rnd = random.Random(((seed * len(SPLITS) + split_id) << _INDEX_BITS) + index + (1 << 60))
    objects = scene_objects(rnd)
    kind = rnd.choice(("color", "shape"))
    number = rnd.choice(COUNTS)
    label = rnd.choice(LABELS)
    count = number if label == "match" else rnd.choice([c for c in COUNTS if c != number])
    values = [getattr(o, kind) for o in objects]
    attribute = rnd.choice([v for v in (tuple(COLORS) if kind == "color" else SHAPES) if values.count(v) == count])
    text = rnd.choice(QUESTIONS[kind]).format(attribute)
    offsets = [(rnd.randint(-JITTER, JITTER), rnd.randint(-JITTER, JITTER)) for _ in objects]
    image = (render(objects, background(rnd, size), offsets)
             if draw else None)
    return MatchSample(image, text, number, label, attribute, count, objects)


class SpokenNumbers:
    """Cached recordings of "zero", "one" and "two" in a split's voices; `clip(number, rnd)` picks one."""

    def __init__(self, split: str, seed: int = 0, cache_dir: Optional[str | Path] = None, count: Optional[int] = None):
        _split_id(split)
        count = count or SPOKEN_PER_SPLIT[split]
        count -= count % len(NUMBER_WORDS)
        if count < len(NUMBER_WORDS):
            raise ValueError(f"need at least {len(NUMBER_WORDS)} spoken numbers, got {count}")
        self.split = split
        self.set = speech.speech_dataset(split, count, seed, cache_dir, texts=NUMBER_WORDS)

    def clip(self, number: int, rnd: random.Random) -> np.ndarray:
        """A recording of `number` (0-2): float32 samples at 16 kHz."""
        per_number = len(self.set) // len(NUMBER_WORDS)
        return self.set.audio(len(NUMBER_WORDS) * rnd.randrange(per_number) + COUNTS.index(number))
