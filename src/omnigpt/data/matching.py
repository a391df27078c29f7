"""The built-in three-modality classification task: a scene, a question that names a colour or a shape, and
a spoken number. The label is `match` when the scene holds that many objects of that colour (shape), else
`mismatch`; the two are equally likely.

Every scene holds six objects with the same count profile: three colours present once, twice and three
times, and three shapes present once, twice and three times (which colours and shapes, and how they pair up,
is random). A picture alone therefore says nothing about any count's answer. The question asks about the
colour (shape) whose count is c, and the spoken number is n; n is drawn uniformly from 1-3 and c equals n
for `match` and is one of the other two for `mismatch`. Then:
- image + question gives c, uniform over 1-3 whatever the label;
- image + number: the image is drawn independently of n and of the label;
- question + number: which colour has count c is random, so the question's colour says nothing about c;
so no modality and no pair of them predicts the label better than chance, while all three decide it.

The spoken numbers are built-in utterances (`speech.utterance` saying "one", "two" or "three"): training and
validation use the training voices, the test split the held-out voices. Samples are pure functions of
(seed, split, index); the spoken numbers are synthesized once per split and cached like built-in speech.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from . import speech
from .builtin import CELLS, COLORS, SHAPES, SIZES, SPLITS, Obj, background, render

LABELS = ("match", "mismatch")
NUMBER_WORDS = ("one", "two", "three")  # spoken; counts 1-3
COUNT_PROFILE = (1, 2, 2, 3, 3, 3)  # attribute slots: one attribute once, one twice, one three times
QUESTIONS = {"color": ("how many {} objects?", "how many {} things are there?", "count the {} shapes"),
             "shape": ("how many {}s?", "how many {}s are there?", "count the {}s")}
JITTER = 1
_INDEX_BITS = 40
SPOKEN_PER_SPLIT = {"train": 600, "val": 150, "test": 300}  # cached number utterances, a third per number


@dataclass
class MatchSample:
    image: Optional[Image.Image]  # None when not drawn
    text: str  # the question
    number: int  # the spoken number, 1-3
    label: str  # "match" or "mismatch"
    attribute: str  # the colour or shape asked about
    count: int  # how many objects have it
    objects: list[Obj]


def _split_id(split: str) -> int:
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown matching split {split!r}; expected train, val or test")
    return SPLITS.index(split)


def scene_objects(rnd: random.Random) -> list[Obj]:
    """Six objects on six of the nine cells with the fixed count profile (see the module docstring)."""
    colors = rnd.sample(tuple(COLORS), 3)
    shapes = rnd.sample(SHAPES, 3)
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
    number = rnd.randint(1, 3)
    label = rnd.choice(LABELS)
    count = number if label == "match" else rnd.choice([c for c in (1, 2, 3) if c != number])
    values = [getattr(o, kind) for o in objects]
    attribute = next(v for v in values if values.count(v) == count)
    text = rnd.choice(QUESTIONS[kind]).format(attribute)
    offsets = [(rnd.randint(-JITTER, JITTER), rnd.randint(-JITTER, JITTER)) for _ in objects]
    image = (render(objects, background(np.random.default_rng([seed, split_id, index, 7]), size), offsets)
             if draw else None)
    return MatchSample(image, text, number, label, attribute, count, objects)


class SpokenNumbers:
    """Cached recordings of "one", "two" and "three" in a split's voices; `clip(number, rnd)` picks one."""

    def __init__(self, split: str, seed: int = 0, cache_dir: Optional[str | Path] = None, count: Optional[int] = None):
        _split_id(split)
        count = count or SPOKEN_PER_SPLIT[split]
        count -= count % len(NUMBER_WORDS)
        if count < len(NUMBER_WORDS):
            raise ValueError(f"need at least {len(NUMBER_WORDS)} spoken numbers, got {count}")
        self.split = split
        self.set = speech.speech_dataset(split, count, seed, cache_dir, texts=NUMBER_WORDS)

    def clip(self, number: int, rnd: random.Random) -> np.ndarray:
        """A recording of `number` (1-3): float32 samples at 16 kHz."""
        per_number = len(self.set) // len(NUMBER_WORDS)
        return self.set.audio(len(NUMBER_WORDS) * rnd.randrange(per_number) + number - 1)
