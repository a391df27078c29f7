"""Generated shape scenes: 1-3 coloured shapes on a 3x3 grid, a caption, and question/answer pairs whose
answers are computed from the objects. Every scene is a pure function of (seed, split, index).

The text is deliberately regular so that a small model learns captioning and VQA in minutes on a CPU.
Objects are named in raster order of their cells (top row left to right, then middle, then bottom):

    "a large red circle at the top left, a small blue square in the center and a small white star at the bottom"

Four colour-shape pairs (`HELD_OUT`) never appear, in pictures or in text, in the train/val/test splits;
every scene of the "compositional" split shows at least one of them.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np

from ...extras import optional

Image = optional("PIL.Image")
ImageDraw = optional("PIL.ImageDraw")

SHAPES = ("circle", "square", "triangle", "star")
# Far from each other and from the background (channels 40-110 plus noise), so a colour is never ambiguous.
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230),
          "yellow": (235, 210, 40), "purple": (150, 60, 190), "white": (245, 245, 245)}
SIZES = {"small": 0.5, "large": 0.85}  # diameter as a fraction of the cell side
CELLS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
HELD_OUT = (("red", "star"), ("blue", "triangle"), ("green", "circle"), ("yellow", "square"))
SPLITS = ("train", "val", "test", "compositional")
QA_TYPES = ("count", "color", "shape", "exist", "position")
MAX_OBJECTS = 3
JITTER = 1  # pixels, each axis
NOISE_SIGMA = 8.0
NOISE_BANK = 256  # side of the one noise texture that every background is a window of
GENERATOR_VERSION = 2  # bump when a scene for the same (seed, split, index) changes; names cache files

_INDEX_BITS = 40


class Obj(NamedTuple):
    size: str
    color: str
    shape: str
    cell: str


@dataclass
class QA:
    question: str
    answer: str
    type: str


@dataclass
class Scene:
    image: Image.Image  # RGB, size x size
    objects: list[Obj]  # in raster order of their cells
    caption: str
    qas: list[QA]


# --- text --------------------------------------------------------------------------------------------------

def cell_phrase(cell: str) -> str:
    return "in the center" if cell == "center" else f"at the {cell}"


def object_phrase(obj: Obj) -> str:
    return f"a {obj.size} {obj.color} {obj.shape} {cell_phrase(obj.cell)}"


def caption_of(objects: Sequence[Obj]) -> str:
    """'A', 'A and B' or 'A, B and C', objects in raster order of their cells."""
    phrases = [object_phrase(o) for o in sorted(objects, key=lambda o: CELLS.index(o.cell))]
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


_PHRASE_TO_OBJ = {object_phrase(o): o for o in (Obj(sz, c, sh, cell) for sz in SIZES for c in COLORS
                                                 for sh in SHAPES for cell in CELLS)}


def parse_caption(text: str) -> Optional[tuple[Obj, ...]]:
    """The objects a caption names, sorted (a multiset), or None when any part is not an object phrase.
    Case, spacing, a final period and the order of the phrases do not matter."""
    text = " ".join(text.lower().split()).removesuffix(".").strip()
    parts = [p.strip() for p in text.replace(" and ", ", ").split(",")]
    objects = [_PHRASE_TO_OBJ.get(p) for p in parts]
    if None in objects:
        return None
    return tuple(sorted(objects))


def caption_matches(prediction: str, reference: str) -> bool:
    """True when the prediction names exactly the reference's objects, in any order."""
    ref = parse_caption(reference)
    if ref is None:
        raise ValueError(f"reference caption is not in the scene grammar: {reference!r}")
    return parse_caption(prediction) == ref


def answer_matches(prediction: str, answer: str) -> bool:
    return " ".join(prediction.lower().split()).removesuffix(".").strip() == answer


# --- questions ---------------------------------------------------------------------------------------------

def questions(objects: Sequence[Obj], rng: random.Random, avoid: Sequence[tuple[str, str]] = HELD_OUT) -> list[QA]:
    """Question/answer pairs about the objects: three counts (objects, a shape, a colour), one existence
    question (yes/no with equal chance), one shape question, and a colour and a position question where an
    object is unique enough to be named. `avoid` lists colour-shape pairs that no question may mention."""
    qas = [QA("how many objects?", str(len(objects)), "count"),
           _count_question(objects, rng, "shape"),
           _count_question(objects, rng, "color")]
    unique_shapes = [s for s in SHAPES if sum(o.shape == s for o in objects) == 1]
    if unique_shapes:
        shape = rng.choice(unique_shapes)
        color = next(o.color for o in objects if o.shape == shape)
        qas.append(QA(f"what color is the {shape}?", color, "color"))
    obj = rng.choice(objects)
    qas.append(QA(f"what shape is {cell_phrase(obj.cell)}?", obj.shape, "shape"))
    qas.append(_exist_question(objects, rng, avoid))
    pairs = [(o.color, o.shape) for o in objects]
    unique_pairs = [p for p in pairs if pairs.count(p) == 1]
    if unique_pairs:
        color, shape = rng.choice(unique_pairs)
        cell = next(o.cell for o in objects if (o.color, o.shape) == (color, shape))
        qas.append(QA(f"where is the {color} {shape}?", cell, "position"))
    return qas


def _count_question(objects: Sequence[Obj], rng: random.Random, attribute: str) -> QA:
    # Pick the answer first, uniformly over the counts that occur (0 always does), then a value with that
    # count: counting "how many X" for an X drawn from the scene would make "1" the answer most of the time.
    values = SHAPES if attribute == "shape" else tuple(COLORS)
    counts = {v: sum(getattr(o, attribute) == v for o in objects) for v in values}
    answer = rng.choice(sorted(set(counts.values())))
    value = rng.choice([v for v in values if counts[v] == answer])
    noun = f"{value}s" if attribute == "shape" else f"{value} objects"
    return QA(f"how many {noun}?", str(answer), "count")


