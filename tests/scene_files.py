"""Built-in scenes written as files (PNG images and a JSONL manifest) and read back: what tests of the file
readers, fine-tuning from a manifest and the commands train on."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from omnigpt.atomic import write_atomic
from omnigpt.data.builtin.scenes import QA, Obj, Scene, _check_split, scene


def write_scene_dataset(out_dir: str | Path, split: str, count: int, seed: int = 0, size: int = 64) -> Path:
    """Write out_dir/images/<split>/NNNNNN.png and the manifest out_dir/<split>.jsonl, one line a scene:
    {"image": path relative to the manifest, "text": caption, "objects": [...], "qas": [...]}.
    The manifest is written last, to a temporary name then renamed: when it exists, it is complete."""
    _check_split(split)
    out = Path(out_dir)
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        s = scene(seed, i, split, size)
        rel = f"images/{split}/{i:06d}.png"
        s.image.save(out / rel)
        lines.append(json.dumps({"image": rel, "text": s.caption, "objects": [o._asdict() for o in s.objects],
                                 "qas": [asdict(q) for q in s.qas]}))
    return write_atomic(out / f"{split}.jsonl", "".join(line + "\n" for line in lines))


def load_scene_manifest(path: str | Path) -> list[Scene]:
    """Scenes back from a manifest written by `write_scene_dataset`."""
    path = Path(path)
    result = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            objects = [Obj(**o) for o in rec["objects"]]
            qas = [QA(**q) for q in rec["qas"]]
            image_path = path.parent / rec["image"]
            caption = rec["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{lineno}: not a scene record ({exc!r})") from None
        with Image.open(image_path) as im:
            image = im.convert("RGB")
        result.append(Scene(image, objects, caption, qas))
    return result
