"""Image pipeline throughput: omnigpt's preprocess against transformers' CLIPImageProcessor, images per second.

Test data: --images synthetic photos written to a temporary folder, sizes from 320x240 to 800x600 (both
orientations), half JPEG (quality 90) and half PNG; each is a smooth colour gradient with a few soft
shapes and sensor-like noise, so JPEG and PNG compress as they do on real photos.

Work per image, the same for every variant: decode the file, resize to 224 (shorter side) + centre crop
224x224, scale to 0..1 and normalize with CLIP's mean/std, giving a float32 (3, 224, 224) tensor.

- ours:  `preprocess(path, ImageTransform(224, CLIP mean/std, resize="crop"))` (Pillow bicubic; JPEGs are
         decoded at a reduced DCT scale where the output size allows)
- clip:  `Image.open(path).convert("RGB")` then `CLIPImageProcessor()(images=..., return_tensors="pt")`
         (default-constructed: shortest edge 224, bicubic, centre crop 224; without torchvision
         transformers falls back to its Pillow/numpy backend)

Each variant runs through a torch DataLoader (batch 16, default collate) with num_workers 0 (the main
process does the work: "_1") and 2 (two spawned worker processes: "_2"). One untimed pass warms each
loader up (worker start-up, imports, file cache); the median of --passes timed passes gives images/s.

Prints one JSON line on stdout at the end; progress goes to stderr.

    python bench/image_pipeline.py                      # full run (about a minute on 2 cores)
    python bench/image_pipeline.py --images 40 --passes 1   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIZE = 224


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--passes", type=int, default=3, help="timed passes over all images per variant")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="worker processes for the '_2' variants")
    p.add_argument("--threads", type=int, default=2, help="torch threads in the main process")
    p.add_argument("--no-clip", action="store_true", help="skip transformers' CLIPImageProcessor")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def synthetic_photo(rs: np.random.RandomState, w: int, h: int) -> Image.Image:
    """A smooth two-corner gradient, a few blurred ellipses, and Gaussian noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1, c2 = rs.uniform(0, 255, (3, 3)).astype(np.float32)
    u, v = xx / w, yy / h
    base = c0 * (1 - u)[..., None] + c1 * u[..., None]
    base = base * (1 - v)[..., None] * 0.7 + c2 * v[..., None] * 0.3 + base * v[..., None] * 0.3
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rs.randint(2, 6)):
        x0, y0 = rs.randint(0, w - 20), rs.randint(0, h - 20)
        x1, y1 = x0 + rs.randint(10, w // 2), y0 + rs.randint(10, h // 2)
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in rs.randint(0, 256, 3)))
    img = img.filter(ImageFilter.GaussianBlur(2))
    noisy = np.asarray(img).astype(np.float32) + rs.normal(0, 6, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_images(folder: Path, n: int, seed: int) -> list[str]:
    rs = np.random.RandomState(seed)
    sizes = [(320, 240), (400, 300), (480, 360), (512, 384), (640, 480), (800, 600)]
    paths = []
    for i in range(n):
        w, h = sizes[rs.randint(len(sizes))]
        if rs.rand() < 0.3:
            w, h = h, w  # portrait
        img = synthetic_photo(rs, w, h)
        if i % 2 == 0:
            path = folder / f"img{i:04d}.jpg"
            img.save(path, quality=90)
        else:
            path = folder / f"img{i:04d}.png"
            img.save(path)
        paths.append(str(path))
    return paths


class OursDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[str]):
        from omnigpt.data.image import ImageTransform

        self.paths = paths
        self.transform = ImageTransform(size=SIZE, mean=CLIP_MEAN, std=CLIP_STD, resize="crop")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from omnigpt.data.image import preprocess

        return preprocess(self.paths[i], self.transform)


class ClipDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[str]):
        self.paths = paths
        self.processor = None  # built in the process that uses it (cheap, and avoids pickling it)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.processor is None:
            from transformers import CLIPImageProcessor
            from transformers.utils import logging

            logging.set_verbosity_error()  # the "falls back to the Pillow backend" notice, once per process
            self.processor = CLIPImageProcessor()
        with Image.open(self.paths[i]) as img:
            rgb = img.convert("RGB")
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"][0]


def loader(dataset: torch.utils.data.Dataset, workers: int, batch: int) -> torch.utils.data.DataLoader:
    kw = {}
    if workers > 0:
        # Spawned workers: forking after torch has started its thread pools can hang.
        kw = dict(multiprocessing_context="spawn", persistent_workers=True)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers, **kw)


def time_loader(name: str, dl: torch.utils.data.DataLoader, n: int, passes: int) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    first = None
    for x in dl:  # warm-up pass: worker start-up, imports, page cache
        first = x if first is None else first
    log(f"{name}: warm-up pass {time.perf_counter() - t0:.2f}s")
    times = []
    for p in range(passes):
        t0 = time.perf_counter()
        count = sum(x.shape[0] for x in dl)
        dt = time.perf_counter() - t0
        assert count == n
        times.append(dt)
        log(f"{name}: pass {p + 1}/{passes} {dt:.2f}s = {n / dt:.1f} images/s")
    return n / statistics.median(times), first


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="omnigpt-image-bench-") as tmp:
        t0 = time.perf_counter()
        paths = write_images(Path(tmp), args.images, args.seed)
        n_bytes = sum(os.path.getsize(p) for p in paths)
        log(f"wrote {len(paths)} images ({n_bytes / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f}s")

        variants = {"ours_1": (OursDataset, 0), f"ours_{args.workers}": (OursDataset, args.workers)}
        if not args.no_clip:
            variants.update({"clip_1": (ClipDataset, 0), f"clip_{args.workers}": (ClipDataset, args.workers)})
        ips, first = {}, {}
        for name, (cls, workers) in variants.items():
            dl = loader(cls(paths), workers, args.batch)
            ips[name], first[name] = time_loader(name, dl, len(paths), args.passes)
            del dl  # shuts persistent workers down before the next variant starts its own

    out = {"benchmark": "image_pipeline", "images": len(paths)}
    out.update({k: round(v, 1) for k, v in ips.items()})
    if "clip_1" in ips:
        out["ratio"] = round(ips["ours_1"] / ips["clip_1"], 3)
        out[f"ratio_{args.workers}"] = round(ips[f"ours_{args.workers}"] / ips[f"clip_{args.workers}"], 3)
        # Same maths on the same files: the outputs should agree up to resampling details.
        out["mean_abs_diff_vs_clip"] = round(float((first["ours_1"] - first["clip_1"]).abs().mean()), 4)
    out.update({
        "passes": args.passes,
        "batch": args.batch,
        "size": SIZE,
        "megabytes_on_disk": round(n_bytes / 2**20, 1),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "pillow": Image.__version__,
    })
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