def _exist_question(objects: Sequence[Obj], rng: random.Random, avoid: Sequence[tuple[str, str]]) -> QA:
    present = sorted({(o.color, o.shape) for o in objects})
    if rng.random() < 0.5:
        (color, shape), answer = rng.choice(present), "yes"
    else:
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present and (c, s) not in avoid]
        (color, shape), answer = rng.choice(absent), "no"
    return QA(f"is there a {color} {shape}?", answer, "exist")


# --- pictures ----------------------------------------------------------------------------------------------

def cell_bounds(size: int) -> list[int]:
    """Pixel boundaries of the 3 columns (and rows): column i spans [b[i], b[i+1])."""
    return [round(i * size / 3) for i in range(4)]


def _draw_objects(rnd: random.Random, split: str, n: int) -> list[Obj]:
    cells = sorted(rnd.sample(range(len(CELLS)), n))
    forced = rnd.randrange(n) if split == "compositional" else -1
    objects = []
    for i, cell in enumerate(cells):
        size = rnd.choice(tuple(SIZES))
        if i == forced:
            color, shape = rnd.choice(HELD_OUT)
        else:
            color, shape = rnd.choice(tuple(COLORS)), rnd.choice(SHAPES)
            while split != "compositional" and (color, shape) in HELD_OUT:
                color, shape = rnd.choice(tuple(COLORS)), rnd.choice(SHAPES)
        objects.append(Obj(size, color, shape, CELLS[cell]))
    return objects


def background(rnd: random.Random, size: int) -> np.ndarray:
    """A dark-to-mid, low-saturation base colour (channels 40-110) plus per-pixel gaussian noise.
    Returns (size, size, 3) uint8.

    The noise is a window, at an offset drawn from rnd, of one texture drawn once (`_noise_bank`): a slice
    instead of size * size * 3 fresh normal draws, which took half of a 64-pixel scene's time."""
    base = rnd.randint(50, 100) + np.array([rnd.randint(-10, 10) for _ in range(3)], dtype=np.float32)
    bank = _noise_bank(max(NOISE_BANK, 2 * size))
    y, x = rnd.randrange(bank.shape[0] - size + 1), rnd.randrange(bank.shape[1] - size + 1)
    return np.clip(base + bank[y:y + size, x:x + size], 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _noise_bank(side: int) -> np.ndarray:
    """Gaussian noise of NOISE_SIGMA, (side, side, 3) float32, from a fixed seed; shared, never written to."""
    bank = np.random.default_rng(side).standard_normal((side, side, 3), dtype=np.float32) * NOISE_SIGMA
    bank.setflags(write=False)
    return bank


def _draw_shape(draw: ImageDraw.ImageDraw, obj: Obj, size: int, dx: int, dy: int) -> None:
    b = cell_bounds(size)
    row, col = divmod(CELLS.index(obj.cell), 3)
    d = round(SIZES[obj.size] * size / 3)
    x0 = round((b[col] + b[col + 1]) / 2 + dx - d / 2)
    y0 = round((b[row] + b[row + 1]) / 2 + dy - d / 2)
    x1, y1 = x0 + d - 1, y0 + d - 1
    fill = COLORS[obj.color]
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    else:  # a five-pointed star, one point up; a fat inner radius keeps small stars recognisable
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, d / 2
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        draw.polygon(list(zip((cx + radii * np.cos(angles)).tolist(), (cy + radii * np.sin(angles)).tolist())),
                     fill=fill)


def render(objects: Sequence[Obj], background: np.ndarray, offsets: Sequence[tuple[int, int]]) -> Image.Image:
    """The objects drawn in flat colour over the background (size, size, 3), each shifted by its (dx, dy) pixels."""
    image = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(image)
    for obj, (dx, dy) in zip(objects, offsets):
        _draw_shape(draw, obj, background.shape[0], dx, dy)
    return image


# --- scenes and splits -------------------------------------------------------------------------------------

def _check_split(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown scene split {split!r}; expected one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


def scene(seed: int, index: int, split: str = "train", size: int = 64, n_objects: Optional[int] = None) -> Scene:
    """Scene `index` of `split` for `seed`: the same arguments give a bit-identical image and the same text.
    Each split draws from its own random streams, so no scene repeats across splits."""
    split_id = _check_split(split)
    if seed < 0 or not 0 <= index < 2**_INDEX_BITS:
        raise ValueError(f"scene seed and index must be >= 0 (index < 2**{_INDEX_BITS}), "
                         f"got seed={seed}, index={index}")
    if size < 24:
        raise ValueError(f"scene size must be at least 24 pixels, got {size}")
    if n_objects is not None and not 1 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be 1..{MAX_OBJECTS}, got {n_objects}")
    rnd = random.Random(((seed * len(SPLITS) + split_id) << _INDEX_BITS) + index)
    n = n_objects if n_objects is not None else rnd.randint(1, MAX_OBJECTS)
    objects = _draw_objects(rnd, split, n)
    offsets = [(rnd.randint(-JITTER, JITTER), rnd.randint(-JITTER, JITTER)) for _ in objects]
    qas = questions(objects, rnd, avoid=() if split == "compositional" else HELD_OUT)
    image = render(objects, background(rnd, size), offsets)
    return Scene(image, objects, caption_of(objects), qas)


def scenes(split: str, count: int, seed: int = 0, size: int = 64, start: int = 0) -> list[Scene]:
    """Scenes start .. start+count-1 of a split."""
    return [scene(seed, i, split, size) for i in range(start, start + count)]
